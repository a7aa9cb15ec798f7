package fwdproxy

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// pickFirst returns the name of the first upstream p's routes pick for d,
// or "DIRECT" for the usual direct path.
func pickFirst(t *testing.T, p *Proxy, d destination) string {
	t.Helper()
	var buf [8]*proxies.Upstream
	order, err := p.pick(context.Background(), p.cfg.Load(), &d, buf[:0])
	if err != nil {
		t.Fatalf("pick(%+v): %v", d, err)
	}
	if order == nil {
		return "DIRECT"
	}
	return order[0].Name()
}

// TestRouteDecision: one table of destinations against ordered rules by
// host, domain, CIDR (an address, and a name that resolves into the range),
// port, scheme and user: the first rule that matches decides, the default
// route takes the rest, and without one the rest goes directly.
func TestRouteDecision(t *testing.T) {
	ds := dnstest.NewServer(t)
	ds.Add("intra.test. 60 IN A 10.9.9.9", "pub.test. 60 IN A 192.0.2.1")
	routes := []Route{
		{Hosts: []string{"*.corp.example", "10.0.0.0/8"}, Upstreams: []string{"http://corp.proxy:3128"}},
		{Ports: []uint16{8443}, Upstreams: []string{"socks5://socks.proxy:1080"}},
		{Schemes: []string{"https"}, Users: []string{"alice"}, Upstreams: []string{"https://secure.proxy:443"}},
		{Hosts: []string{"example.org"}, Upstreams: []string{"DIRECT"}},
		{Schemes: []string{"HTTP"}, Users: []string{"bob"}, Upstreams: []string{"http://bob.proxy:3128"}},
	}
	withDefault := append(append([]Route(nil), routes...), Route{Upstreams: []string{"http://default.proxy:3128", "DIRECT"}})
	tests := []struct {
		d             destination
		want          string // with the default route
		wantNoDefault string
	}{
		{destination{host: "a.corp.example", port: 80}, "http://corp.proxy:3128", "http://corp.proxy:3128"},
		{destination{host: "A.B.Corp.Example.", port: 443, https: true}, "http://corp.proxy:3128", "http://corp.proxy:3128"},
		{destination{host: "corp.example", port: 80}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "10.1.2.3", port: 80}, "http://corp.proxy:3128", "http://corp.proxy:3128"},
		{destination{host: "intra.test", port: 80}, "http://corp.proxy:3128", "http://corp.proxy:3128"},
		{destination{host: "pub.test", port: 80}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "nxdomain.test", port: 80}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "x.test", port: 8443}, "socks5://socks.proxy:1080", "socks5://socks.proxy:1080"},
		{destination{host: "x.test", port: 443, https: true, user: "alice"}, "https://secure.proxy:443", "https://secure.proxy:443"},
		{destination{host: "x.test", port: 443, https: true, user: "bob"}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "x.test", port: 80, user: "bob"}, "http://bob.proxy:3128", "http://bob.proxy:3128"},
		{destination{host: "x.test", port: 80, user: "alice"}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "x.test", port: 443, https: true}, "http://default.proxy:3128", "DIRECT"},
		{destination{host: "example.org", port: 80}, "DIRECT", "DIRECT"},
	}
	pd, err := New(WithDNSServers(ds.Addr()), WithUpstreams(withDefault...))
	if err != nil {
		t.Fatal(err)
	}
	defer pd.Shutdown(context.Background())
	pn, err := New(WithDNSServers(ds.Addr()), WithUpstreams(routes...))
	if err != nil {
		t.Fatal(err)
	}
	defer pn.Shutdown(context.Background())
	for _, tt := range tests {
		if got := pickFirst(t, pd, tt.d); got != tt.want {
			t.Errorf("with a default route, %+v goes to %s, want %s", tt.d, got, tt.want)
		}
		if got := pickFirst(t, pn, tt.d); got != tt.wantNoDefault {
			t.Errorf("without a default route, %+v goes to %s, want %s", tt.d, got, tt.wantNoDefault)
		}
	}
}

