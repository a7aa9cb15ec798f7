package fwdproxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"

	"github.com/fwdproxy/fwdproxy"
)

// With interception on, the proxy terminates the client's TLS with a
// certificate it mints for the host, signed by its CA, and forwards the
// decrypted requests (hooks included) over verified TLS.
func ExampleWithInterception() {
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-Seen-By-Proxy"))
	}))
	defer origin.Close()
	upstreamRoots := x509.NewCertPool()
	upstreamRoots.AddCert(origin.Certificate())

	// In production: fwdproxy.LoadOrCreateCA(dir), and clients trust dir/ca.pem.
	ca, _, _, err := fwdproxy.NewCA()
	if err != nil {
		panic(err)
	}
	// The test origin listens on loopback and a random port, which the proxy
	// refuses by default (private address; CONNECT only to 443).
	originPort, _ := strconv.ParseUint(origin.URL[strings.LastIndex(origin.URL, ":")+1:], 10, 16)
	p, err := fwdproxy.New(
		fwdproxy.WithAllowPrivate(),
		fwdproxy.WithAllowPorts(uint16(originPort)),
		fwdproxy.WithInterception(ca, fwdproxy.WithInterceptBypass("*.bank.example")),
		fwdproxy.WithUpstreamRootCAs(upstreamRoots),
		fwdproxy.WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
			out.Header.Set("X-Seen-By-Proxy", out.URL.Scheme+" "+out.URL.Path)
			return nil, nil
		}),
	)
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go p.Serve(l)
	defer p.Shutdown(context.Background())

	clientRoots := x509.NewCertPool()
	clientRoots.AddCert(ca.Leaf)
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()}),
		TLSClientConfig: &tls.Config{RootCAs: clientRoots},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(origin.URL + "/inside")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body), "| certificate issued by", resp.TLS.PeerCertificates[0].Issuer.CommonName)
	// Output: hello https /inside | certificate issued by fwdproxy interception CA
}
