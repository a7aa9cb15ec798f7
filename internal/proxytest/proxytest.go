// Package proxytest is the test plumbing that the library's own tests and the
// test-only modules beside it (internal/oteltest) share: origins on
// 127.0.0.1, a proxy served on a loopback listener, HTTP/1.1 written by hand,
// log buffers, allocation and CPU measurements.
//
// It imports "testing" and is imported by tests only. It never imports the
// root package, whose own tests use it (that would be an import cycle), so
// what it serves or measures is given as an interface or an http.Handler.
package proxytest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Server is what Serve runs: a *fwdproxy.Proxy.
type Server interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
}

// Serve serves s on a listener on 127.0.0.1 and returns its address. When
// the test ends it shuts s down (with a 5 s deadline) and checks that
// Shutdown succeeded and that Serve returned http.ErrServerClosed.
func Serve(t testing.TB, s Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// Client returns an HTTP client that sends every request through the proxy
// at proxyURL.
func Client(t testing.TB, proxyURL *url.URL, tlsConf *tls.Config) *http.Client {
	tr := &http.Transport{
		Proxy:              http.ProxyURL(proxyURL),
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
		TLSClientConfig:    tlsConf,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// RawConn dials the proxy at addr for tests that speak HTTP/1.1 by hand.
func RawConn(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// Connect opens a tunnel to target through the proxy at addr and returns the
// raw connection after a 200, with any early bytes already sent.
func Connect(t testing.TB, addr, target, early string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := RawConn(t, addr)
	MustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"+early)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("CONNECT %s: %d %q", target, resp.StatusCode, b)
	}
	return c, br
}

// ConnectTLS sends CONNECT target through the proxy at addr and starts TLS
// on the tunnel as a client trusting roots, offering protos.
func ConnectTLS(t testing.TB, addr, target, serverName string, roots *x509.CertPool, protos ...string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, br := RawConn(t, addr)
	MustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	if br.Buffered() > 0 {
		t.Fatal("bytes after the 200")
	}
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: protos})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return tc, bufio.NewReader(tc)
}

// TunnelRoundTrip opens a CONNECT tunnel through the proxy at addr to an
// echo server at target, sends n bytes, reads them back, and closes.
func TunnelRoundTrip(t testing.TB, addr, target string, n int) {
	t.Helper()
	c, br := Connect(t, addr, target, "")
	payload := strings.Repeat("y", n)
	MustWrite(t, c, payload)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(br)
	if err != nil || len(b) != n {
		t.Fatalf("echo: %d bytes, %v", len(b), err)
	}
	c.Close()
}

// Send writes one request by hand to the proxy at addr and returns the
// status, body and header of its response.
func Send(t testing.TB, addr, req string) (int, string, http.Header) {
	t.Helper()
	c, br := RawConn(t, addr)
	MustWrite(t, c, req)
	method := "GET"
	if strings.HasPrefix(req, "CONNECT") {
		method = "CONNECT"
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 && method == "CONNECT" {
		return 200, "", resp.Header
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// GetRequest is an absolute-form GET of target's root, as Send takes it.
func GetRequest(target string) string {
	return "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

// ConnectRequest is a CONNECT to target, as Send takes it.
func ConnectRequest(target string) string {
	return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

// MustWrite writes s to w or fails the test.
func MustWrite(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

// MustGet gets u with c and returns the response with its whole body.
func MustGet(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Eventually polls cond until it holds or 5 s have passed.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Quiesce waits until a proxy has no request or tunnel in flight, so that
// what they record at their end has been recorded. idle reads the proxy's
// Stats once: whether ActiveRequests and ActiveTunnels are both 0, and the
// Stats to show when they are not after 5 s.
func Quiesce(t testing.TB, idle func() (bool, any)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, s := idle()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still active: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