// TestRouteOptionErrors: each invalid routing option is refused by New
// with an error naming the option and the route or entry at fault, and
// never the credentials of an upstream.
func TestRouteOptionErrors(t *testing.T) {
	secret := "http://" + chainUser + ":" + chainPass + "@"
	ok := []string{"http://p:3128"}
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"no upstreams", []Option{WithUpstreams(Route{Hosts: []string{"a.example"}})}, "WithUpstreams: route 1: no Upstreams"},
		{"bad spec, credentials hidden", []Option{WithUpstreams(Route{Upstreams: []string{secret + "proxy.example"}})}, `WithUpstreams: route 1: upstream 1: upstream "http://***@proxy.example": missing port`},
		{"bad scheme", []Option{WithUpstreams(Route{Upstreams: ok}, Route{Upstreams: []string{"ftp://p:21"}})}, "route 2: it is never used"},
		{"bad scheme alone", []Option{WithUpstreams(Route{Hosts: []string{"a.example"}, Upstreams: []string{"ftp://p:21"}})}, `route 1: upstream 1: upstream "ftp://p:21": unsupported scheme "ftp"`},
		{"bad policy", []Option{WithUpstreams(Route{Upstreams: ok, Policy: "fastest"})}, `route 1: Policy "fastest": want failover, round-robin, least-outstanding or consistent-hash`},
		{"bad host", []Option{WithUpstreams(Route{Hosts: []string{"a..b"}, Upstreams: ok})}, `route 1: Hosts: "a..b" is neither a host pattern nor a CIDR range`},
		{"bad route scheme", []Option{WithUpstreams(Route{Schemes: []string{"ftp"}, Upstreams: ok})}, `route 1: Schemes: "ftp": want http`},
		{"port 0", []Option{WithUpstreams(Route{Ports: []uint16{0}, Upstreams: ok})}, "route 1: Ports: 0 is not a port"},
		{"empty user", []Option{WithUpstreams(Route{Users: []string{""}, Upstreams: ok})}, "route 1: Users: an empty user name"},
		{"twice in a route", []Option{WithUpstreams(Route{Upstreams: []string{secret + "p:1", secret + "p:1"}})}, `route 1: upstream 2: http://***@p:1 is in the route twice`},
		{"default first", []Option{WithUpstreams(Route{Upstreams: ok}, Route{Hosts: []string{"a.example"}, Upstreams: ok})}, "WithUpstreams: route 2: it is never used: route 1 before it matches every request"},
		{"routes and PAC", []Option{WithUpstreams(Route{Upstreams: ok}), WithPAC([]byte(`function FindProxyForURL(u, h) { return "DIRECT"; }`))}, "WithUpstreams: cannot be combined with WithPAC"},
		{"routes and environment", []Option{WithUpstreams(Route{Upstreams: ok}), WithProxyFromEnvironment()}, "WithUpstreams: cannot be combined with WithProxyFromEnvironment"},
		{"probe without upstreams", []Option{WithUpstreamProbe(time.Second, "")}, "WithUpstreamProbe: no upstream to probe"},
		{"probe interval", []Option{WithUpstreams(Route{Upstreams: ok}), WithUpstreamProbe(0, "")}, "WithUpstreamProbe: interval must be positive"},
		{"probe target", []Option{WithUpstreams(Route{Upstreams: ok}), WithUpstreamProbe(time.Second, "nope")}, `WithUpstreamProbe: target "nope" is not host:port`},
		{"empty PAC", []Option{WithPAC(nil)}, "WithPAC: empty PAC file"},
		{"PAC syntax error", []Option{WithPAC([]byte("function FindProxyForURL(url, host) {\n  return \"DIRECT\";\n  if (\n}\n"))}, "WithPAC: pac: syntax error at line 4"},
		{"PAC without FindProxyForURL", []Option{WithPAC([]byte("var x = 1;\n"))}, "WithPAC: pac:"},
		{"PAC that never returns", []Option{WithPAC([]byte("while (true) {}\n"))}, "script timed out"},
		{"PAC credentials without user info", []Option{WithPAC([]byte(`function FindProxyForURL(u, h) { return "DIRECT"; }`), "http://p:3128")}, "WithPAC: credentials 1: http://p:3128 has no user info"},
		{"PAC credentials malformed", []Option{WithPAC([]byte(`function FindProxyForURL(u, h) { return "DIRECT"; }`), secret+"p")}, `WithPAC: credentials 1: upstream "http://***@p": missing port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			p, err := New(tt.opts...)
			if err == nil {
				p.Shutdown(context.Background())
				t.Fatalf("New succeeded; want an error with %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tt.want)
			}
			assertNoSecrets(t, "the error", err.Error())
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("New took %v to refuse it", d) // bounded: the PAC timeout is 1 s
			}
		})
	}
}

// TestRouteDescription: the configuration's description and a reload's
// log line name the routes and the PAC file by what they are, and the
// upstreams' credentials only as "changed", never their text; a reload
// that changes only a password changes the hash.
func TestRouteDescription(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	routes := func(pass, host string) Option {
		return WithUpstreams(
			Route{Hosts: []string{"*.corp.example"}, Ports: []uint16{443}, Users: []string{"alice"}, Upstreams: []string{"http://" + chainUser + ":" + pass + "@" + host + ":3128", "DIRECT"}, Policy: "round-robin"},
			Route{Upstreams: []string{"socks5://" + chainUser + ":" + pass + "@s.proxy:1080"}})
	}
	p, err := New(WithLogger(logger), routes(chainPass, "a.proxy"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	desc := p.cfg.Load().meta.desc
	var all strings.Builder
	for _, s := range desc {
		all.WriteString(s.option + "=" + s.value + "\n")
	}
	want := "WithUpstreams=1: hosts *.corp.example; ports 443; users alice → http://***@a.proxy:3128, DIRECT (round-robin); 2: default → socks5://***@s.proxy:1080 (failover)"
	if !strings.Contains(all.String(), want) {
		t.Errorf("description:\n%s\nwant the line %q", all.String(), want)
	}
	assertNoSecrets(t, "the description", all.String())
	if strings.Contains(all.String(), chainUser) {
		t.Errorf("the description holds the user name: %s", all.String())
	}
	hash := p.Stats().Config.Hash
	if err := p.Reload(WithLogger(logger), routes("another-Pa55", "a.proxy")); err != nil {
		t.Fatal(err)
	}
	if p.Stats().Config.Hash == hash {
		t.Error("a new password left the hash unchanged")
	}
	eventually(t, "the reload's log line", func() bool { return strings.Contains(logs.String(), `changed="upstream credentials changed"`) })
	if err := p.Reload(WithLogger(logger), routes("another-Pa55", "b.proxy")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old and the new route in the reload's log line", func() bool {
		s := logs.String()
		return strings.Contains(s, "→ http://***@a.proxy:3128, DIRECT (round-robin)") && strings.Contains(s, "→ http://***@b.proxy:3128, DIRECT (round-robin)")
	})
	assertNoSecrets(t, "the reload log", logs.String())
	if strings.Contains(logs.String(), "another-Pa55") {
		t.Errorf("the reload log holds a password: %s", logs.String())
	}
}
