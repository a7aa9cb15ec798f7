package fwdproxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/fwdproxy/fwdproxy"
)

// A Proxy is an http.Handler: serve it, then point any client at it.
func Example() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello via %s", r.Header.Get("Via"))
	}))
	defer origin.Close()

	// The origin listens on loopback, which the proxy refuses by default.
	p, err := fwdproxy.New(fwdproxy.WithVia("example-proxy"), fwdproxy.WithAllowPrivate())
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go p.Serve(l)
	defer p.Shutdown(context.Background())

	proxyURL := &url.URL{Scheme: "http", Host: l.Addr().String()}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(origin.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello via 1.1 example-proxy
}

// Hooks see every request and response; a request hook can also answer
// without going upstream.
func ExampleWithRequestHook() {
	block := fwdproxy.WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		if out.URL.Path == "/admin" {
			return nil, fwdproxy.Deny(http.StatusForbidden, "no admin pages through this proxy")
		}
		out.Header.Set("X-Forwarded-By", "fwdproxy")
		return nil, nil
	})
	p, err := fwdproxy.New(block)
	if err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background()) // stops the access log's goroutine
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "http://example.com/admin", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output: 403 no admin pages through this proxy
}

// Proxy authentication: requests without valid credentials get 407 and a
// challenge; clients send them in Proxy-Authorization (Go's client does so
// for a proxy URL with user info, curl with -U).
func ExampleWithBasicAuth() {
	p, err := fwdproxy.New(fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{"alice": "s3cret"})))
	if err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background())
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "http://example.com/", nil))
	fmt.Println(rec.Code, rec.Header().Get("Proxy-Authenticate"))
	// Output: 407 Basic realm="fwdproxy", charset="UTF-8"
}
