package fwdproxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests of WithBodyIdleTimeout (bodyidle.go), through real sockets: a real
// origin that stalls mid-body, clients that stall their upload, and bodies
// that trickle slowly but never stop, on every front end (Serve's loop,
// the hand-off http.Server, a server of the user's) and both upstream
// clients (the own HTTP/1.1 client, http.Transport).

// bodyIdle is short, so that stalls show quickly; the answers must come
// within promptly, which the default 10 s header timeout and 60 s body
// idle timeout are far beyond.
const bodyIdle = 200 * time.Millisecond

// frontEnd runs a Proxy with opts and returns the address clients use.
type frontEnd struct {
	name  string
	start func(t *testing.T, opts ...Option) (addr string)
}

var frontEnds = []frontEnd{
	{"Serve", func(t *testing.T, opts ...Option) string { return startProxy(t, opts...).Addr }},
	{"mounted on the user's http.Server", mountProxy},
}

// mountProxy serves a Proxy as the handler of an http.Server of the test's.
func mountProxy(t *testing.T, opts ...Option) string {
	t.Helper()
	p, err := New(append([]Option{WithLogger(testLogger(t)), WithAllowPrivate()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(p)
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s.Listener.Addr().String()
}

func dialProxy(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// stallingOrigin sends a response header and the first 10 bytes of a body
// of 1000 (framed by Content-Length, or chunked at /chunked), then stalls
// until the proxy gives up on it; it answers plain and TLS requests.
func stallingOrigin(t *testing.T) (plain, tlsURL string, roots *x509.CertPool) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/chunked" {
			w.Header().Set("Content-Length", "1000")
		}
		_, _ = io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done(): // the proxy cut the upstream connection
		case <-time.After(20 * time.Second):
		}
	})
	o := origin(t, h)
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	roots = x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return o.URL, ts.URL, roots
}

// TestBodyIdleUpstreamStalls: an upstream that stalls mid-body has the
// client connection cut once no byte has moved for the body idle timeout
// (the client sees a truncated body), with a log line naming the upstream,
// on every front end and through both upstream clients.
func TestBodyIdleUpstreamStalls(t *testing.T) {
	plain, tlsURL, roots := stallingOrigin(t)
	cases := []struct {
		name, req string
	}{
		{"own client, Content-Length body", "GET " + plain + "/cl HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"own client, chunked body", "GET " + plain + "/chunked HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"http.Transport (https upstream)", "GET " + tlsURL + "/cl HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"http.Transport (request with a body)", "POST " + plain + "/cl HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"},
	}
	for _, fe := range frontEnds {
		for _, tc := range cases {
			t.Run(fe.name+"/"+tc.name, func(t *testing.T) {
				var logs logCapture
				addr := fe.start(t, WithBodyIdleTimeout(bodyIdle), WithUpstreamRootCAs(roots), WithLogger(logs.logger()))
				c, br := dialProxy(t, addr)
				mustWrite(t, c, tc.req)
				start := time.Now()
				_ = c.SetReadDeadline(start.Add(promptly))
				// The cut comes after the header and the first bytes, or
				// before them when the server still held them in its
				// buffer (net/http's ResponseWriter buffers 4 KiB).
				resp, err := http.ReadResponse(br, nil)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != "0123456789" {
						t.Fatalf("%d %q; want 200 and the first 10 bytes", resp.StatusCode, body)
					}
				}
				if err == nil || isTimeout(err) {
					t.Fatalf("after %v: %v; want the connection cut", time.Since(start), err)
				}
				logs.wantLogged(t, "upstream body stalled mid-stream", "body stalled: no byte moved for 200ms", "target=127.0.0.1:")
			})
		}
	}
}

