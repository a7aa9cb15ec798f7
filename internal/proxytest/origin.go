package proxytest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/mitm"
)

// Origin starts an httptest server for h, closed when the test ends.
func Origin(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// TLSOrigin starts an HTTPS origin (HTTP/2 enabled) for h; its certificate
// (SANs example.com, 127.0.0.1, ::1) is trusted through the returned pool.
func TLSOrigin(t testing.TB, h http.HandlerFunc) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.EnableHTTP2 = true
	s.StartTLS()
	t.Cleanup(s.Close)
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return s, pool
}

// HitCountingOrigin is an origin that counts the requests it receives; it
// returns the count and the origin's port.
func HitCountingOrigin(t testing.TB) (*atomic.Int64, string) {
	var hits atomic.Int64
	o := Origin(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "origin reached")
	})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	return &hits, port
}

// TCPOrigin runs a raw TCP server on 127.0.0.1 calling handle per connection.
func TCPOrigin(t testing.TB, network, addr string, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

// Echo is a TCPOrigin handler that sends back what it reads.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// ClosedPort returns a loopback address where nothing listens.
func ClosedPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// NewCA returns a fresh interception CA (what fwdproxy.NewCA makes) and a
// pool trusting it.
func NewCA(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, _, _, err := mitm.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	return ca, pool
}

// H2Front serves h (a Proxy) over TLS with HTTP/2 and returns a transport
// that can open CONNECT streams to it, and its address.
func H2Front(t testing.TB, h http.Handler) (*http.Transport, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return tr, srv.Listener.Addr().String()
}
