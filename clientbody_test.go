package fwdproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequestBody: a malformed chunked request body is the
// client's fault: 400, counted as malformed and not as an upstream error,
// from every front end that takes bodies (Serve hands them to its
// http.Server, a user's http.Server, interception) and on both upstream
// paths that carry them (http.Transport over HTTP/1.1 and HTTP/2; the own
// client takes bodyless requests only). A well-formed body passes.
func TestMalformedRequestBody(t *testing.T) {
	handler := func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		_, _ = io.WriteString(w, "got "+string(b))
	}
	o := origin(t, handler)
	tlsO, roots := tlsOrigin(t, handler)
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(roots))
	mounted := httptest.NewServer(tp.Proxy)
	t.Cleanup(mounted.Close)
	host, tlsHost := o.Listener.Addr().String(), tlsO.Listener.Addr().String()

	// send writes head+body on c from another goroutine (the proxy may stop
	// reading a bad body) and returns the response's status and body.
	send := func(t *testing.T, c net.Conn, br *bufio.Reader, head, body string) (int, string) {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.WriteString(c, head+"Transfer-Encoding: chunked\r\n\r\n"+body)
		}()
		defer func() { c.Close(); <-done }()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	dial := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	post := func(scheme, h string) string {
		return "POST " + scheme + "://" + h + "/p HTTP/1.1\r\nHost: " + h + "\r\n"
	}
	routes := []struct {
		name string
		send func(t *testing.T, body string) (int, string)
	}{
		{"Serve/HTTP1 upstream", func(t *testing.T, body string) (int, string) {
			c, br := dial(t, tp.Addr)
			return send(t, c, br, post("http", host), body)
		}},
		{"Serve/HTTP2 upstream", func(t *testing.T, body string) (int, string) {
			c, br := dial(t, tp.Addr)
			return send(t, c, br, post("https", tlsHost), body)
		}},
		{"mounted http.Server", func(t *testing.T, body string) (int, string) {
			c, br := dial(t, mounted.Listener.Addr().String())
			return send(t, c, br, post("http", host), body)
		}},
		{"intercepted", func(t *testing.T, body string) (int, string) {
			tc, br := connectTLS(t, tp, tlsHost, "127.0.0.1", caPool, "http/1.1")
			return send(t, tc, br, "POST /p HTTP/1.1\r\nHost: "+tlsHost+"\r\n", body)
		}},
	}
	bodies := []struct{ name, body string }{
		{"size zz", "zz\r\nhello\r\n0\r\n\r\n"},
		{"20-digit size", "99999999999999999999\r\nhello\r\n0\r\n\r\n"},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"100 KB extension", "5;" + strings.Repeat("e", 100<<10) + "\r\nhello\r\n0\r\n\r\n"},
	}
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			if status, b := rt.send(t, "5\r\nhello\r\n0\r\n\r\n"); status != 200 || b != "got hello" {
				t.Fatalf("well-formed body: %d %q", status, b)
			}
			for _, bc := range bodies {
				before := tp.Stats().Errors
				status, b := rt.send(t, bc.body)
				if status != http.StatusBadRequest || !strings.Contains(b, "request body") {
					t.Errorf("%s: %d %q, want 400 blaming the request body", bc.name, status, b)
				}
				after := tp.Stats().Errors
				if after.Malformed != before.Malformed+1 || after.Upstream != before.Upstream {
					t.Errorf("%s: malformed %d -> %d, upstream %d -> %d; want one more malformed and no upstream error",
						bc.name, before.Malformed, after.Malformed, before.Upstream, after.Upstream)
				}
			}
		})
	}
}
