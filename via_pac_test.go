package fwdproxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// TestPAC routes by a PAC file with several entries per answer, DIRECT,
// isInNet over a name resolved by the Proxy's Resolver, and credentials
// given for one of its proxies; a FindProxyForURL that never returns is
// stopped, and the request gets 502 saying so.
func TestPAC(t *testing.T) {
	o := newChainOrigin(t)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	_, echoPort, _ := net.SplitHostPort(echoAddr)
	ds := dnstest.NewServer(t)
	ds.Add("lan.test. 60 IN A 127.0.0.1", "direct.test. 60 IN A 127.0.0.1", "other.test. 60 IN A 127.0.0.1", "loop.test. 60 IN A 127.0.0.1")
	first := upstreamFwdproxy(t, "pac-first", WithDNSServers(ds.Addr()))
	second := upstreamFwdproxy(t, "pac-second", WithDNSServers(ds.Addr()))
	dead := closedPort(t)
	src := `// routes for the test
function FindProxyForURL(url, host) {
  if (host == "loop.test") {
    while (true) {}
  }
  if (dnsDomainIs(host, "direct.test")) {
    return "DIRECT";
  }
  if (isInNet(host, "127.0.0.0", "255.0.0.0") && host != "other.test") {
    return "PROXY ` + dead + `; PROXY ` + first.Addr + `; DIRECT";
  }
  return "PROXY ` + second.Addr + `";
}
`
	tp := startProxy(t, WithDNSServers(ds.Addr()), WithPAC([]byte(src),
		"http://"+chainUser+":"+chainPass+"@"+first.Addr, "http://"+chainUser+":"+chainPass+"@"+second.Addr))
	tests := []struct {
		host    string
		wantVia string // in the origin's Via; "" for DIRECT
	}{
		{"lan.test", "pac-first"}, // the dead proxy first, then the first
		{"127.0.0.1", "pac-first"},
		{"direct.test", ""},
		{"other.test", "pac-second"},
	}
	for _, tt := range tests {
		status, body, _ := send(t, tp, getReq(tt.host, port, "/pac"))
		if status != 200 || body != "got /pac" {
			t.Fatalf("GET %s: %d %q", tt.host, status, body)
		}
		via := o.lastVia()
		if tt.wantVia == "" && (strings.Contains(via, "pac-first") || strings.Contains(via, "pac-second")) || !strings.Contains(via, tt.wantVia) {
			t.Errorf("GET %s went through %q, want %q", tt.host, via, tt.wantVia)
		}
		c, br := tp.connect(t, tt.host+":"+echoPort, "")
		echoThrough(t, c, br)
		c.Close()
	}
	if s, ok := upstreamState(tp.Proxy, "http://"+dead); !ok || s.Up || s.Failures == 0 {
		t.Errorf("the dead proxy of the PAC answer: %+v (known %v); want it down", s, ok)
	}
	if s, _ := upstreamState(tp.Proxy, "http://"+first.Addr); !s.Up || s.Successes < 4 {
		t.Errorf("the first proxy: %+v; want it up with 4 successes", s)
	}

	start := time.Now()
	status, body, _ := send(t, tp, getReq("loop.test", port, "/"))
	if status != 502 || !strings.Contains(body, "the PAC file gave no route") || !strings.Contains(body, "timed out") {
		t.Errorf("a PAC script that never returns: %d %q; want 502 saying it timed out", status, body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the runaway script held the request %v", d) // bounded by the 1 s PAC timeout
	}
}

// TestPACReload: a reload with the same PAC file keeps its evaluator (and
// its cache) and the upstreams its answers made, with their health; a new
// file takes effect for the next request.
func TestPACReload(t *testing.T) {
	o := newChainOrigin(t)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	a := upstreamFwdproxy(t, "pac-a")
	b := upstreamFwdproxy(t, "pac-b")
	creds := func(up *testProxy) string { return "http://" + chainUser + ":" + chainPass + "@" + up.Addr }
	pacTo := func(up *testProxy) []byte {
		return []byte(`function FindProxyForURL(url, host) { return "PROXY ` + up.Addr + `"; }`)
	}
	lg := testLogger(t) // one logger: a PAC file is kept with its logger
	tp := startProxy(t, WithLogger(lg), WithPAC(pacTo(a), creds(a), creds(b)))
	get := func(want string) {
		t.Helper()
		status, body, _ := send(t, tp, getReq("127.0.0.1", port, "/"))
		if status != 200 || !strings.Contains(o.lastVia(), want) {
			t.Fatalf("GET: %d %q via %q, want through %s", status, body, o.lastVia(), want)
		}
	}
	get("pac-a")
	evaluator := tp.cfg.Load().routing.pac.eval
	ua := tp.cfg.Load().routing.all()[0]
	if err := tp.Reload(WithLogger(lg), WithAllowPrivate(), allowAnyConnectPort(), WithPAC(pacTo(a), creds(a), creds(b))); err != nil {
		t.Fatal(err)
	}
	if rt := tp.cfg.Load().routing; rt.pac.eval != evaluator || len(rt.all()) != 1 || rt.all()[0] != ua {
		t.Error("a reload with the same PAC file did not keep its evaluator and upstreams")
	}
	get("pac-a")
	if err := tp.Reload(WithLogger(lg), WithAllowPrivate(), allowAnyConnectPort(), WithPAC(pacTo(b), creds(a), creds(b))); err != nil {
		t.Fatal(err)
	}
	get("pac-b")
}
