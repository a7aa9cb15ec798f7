package fwdproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/miekg/dns"
)

// TestProxyResolvesWithItsResolver: names are resolved by the Proxy's own
// Resolver, pointed at a test DNS server that alone knows them, for plain
// requests and for CONNECT; the second request is a cache hit.
func TestProxyResolvesWithItsResolver(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	ds := dnstest.NewServer(t)
	ds.Add("only-test-dns-knows.example. 60 IN A 127.0.0.1")
	tp := startProxy(t, WithDNSServers(ds.Addr()))
	c := tp.client(t, nil)

	u := "http://only-test-dns-knows.example:" + port + "/"
	for i := range 3 {
		resp, body := mustGet(t, c, u)
		if resp.StatusCode != 200 || body != "hello from only-test-dns-knows.example:"+port {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// CONNECT to the same name.
	conn, br := tp.rawConn(t)
	mustWrite(t, conn, "CONNECT only-test-dns-knows.example:"+port+" HTTP/1.1\r\nHost: only-test-dns-knows.example:"+port+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	if n := ds.Queries("only-test-dns-knows.example.", dns.TypeA); n != 1 {
		t.Errorf("A queries = %d, want 1 (later requests must hit the cache)", n)
	}
	if st := tp.cfg.Load().up.resolver.Stats(); st.Hits < 1 || st.Misses != 1 {
		t.Errorf("resolver stats %+v: want 1 miss, then hits", st)
	}
}

// TestDNSFailuresAre502: each DNS failure reaches the client as a 502 that
// names the host and says what failed, unlike a refused connection.
func TestDNSFailuresAre502(t *testing.T) {
	ds := dnstest.NewServer(t)
	ds.SetFault("timeout.example.", dnstest.FaultDrop)
	ds.SetFault("servfail.example.", dnstest.FaultServFail)
	r, err := NewResolver(WithDNSServers(ds.Addr()), WithDNSTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	deadListener, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := deadListener.LocalAddr().String()
	deadListener.Close()
	unreachable, err := NewResolver(WithDNSServers(dead), WithDNSTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unreachable.Close() })

	for _, tc := range []struct {
		name     string
		resolver *Resolver
		host     string
		want     string
	}{
		{"nxdomain", r, "nothing-here.example", "DNS lookup of nothing-here.example failed: no such host"},
		{"timeout", r, "timeout.example", "DNS lookup of timeout.example failed: DNS timeout"},
		{"servfail", r, "servfail.example", "DNS lookup of servfail.example failed: server failure"},
		{"unreachable", unreachable, "any.example", "DNS lookup of any.example failed: DNS servers unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, WithResolver(tc.resolver))
			for _, method := range []string{"GET", "CONNECT"} {
				c, br := tp.rawConn(t)
				if method == "GET" {
					mustWrite(t, c, "GET http://"+tc.host+"/ HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
				} else {
					mustWrite(t, c, "CONNECT "+tc.host+":443 HTTP/1.1\r\nHost: "+tc.host+":443\r\n\r\n")
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), tc.want) {
					t.Errorf("%s: got %d %q, want 502 containing %q", method, resp.StatusCode, b, tc.want)
				}
			}
		})
	}
}

// TestResolverOptions: WithResolver and the resolver options are validated
// and exclusive; a Resolver given by the caller survives Shutdown.
func TestResolverOptions(t *testing.T) {
	r, err := NewResolver(WithDNSServers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"nil resolver", []Option{WithResolver(nil)}},
		{"no servers", []Option{WithDNSServers()}},
		{"bad server", []Option{WithDNSServers("not an address:x")}},
		{"both", []Option{WithResolver(r), WithDNSServers("127.0.0.1")}},
		{"both reversed", []Option{WithDNSServers("127.0.0.1"), WithResolver(r)}},
		{"bad resolver option", []Option{WithDNSTimeout(0)}},
		{"resolver option with WithResolver", []Option{WithResolver(r), WithDNSTimeout(time.Second)}},
	} {
		if _, err := New(tc.opts...); err == nil {
			t.Errorf("%s: New succeeded, want an error", tc.name)
		}
	}
	_, err = New(WithHostsFile(""), WithResolver(r))
	if err == nil || !strings.Contains(err.Error(), "WithResolver") || !strings.Contains(err.Error(), "WithHostsFile") {
		t.Errorf("WithResolver with WithHostsFile: %v; want an error naming both", err)
	}
	p, err := New(WithResolver(r))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupNetIP(context.Background(), "127.0.0.1"); err != nil {
		t.Fatalf("caller's Resolver unusable after Shutdown: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// A name needing a query fails only because 127.0.0.1:1 does not answer,
	// not because the Resolver was closed.
	if _, err := r.LookupNetIP(ctx, "example.invalid"); err != nil && strings.Contains(err.Error(), "closed") {
		t.Fatalf("caller's Resolver was closed by Shutdown: %v", err)
	}
}

// TestResolverOptionsConfigureNew: a ResolverOption given to New configures
// the Proxy's own Resolver, as it configures one NewResolver makes.
func TestResolverOptionsConfigureNew(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from "+r.Host) })
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 only-the-hosts-file.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ds := dnstest.NewServer(t) // knows no name
	tp := startProxy(t, WithDNSServers(ds.Addr()), WithHostsFile(hosts), WithDNSCacheSize(8), WithDNSTimeout(time.Second))
	if got := tp.cfg.Load().up.resolver.cfg; got.hostsFile != hosts || got.cacheSize != 8 || got.timeout != time.Second {
		t.Errorf("the Proxy's Resolver has hosts file %q, cache size %d, timeout %v", got.hostsFile, got.cacheSize, got.timeout)
	}
	resp, body := mustGet(t, tp.client(t, nil), "http://only-the-hosts-file.test:"+port+"/")
	if resp.StatusCode != 200 || body != "hello from only-the-hosts-file.test:"+port {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}