// TestBodyIdleClientStalls: a client that announces a request body and
// stops sending it gets 408 at the body idle timeout and its connection is
// closed, on the hand-off server and on a server of the user's; if the
// upstream has already answered, the response is cut instead.
func TestBodyIdleClientStalls(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			// Answers before it reads the body.
			_ = http.NewResponseController(w).EnableFullDuplex()
			_, _ = io.WriteString(w, "early")
			w.(http.Flusher).Flush()
		}
		n, err := io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/early" && err == nil {
			_, _ = fmt.Fprintf(w, "read %d", n)
		}
	})
	for _, fe := range frontEnds {
		for _, tc := range []struct {
			name, head, sent string
		}{
			{"nothing sent", "Content-Length: 1000", ""},
			{"three bytes sent", "Content-Length: 1000", "abc"},
			{"chunked, one chunk sent", "Transfer-Encoding: chunked", "3\r\nabc\r\n"},
		} {
			t.Run(fe.name+"/"+tc.name, func(t *testing.T) {
				var logs logCapture
				addr := fe.start(t, WithBodyIdleTimeout(bodyIdle), WithLogger(logs.logger()))
				c, br := dialProxy(t, addr)
				mustWrite(t, c, "POST "+o.URL+"/up HTTP/1.1\r\nHost: x\r\n"+tc.head+"\r\n\r\n"+tc.sent)
				start := time.Now()
				_ = c.SetReadDeadline(start.Add(promptly))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("after %v: %v", time.Since(start), err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestTimeout || !resp.Close || !strings.Contains(string(body), "request body stalled") {
					t.Fatalf("%d close=%v %q; want 408, Connection: close and the reason", resp.StatusCode, resp.Close, body)
				}
				wantClosed(t, c, br)
				logs.wantLogged(t, "status=408", "no byte from the client for 200ms")
			})
		}
		t.Run(fe.name+"/response already begun", func(t *testing.T) {
			addr := fe.start(t, WithBodyIdleTimeout(bodyIdle))
			c, br := dialProxy(t, addr)
			mustWrite(t, c, "POST "+o.URL+"/early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
			_ = c.SetReadDeadline(time.Now().Add(promptly))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != "early" || err == nil || isTimeout(err) {
				t.Fatalf("%d %q %v; want 200, the early bytes, and the connection cut", resp.StatusCode, body, err)
			}
		})
	}
}

// TestBodyIdleSlowButMoving: bodies that trickle a byte every 100 ms for
// three seconds, far longer than the idle timeout of one second but never
// idle for it, are relayed whole both ways; so is a large upload to an
// upstream that takes it only after twice the idle timeout (the client is
// not blamed for the upstream's wait).
func TestBodyIdleSlowButMoving(t *testing.T) {
	const idle = time.Second
	const n = 30
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trickle":
			w.Header().Set("Content-Length", strconv.Itoa(n))
			for range n {
				_, _ = io.WriteString(w, "x")
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		case "/late-reader":
			time.Sleep(2 * idle)
			fallthrough
		default:
			m, err := io.Copy(io.Discard, r.Body)
			_, _ = fmt.Fprintf(w, "read %d %v", m, err)
		}
	})
	for _, fe := range frontEnds {
		addr := fe.start(t, WithBodyIdleTimeout(idle))
		t.Run(fe.name+"/download", func(t *testing.T) {
			t.Parallel()
			c, br := dialProxy(t, addr)
			mustWrite(t, c, "GET "+o.URL+"/trickle HTTP/1.1\r\nHost: x\r\n\r\n")
			if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != strings.Repeat("x", n) {
				t.Fatalf("%d %q", r.status, r.body)
			}
		})
		t.Run(fe.name+"/upload", func(t *testing.T) {
			t.Parallel()
			c, br := dialProxy(t, addr)
			mustWrite(t, c, "POST "+o.URL+"/up HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
			for range n {
				mustWrite(t, c, "x")
				time.Sleep(100 * time.Millisecond)
			}
			if r := readWire(t, br, "POST"); r.status != 200 || string(r.body) != fmt.Sprintf("read %d <nil>", n) {
				t.Fatalf("%d %q", r.status, r.body)
			}
		})
		t.Run(fe.name+"/upstream takes the upload late", func(t *testing.T) {
			t.Parallel()
			const size = 16 << 20 // more than the socket buffers hold
			c, br := dialProxy(t, addr)
			go func() {
				_, _ = io.WriteString(c, "POST "+o.URL+"/late-reader HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
				_, _ = c.Write(make([]byte, size))
			}()
			if r := readWire(t, br, "POST"); r.status != 200 || string(r.body) != fmt.Sprintf("read %d <nil>", size) {
				t.Fatalf("%d %q", r.status, r.body)
			}
		})
	}
}
