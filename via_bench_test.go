package fwdproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// BenchmarkRouteDecision measures the route decision alone (pick): one
// static route to an upstream proxy, a table of five rules whose default
// route is a pool of two, and a name that falls through to it. The first
// must cost no allocation.
func BenchmarkRouteDecision(b *testing.B) {
	cases := []struct {
		name   string
		routes []Route
	}{
		{"one-static-route", []Route{{Upstreams: []string{"http://" + chainUser + ":" + chainPass + "@proxy.example:3128"}}}},
		{"five-rules", []Route{
			{Hosts: []string{"*.corp.example", "intra.example"}, Upstreams: []string{"http://corp.proxy:3128"}},
			{Ports: []uint16{8443}, Upstreams: []string{"socks5://socks.proxy:1080"}},
			{Schemes: []string{"https"}, Users: []string{"alice"}, Upstreams: []string{"https://secure.proxy:443"}},
			{Hosts: []string{"example.org"}, Upstreams: []string{"DIRECT"}},
			{Upstreams: []string{"http://a.proxy:3128", "http://b.proxy:3128"}, Policy: "round-robin"},
		}},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			p, err := New(WithUpstreams(bc.routes...))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			c := p.cfg.Load()
			d := destination{host: "www.example.net", port: 80}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				var buf [8]*proxies.Upstream
				order, err := p.pick(ctx, c, &d, buf[:0])
				if err != nil || len(order) == 0 {
					b.Fatal("no upstream picked") // order itself would escape
				}
			}
		})
	}
}

// BenchmarkChain measures a 100-byte GET over keep-alive connections
// directly, through one fwdproxy, and through a fwdproxy chained to a
// second fwdproxy (an HTTP upstream with credentials), in one run: the
// chain's cost over one proxy is the second proxy's share plus what
// chaining adds to the first. The chained request is sent by the own
// HTTP/1.1 transport in absolute-form (chain), and, for comparison, by
// http.Transport through the upstream (chain-http.Transport). A route to
// DIRECT (route-direct) measures what a configuration with routes costs a
// request that goes directly.
func BenchmarkChain(b *testing.B) {
	body := strings.Repeat("x", 100)
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})
	second := upstreamFwdproxy(b, "second-hop")
	spec := "http://" + chainUser + ":" + chainPass + "@" + second.Addr
	single := startProxy(b)
	chained := startProxy(b, WithUpstreams(Route{Upstreams: []string{spec}}))
	routeDirect := startProxy(b, WithUpstreams(Route{Hosts: []string{"elsewhere.example"}, Upstreams: []string{spec}}))
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(direct.CloseIdleConnections)
	client := func(tp *testProxy) *http.Client {
		c := tp.client(b, nil)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
		return c
	}
	for _, bc := range []struct {
		name         string
		c            *http.Client
		ownTransport bool
	}{
		{"direct", direct, true},
		{"proxy", client(single), true},
		{"route-direct", client(routeDirect), true},
		{"chain", client(chained), true},
		{"chain-http.Transport", client(chained), false},
	} {
		get := func() {
			resp, err := bc.c.Get(o.URL + "/small")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			viaOwnTransport.Store(bc.ownTransport)
			defer viaOwnTransport.Store(true)
			get()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				get()
			}
		})
	}
}
