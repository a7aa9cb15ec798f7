package fwdproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// BenchmarkFrontEndSmallGET measures a 100-byte GET through each front end
// over one keep-alive client connection, all in one run: plain HTTP/1.1 to
// the proxy (Serve's own loop, and net/http's server for comparison: the
// Proxy mounted on an http.Server), TLS to the proxy (ServeTLS: net/http's
// server, HTTP/1.1 and HTTP/2), cleartext HTTP/2, and TLS to the origin
// instead (an absolute-form https:// request on plain HTTP/1.1, the proxy
// speaking TLS upstream). Client, proxy and origin share the process, so
// the differences between the rows are what each costs per request (in
// cpu-ns/op, the process's CPU time per request): the goal is that
// TLS to the proxy costs no more than TLS to the origin.
func BenchmarkFrontEndSmallGET(b *testing.B) {
	body := strings.Repeat("x", 100)
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	}
	o := origin(b, h)
	tlsO, roots := tlsOrigin(b, h)
	m := newMultiFront(b, true, WithAllowPrivate(), WithUpstreamRootCAs(roots), WithCleartextHTTP2(), WithLogger(testLogger(b)))
	plain := m.listen(b, (*Proxy).Serve)
	tlsAddr := m.listen(b, (*Proxy).ServeTLS)
	mounted := httptest.NewServer(m.Proxy) // net/http's server alone: no loop
	b.Cleanup(mounted.Close)
	pki := m.pki

	h1 := func(b *testing.B, c net.Conn, url string) {
		host := strings.TrimPrefix(strings.TrimPrefix(url, "https://"), "http://")
		req := []byte("GET " + url + "/small HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
		br := bufio.NewReader(c)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	}
	h2 := func(b *testing.B, c net.Conn, url string) {
		cc := h2Conn(b, c)
		req, _ := http.NewRequest(http.MethodGet, url+"/small", nil)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			resp, err := cc.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	}
	for _, bc := range []struct {
		name string
		dial func(testing.TB, *proxytest.PKI, string) net.Conn
		addr string
		url  string
		run  func(*testing.B, net.Conn, string)
	}{
		{"plain-loop", plainDial, plain, o.URL, h1},
		{"plain-nethttp", plainDial, mounted.Listener.Addr().String(), o.URL, h1},
		{"tls-proxy-h1", tlsDial("http/1.1"), tlsAddr, o.URL, h1},
		{"tls-proxy-h2", tlsDial("h2"), tlsAddr, o.URL, h2},
		{"h2c", plainDial, plain, o.URL, h2},
		{"tls-origin", plainDial, plain, tlsO.URL, h1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.dial(b, pki, bc.addr)
			defer c.Close()
			cpu := proxytest.ProcessCPU()
			bc.run(b, c, bc.url)
			b.StopTimer()
			// The process's CPU time per request (client, proxy and
			// origin): less sensitive than ns/op to the machine's load.
			b.ReportMetric(float64(proxytest.ProcessCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
