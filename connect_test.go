package fwdproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConnectTLSWithHTTP2 runs HTTPS with HTTP/2 inside a CONNECT tunnel.
func TestConnectTLSWithHTTP2(t *testing.T) {
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto %s", r.Proto)
	}))
	o.EnableHTTP2 = true
	o.StartTLS()
	t.Cleanup(o.Close)
	tp := startProxy(t)
	c := tp.client(t, o.Client().Transport.(*http.Transport).TLSClientConfig)
	for i := 0; i < 3; i++ {
		resp, body := mustGet(t, c, o.URL)
		if resp.ProtoMajor != 2 || body != "proto HTTP/2.0" {
			t.Fatalf("got %s %q, want HTTP/2 end to end", resp.Proto, body)
		}
	}
}

func TestConnectEarlyBytesAndEcho(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	c, br := tp.connect(t, addr, "early bytes|")
	mustWrite(t, c, "later bytes")
	want := "early bytes|later bytes"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("echo = %q, %v; want %q", got, err, want)
	}
}

// TestConnectHalfClose: the client's FIN reaches the origin, which can
// still answer afterwards.
func TestConnectHalfClose(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d bytes", n)
	})
	tp := startProxy(t)
	c, br := tp.connect(t, addr, "")
	mustWrite(t, c, strings.Repeat("x", 100000))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(br)
	if err != nil || string(b) != "got 100000 bytes" {
		t.Fatalf("after half-close: %q, %v", b, err)
	}
}

func TestConnectIdleTimeout(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	const idle = 300 * time.Millisecond
	tp := startProxy(t, WithTunnelIdleTimeout(idle))
	c, br := tp.connect(t, addr, "")
	// Active for three idle periods: the tunnel must stay open.
	buf := make([]byte, 4)
	var last time.Time
	for end := time.Now().Add(3 * idle); time.Now().Before(end); {
		time.Sleep(idle / 3)
		mustWrite(t, c, "ping")
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("active tunnel closed: %v", err)
		}
		last = time.Now()
	}
	// Then silent: closed after roughly the idle timeout.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data from an idle tunnel")
	} else if errors.Is(err, net.ErrClosed) || isTimeout(err) {
		t.Fatalf("idle tunnel was not closed by the proxy: %v", err)
	}
	if d := time.Since(last); d < idle {
		t.Errorf("closed after %v, before the idle timeout %v", d, idle)
	}
}

func TestConnectTargets(t *testing.T) {
	v4 := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	t.Run("ipv6 literal", func(t *testing.T) {
		v6 := tcpOrigin(t, "tcp6", "[::1]:0", echo)
		c, br := tp.connect(t, v6, "v6")
		b := make([]byte, 2)
		if _, err := io.ReadFull(br, b); err != nil || string(b) != "v6" {
			t.Fatalf("IPv6 tunnel echo %q %v", b, err)
		}
		c.Close()
	})
	_, port, _ := net.SplitHostPort(v4)
	for _, target := range []string{
		"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http",
		"::1:" + port, "[::1]", "[127.0.0.1]:" + port, "bad host:" + port, "a..b:" + port,
	} {
		t.Run("malformed "+target, func(t *testing.T) {
			c, br := tp.rawConn(t)
			mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 400 {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
		})
	}
	t.Run("refused is 502", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		c, br := tp.rawConn(t)
		mustWrite(t, c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 502 {
			t.Fatalf("got %v %v, want 502", resp, err)
		}
	})
}

func TestConnectHook(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	var seen string
	tp := startProxy(t, WithConnectHook(func(ctx context.Context, target string, r *http.Request) error {
		seen = target
		if r.Header.Get("X-Allow") != "yes" {
			return Deny(http.StatusForbidden, "tunnel refused by hook")
		}
		return nil
	}))
	c, br := tp.rawConn(t)
	mustWrite(t, c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(b), "refused by hook") || seen != addr {
		t.Errorf("got %d %q (hook saw %q)", resp.StatusCode, b, seen)
	}
	c2, _ := tp.rawConn(t)
	mustWrite(t, c2, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\nX-Allow: yes\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("allowed CONNECT: %v %v", resp, err)
	}
}

// TestConnectOverHTTP2: a CONNECT on an HTTP/2 stream (RFC 9113 §8.5) when
// the Proxy is mounted on a TLS server with HTTP/2.
func TestConnectOverHTTP2(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = p.Shutdown(context.Background())
	})
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	u, _ := url.Parse(srv.URL)
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: u.Host}, Host: addr, Header: http.Header{}, Body: pr}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("CONNECT over h2: %s %d", resp.Proto, resp.StatusCode)
	}
	for _, msg := range []string{"over", "h2 stream"} {
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != msg {
			t.Fatalf("echo %q %v", b, err)
		}
	}
	pw.Close()
	resp.Body.Close()
}

// TestShutdown: in-flight requests finish, open tunnels are closed at the
// deadline, Serve returns ErrServerClosed, nothing leaks (goleak).
func TestShutdown(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	slow := origin(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "finished")
	})
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	tp := &testProxy{Proxy: p, URL: &url.URL{Scheme: "http", Host: l.Addr().String()}, Addr: l.Addr().String()}

	var tunnels []*bufio.Reader
	for i := 0; i < 3; i++ {
		_, br := tp.connect(t, addr, "")
		tunnels = append(tunnels, br)
	}
	inflight := make(chan string, 1)
	go func() {
		resp, err := tp.client(t, nil).Get(slow.URL)
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- string(b)
	}()
	time.Sleep(100 * time.Millisecond) // the request is in flight

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with open tunnels = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if got := <-inflight; got != "finished" {
		t.Errorf("in-flight request: %q", got)
	}
	for i, br := range tunnels {
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("tunnel %d still open after Shutdown", i)
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	if err := p.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

func TestShutdownWaitsForTunnelsToEnd(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	c, _ := tp.connect(t, addr, "")
	go func() {
		time.Sleep(200 * time.Millisecond)
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil once the tunnel ended by itself", err)
	}
	// A new tunnel is refused while shutting down.
	rec := httptest.NewRecorder()
	tp.ServeHTTP(rec, httptest.NewRequest("CONNECT", addr, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("CONNECT during shutdown: %d, want 503", rec.Code)
	}
}
