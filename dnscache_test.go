package fwdproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

// checkLeaks fails t if goroutines started during t outlive it. Call it
// first, so that its check runs after every other cleanup.
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// fakeClock is a settable clock for Resolver.clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{} }

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t += d
}

// newTestResolver returns a Resolver asking srv (when not nil), without
// hosts file, with short timeouts; opts come last and may override that.
// It is closed when the test ends.
func newTestResolver(t *testing.T, srv *dnstest.Server, opts ...ResolverOption) *Resolver {
	t.Helper()
	base := []ResolverOption{WithHostsFile(""), WithDNSTimeout(200 * time.Millisecond)}
	if srv != nil {
		base = append(base, WithDNSServers(srv.Addr()))
	}
	r, err := NewResolver(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// sortedAddrs returns a sorted copy, leaving the shared slice alone.
func sortedAddrs(a []netip.Addr) []netip.Addr {
	s := slices.Clone(a)
	slices.SortFunc(s, netip.Addr.Compare)
	return s
}

func mustLookup(t *testing.T, r *Resolver, host string, want ...string) {
	t.Helper()
	got, err := r.LookupNetIP(context.Background(), host)
	if err != nil {
		t.Fatalf("LookupNetIP(%q): %v", host, err)
	}
	if w := sortedAddrs(addrs(want...)); !slices.Equal(sortedAddrs(got), w) {
		t.Fatalf("LookupNetIP(%q) = %v, want %v", host, got, w)
	}
}

// lookupDNSError looks host up and returns the *net.DNSError it must fail with.
func lookupDNSError(t *testing.T, r *Resolver, host string) *net.DNSError {
	t.Helper()
	got, err := r.LookupNetIP(context.Background(), host)
	var de *net.DNSError
	if !errors.As(err, &de) {
		t.Fatalf("LookupNetIP(%q) = %v, %v; want a *net.DNSError", host, got, err)
	}
	return de
}

func wantQueries(t *testing.T, srv *dnstest.Server, name string, a, aaaa int) {
	t.Helper()
	if ga, gaaaa := srv.Queries(name, dns.TypeA), srv.Queries(name, dns.TypeAAAA); ga != a || gaaaa != aaaa {
		t.Fatalf("queries for %s: A %d, AAAA %d; want %d, %d", name, ga, gaaaa, a, aaaa)
	}
}

func TestResolverCacheHit(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("web.test. 300 IN A 192.0.2.1", "web.test. 300 IN A 192.0.2.2", "web.test. 300 IN AAAA 2001:db8::1")
	r := newTestResolver(t, srv)

	mustLookup(t, r, "web.test", "192.0.2.1", "192.0.2.2", "2001:db8::1")
	wantQueries(t, srv, "web.test", 1, 1)
	for _, host := range []string{"web.test", "WEB.Test", "web.test."} {
		mustLookup(t, r, host, "192.0.2.1", "192.0.2.2", "2001:db8::1")
	}
	wantQueries(t, srv, "web.test", 1, 1)
	if s := r.Stats(); s.Hits != 3 || s.Misses != 1 || s.Errors != 0 {
		t.Errorf("Stats = %+v, want 3 hits, 1 miss, no errors", s)
	}
}

func TestResolverTTL(t *testing.T) {
	tests := []struct {
		name      string
		recordTTL uint32
		opts      []ResolverOption
		fresh     time.Duration // still cached after this long
		expired   time.Duration // asked again after this long
	}{
		{"record TTL", 60, nil, 59 * time.Second, 61 * time.Second},
		{"floor", 1, []ResolverOption{WithDNSTTL(10*time.Second, time.Hour)}, 9 * time.Second, 11 * time.Second},
		{"default floor", 0, nil, 4 * time.Second, 6 * time.Second},
		{"ceiling", 86400, []ResolverOption{WithDNSTTL(time.Second, time.Minute)}, 59 * time.Second, 61 * time.Second},
		{"CNAME chain minimum", 300, nil, 29 * time.Second, 31 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			srv := dnstest.NewServer(t)
			srv.Add("alias.test. 30 IN CNAME mid.test.", "mid.test. 3600 IN CNAME host.test.")
			srv.Add(dnsRecord("host.test.", tt.recordTTL, "A", "192.0.2.7"))
			r := newTestResolver(t, srv, append([]ResolverOption{WithDNSPrefetch(false)}, tt.opts...)...)
			clock := newFakeClock()
			r.clock = clock.Now
			name := "host.test"
			if tt.name == "CNAME chain minimum" {
				name = "alias.test"
			}

			mustLookup(t, r, name, "192.0.2.7")
			clock.Advance(tt.fresh)
			mustLookup(t, r, name, "192.0.2.7")
			wantQueries(t, srv, name, 1, 1)
			clock.Advance(tt.expired - tt.fresh)
			mustLookup(t, r, name, "192.0.2.7")
			wantQueries(t, srv, name, 2, 2)
		})
	}
}

func dnsRecord(name string, ttl uint32, typ, data string) string {
	rr, err := dns.NewRR(name + " IN " + typ + " " + data)
	if err != nil {
		panic(err)
	}
	rr.Header().Ttl = ttl
	return rr.String()
}

func TestResolverNegative(t *testing.T) {
	tests := []struct {
		name            string
		host            string
		soaTTL, soaMin  uint32
		noSOA           bool
		opts            []ResolverOption
		fresh, expired  time.Duration
		wantNXDOMAINErr bool
	}{
		{name: "NXDOMAIN SOA minimum", host: "missing.test", soaTTL: 60, soaMin: 20, fresh: 19 * time.Second, expired: 21 * time.Second},
		{name: "NXDOMAIN SOA TTL", host: "missing.test", soaTTL: 15, soaMin: 600, fresh: 14 * time.Second, expired: 16 * time.Second},
		{name: "NODATA", host: "v6only.test", soaTTL: 60, soaMin: 30, fresh: 29 * time.Second, expired: 31 * time.Second},
		{name: "cap", host: "missing.test", soaTTL: 3600, soaMin: 3600, opts: []ResolverOption{WithDNSNegativeTTL(40 * time.Second)}, fresh: 39 * time.Second, expired: 41 * time.Second},
		{name: "no SOA uses floor", host: "missing.test", noSOA: true, opts: []ResolverOption{WithDNSTTL(8*time.Second, time.Hour)}, fresh: 7 * time.Second, expired: 9 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			srv := dnstest.NewServer(t)
			srv.Add("v6only.test. 300 IN TXT hello")
			srv.SetSOA(tt.soaTTL, tt.soaMin)
			if tt.noSOA {
				srv.SetHook(func(req *dns.Msg) *dns.Msg {
					m := srv.Reply(req)
					m.Rcode = dns.RcodeNameError
					return m
				})
			}
			r := newTestResolver(t, srv, tt.opts...)
			clock := newFakeClock()
			r.clock = clock.Now

			check := func() {
				t.Helper()
				de := lookupDNSError(t, r, tt.host)
				if !de.IsNotFound || de.Err != "no such host" || de.Name != tt.host || de.Server != srv.Addr() {
					t.Fatalf("error = %#v, want not found for %s from %s", de, tt.host, srv.Addr())
				}
			}
			check()
			wantQueries(t, srv, tt.host, 1, 1)
			clock.Advance(tt.fresh)
			check()
			wantQueries(t, srv, tt.host, 1, 1)
			clock.Advance(tt.expired - tt.fresh)
			check()
			wantQueries(t, srv, tt.host, 2, 2)
		})
	}
}

func TestResolverFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*dnstest.Server)
		wantErr string
		timeout bool
	}{
		{"timeout", func(s *dnstest.Server) { s.SetFault("", dnstest.FaultDrop) }, "DNS timeout", true},
		{"SERVFAIL", func(s *dnstest.Server) { s.SetFault("", dnstest.FaultServFail) }, "server failure", false},
		{"REFUSED", func(s *dnstest.Server) { s.SetFault("", dnstest.FaultRefused) }, "server failure", false},
		{"unreachable", func(s *dnstest.Server) { s.Stop() }, "DNS servers unreachable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			srv := dnstest.NewServer(t)
			srv.Add("web.test. 300 IN A 192.0.2.1")
			r := newTestResolver(t, srv, WithDNSTimeout(50*time.Millisecond), WithDNSErrorTTL(2*time.Second))
			clock := newFakeClock()
			r.clock = clock.Now
			tt.setup(srv)

			start := time.Now()
			de := lookupDNSError(t, r, "web.test")
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("lookup took %v", elapsed)
			}
			if de.Err != tt.wantErr || de.IsTimeout != tt.timeout || de.IsNotFound || de.Server != srv.Addr() || de.Name != "web.test" {
				t.Fatalf("error = %#v, want %q from %s", de, tt.wantErr, srv.Addr())
			}
			if tt.wantErr != "DNS timeout" && !de.IsTemporary {
				t.Errorf("error %q not temporary", de.Err)
			}
			errs := r.Stats().Errors
			if errs == 0 {
				t.Error("Stats.Errors = 0")
			}
			clock.Advance(time.Second)
			lookupDNSError(t, r, "web.test")
			if r.Stats().Errors != errs {
				t.Error("failure not cached: the server was asked again")
			}
			clock.Advance(1500 * time.Millisecond)
			lookupDNSError(t, r, "web.test")
			if r.Stats().Errors == errs {
				t.Error("failure cached beyond WithDNSErrorTTL")
			}
		})
	}
}

func TestResolverLookupIsBounded(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.SetFault("", dnstest.FaultDrop)
	r := newTestResolver(t, nil, WithDNSServers(srv.Addr(), srv.Addr(), srv.Addr()), WithDNSTimeout(100*time.Millisecond))

	start := time.Now()
	de := lookupDNSError(t, r, "web.test")
	// Each exchange times out after 100 ms; the lookup is cut at 250 ms,
	// before its second server times out on its second pass.
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond || elapsed > 450*time.Millisecond {
		t.Errorf("lookup took %v, want 250 ms", elapsed)
	}
	if !de.IsTimeout {
		t.Errorf("error = %#v, want a timeout", de)
	}
}

func TestResolverCoalescesMisses(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("busy.test. 300 IN A 192.0.2.9")
	srv.SetDelay(100 * time.Millisecond)
	r := newTestResolver(t, srv)

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			got, err := r.LookupNetIP(context.Background(), "busy.test")
			if err == nil && !slices.Equal(got, addrs("192.0.2.9")) {
				err = errors.New("wrong answer")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantQueries(t, srv, "busy.test", 1, 1)
	if s := r.Stats(); s.Misses+s.Hits != n || s.Coalesced != s.Misses-1 {
		t.Errorf("Stats = %+v, want %d lookups of which all misses but one coalesced", s, n)
	}
}

func TestResolverTruncatedAnswerRetriedOverTCP(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("big.test. 300 IN A 192.0.2.1", "big.test. 300 IN A 192.0.2.2")
	srv.SetFault("big.test", dnstest.FaultTruncate)
	r := newTestResolver(t, srv)

	mustLookup(t, r, "big.test", "192.0.2.1", "192.0.2.2")
	if got := srv.TCPQueries("big.test", dns.TypeA); got != 1 {
		t.Errorf("TCP queries = %d, want 1", got)
	}
	wantQueries(t, srv, "big.test", 2, 2)

	// 100 A records do not fit in 1232 bytes.
	var records []string
	want := make([]string, 100)
	for i := range want {
		want[i] = "198.51.100." + strconv.Itoa(i)
		records = append(records, "huge.test. 300 IN A "+want[i])
	}
	srv.Add(records...)
	mustLookup(t, r, "huge.test", want...)
	if got := srv.TCPQueries("huge.test", dns.TypeA); got != 1 {
		t.Errorf("TCP queries = %d, want 1", got)
	}
}

func TestResolverServeStale(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("web.test. 60 IN A 192.0.2.1")
	r := newTestResolver(t, srv, WithDNSServeStale(5*time.Minute), WithDNSPrefetch(false))
	clock := newFakeClock()
	r.clock = clock.Now

	mustLookup(t, r, "web.test", "192.0.2.1")
	srv.Stop()
	clock.Advance(61 * time.Second)
	mustLookup(t, r, "web.test", "192.0.2.1")
	if s := r.Stats(); s.Stale != 1 || s.Errors == 0 {
		t.Fatalf("Stats = %+v, want 1 stale answer and errors", s)
	}
	// The stale answer is cached for 30 s; hits on it refresh in the
	// background, which fails while the server is down.
	clock.Advance(2 * time.Second)
	name, _ := normalizeHost("web.test")
	served := r.cache.get(name)
	mustLookup(t, r, "web.test", "192.0.2.1")
	eventually(t, "background refresh", func() bool { return r.Stats().Prefetches == 1 })
	if s := r.Stats(); s.Stale != 2 || s.Misses != 2 {
		t.Fatalf("Stats = %+v, want 2 stale answers and 2 misses", s)
	}
	// Let that refresh fail and replace the entry before the clock moves on:
	// one that ended after the advance below would set its retry time past
	// anything this test's clock reaches.
	eventually(t, "failed refresh", func() bool { return r.cache.get(name) != served })

	// Once the server is back, a background refresh replaces the stale answer.
	srv.Start()
	srv.Remove("web.test")
	srv.Add("web.test. 60 IN A 192.0.2.2")
	clock.Advance(2 * time.Second)
	eventually(t, "fresh answer", func() bool {
		got, err := r.LookupNetIP(context.Background(), "web.test")
		return err == nil && got[0] == netip.MustParseAddr("192.0.2.2")
	})

	// Past the stale window, the failure is returned.
	srv.Stop()
	clock.Advance(60*time.Second + 5*time.Minute + time.Second)
	if de := lookupDNSError(t, r, "web.test"); de.Err != "DNS servers unreachable" || !de.IsTemporary {
		t.Errorf("error = %#v, want servers unreachable", de)
	}
}

func TestResolverServeStaleDisabled(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("web.test. 60 IN A 192.0.2.1")
	r := newTestResolver(t, srv, WithDNSServeStale(0))
	clock := newFakeClock()
	r.clock = clock.Now

	mustLookup(t, r, "web.test", "192.0.2.1")
	srv.SetFault("", dnstest.FaultServFail)
	clock.Advance(61 * time.Second)
	if de := lookupDNSError(t, r, "web.test"); de.Err != "server failure" {
		t.Errorf("error = %#v, want server failure", de)
	}
	if s := r.Stats(); s.Stale != 0 {
		t.Errorf("Stats.Stale = %d", s.Stale)
	}
}

func TestResolverCallerDeadline(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("slow.test. 300 IN A 192.0.2.3")
	srv.SetDelay(300 * time.Millisecond)
	r := newTestResolver(t, srv, WithDNSTimeout(time.Second))

	patient := make(chan error, 1)
	go func() {
		_, err := r.LookupNetIP(context.Background(), "slow.test")
		patient <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupNetIP(ctx, "slow.test")
	if elapsed := time.Since(start); elapsed > 200*time.Millisecond {
		t.Errorf("hasty caller returned after %v", elapsed)
	}
	var de *net.DNSError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &de) || !de.IsTimeout {
		t.Errorf("hasty caller: err = %v, want a DNS timeout wrapping context.DeadlineExceeded", err)
	}
	if err := <-patient; err != nil {
		t.Errorf("patient caller: %v", err)
	}
	wantQueries(t, srv, "slow.test", 1, 1)
	mustLookup(t, r, "slow.test", "192.0.2.3")
}

func TestResolverHostsFile(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("pinned.test. 300 IN A 192.0.2.1", "other.test. 300 IN A 192.0.2.2")
	path := filepath.Join(t.TempDir(), "hosts")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	mtime := time.Now().Add(-time.Hour)
	write("# test\n10.0.0.1 pinned.test Alias.Test. # comment\n::1\tpinned.test\nbogus other.test\n", mtime)
	clock := newFakeClock()
	r := newTestResolver(t, srv, WithHostsFile(path))
	r.clock = clock.Now

	mustLookup(t, r, "pinned.test", "10.0.0.1", "::1")
	mustLookup(t, r, "PINNED.test.", "10.0.0.1", "::1")
	mustLookup(t, r, "alias.test", "10.0.0.1")
	mustLookup(t, r, "other.test", "192.0.2.2")
	wantQueries(t, srv, "pinned.test", 0, 0)

	write("10.0.0.9 pinned.test\n", mtime.Add(time.Minute))
	mustLookup(t, r, "pinned.test", "10.0.0.1", "::1") // not checked again yet
	clock.Advance(hostsCheckInterval + time.Second)
	mustLookup(t, r, "pinned.test", "10.0.0.9")
	if de := lookupDNSError(t, r, "alias.test"); !de.IsNotFound { // gone from the file and unknown to the server
		t.Errorf("alias.test: %v, want not found", de)
	}
	wantQueries(t, srv, "pinned.test", 0, 0)
}

func TestResolverIPLiterals(t *testing.T) {
	checkLeaks(t)
	// No server listens on the address: any query would fail.
	r := newTestResolver(t, nil, WithDNSServers(closedUDPAddr(t)))
	for _, tt := range []struct{ host, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"192.0.2.1.", "192.0.2.1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.1"},
		{"fe80::1%eth0", "fe80::1%eth0"},
	} {
		mustLookup(t, r, tt.host, tt.want)
	}
	for _, host := range []string{"", ".", "192.0.2", "[::1]", "::1:", "a..b", "a..", "-a.test", "a-.test", "a b.test", "ex\x00ample.test", string(make([]byte, 300))} {
		if de := lookupDNSError(t, r, host); !de.IsNotFound {
			t.Errorf("LookupNetIP(%q): error %#v, want not found", host, de)
		}
	}
	if s := r.Stats(); s.Misses != 0 || s.Errors != 0 {
		t.Errorf("Stats = %+v, want no misses or errors", s)
	}
}

// closedUDPAddr returns a loopback address where no UDP socket listens.
func closedUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestResolverFailover(t *testing.T) {
	tests := []struct {
		name  string
		first func(t *testing.T) string
	}{
		{"unreachable", closedUDPAddr},
		{"timeout", func(t *testing.T) string {
			s := dnstest.NewServer(t)
			s.SetFault("", dnstest.FaultDrop)
			return s.Addr()
		}},
		{"SERVFAIL", func(t *testing.T) string {
			s := dnstest.NewServer(t)
			s.SetFault("", dnstest.FaultServFail)
			return s.Addr()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			live := dnstest.NewServer(t)
			live.Add("web.test. 300 IN A 192.0.2.1")
			r := newTestResolver(t, nil, WithDNSServers(tt.first(t), live.Addr()), WithDNSTimeout(50*time.Millisecond))

			mustLookup(t, r, "web.test", "192.0.2.1")
			wantQueries(t, live, "web.test", 1, 1)
			if s := r.Stats(); s.Errors != 2 {
				t.Errorf("Stats.Errors = %d, want 2 (A and AAAA)", s.Errors)
			}
		})
	}
}

// rawResponder answers each UDP query with the reply of the live server,
// altered by mangle.
func rawResponder(t *testing.T, live string, mangle func(*dns.Msg)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := new(dns.Msg)
			if req.Unpack(buf[:n]) != nil {
				continue
			}
			resp, err := dns.Exchange(req, live)
			if err != nil {
				continue
			}
			mangle(resp)
			if out, err := resp.Pack(); err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestResolverRejectsMismatchedReply(t *testing.T) {
	tests := []struct {
		name   string
		mangle func(*dns.Msg)
	}{
		{"ID", func(m *dns.Msg) { m.Id++ }},
		{"name", func(m *dns.Msg) {
			m.Question[0].Name = "evil.test."
			for _, rr := range m.Answer {
				rr.Header().Name = "evil.test."
			}
		}},
		{"type", func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeMX }},
		{"class", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }},
		{"no question", func(m *dns.Msg) { m.Question = nil }},
		{"not a response", func(m *dns.Msg) { m.Response = false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			live := dnstest.NewServer(t)
			live.Add("web.test. 300 IN A 192.0.2.1")
			liar := dnstest.NewServer(t)
			liar.Add("web.test. 300 IN A 203.0.113.66")
			liar.Add("evil.test. 300 IN A 203.0.113.66")
			raw := rawResponder(t, liar.Addr(), tt.mangle)

			alone := newTestResolver(t, nil, WithDNSServers(raw), WithDNSTimeout(50*time.Millisecond))
			lookupDNSError(t, alone, "web.test")

			r := newTestResolver(t, nil, WithDNSServers(raw, live.Addr()), WithDNSTimeout(50*time.Millisecond))
			mustLookup(t, r, "web.test", "192.0.2.1")
		})
	}
}

func TestResolverPrefetch(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("hot.test. 100 IN A 192.0.2.1")
	r := newTestResolver(t, srv)
	clock := newFakeClock()
	r.clock = clock.Now

	mustLookup(t, r, "hot.test", "192.0.2.1")
	clock.Advance(80 * time.Second) // before the last tenth of the TTL
	mustLookup(t, r, "hot.test", "192.0.2.1")
	if s := r.Stats(); s.Prefetches != 0 {
		t.Fatalf("prefetch at 80%% of the TTL: %+v", s)
	}
	clock.Advance(11 * time.Second)
	for range 10 {
		mustLookup(t, r, "hot.test", "192.0.2.1")
	}
	eventually(t, "prefetch", func() bool {
		return r.cache.get("hot.test").expires > clock.Now()+90*time.Second
	})
	wantQueries(t, srv, "hot.test", 2, 2)
	clock.Advance(20 * time.Second) // past the first answer's expiry
	mustLookup(t, r, "hot.test", "192.0.2.1")
	wantQueries(t, srv, "hot.test", 2, 2)
	if s := r.Stats(); s.Prefetches != 1 || s.Misses != 1 || s.Hits != 12 {
		t.Errorf("Stats = %+v, want 1 prefetch, 1 miss, 12 hits", s)
	}
}

func TestResolverEviction(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("a.test. 300 IN A 192.0.2.1", "b.test. 300 IN A 192.0.2.2", "c.test. 300 IN A 192.0.2.3")
	r := newTestResolver(t, srv, WithDNSCacheSize(2))
	clock := newFakeClock()
	r.clock = clock.Now

	mustLookup(t, r, "a.test", "192.0.2.1")
	mustLookup(t, r, "b.test", "192.0.2.2")
	clock.Advance(2 * promoteInterval)
	mustLookup(t, r, "a.test", "192.0.2.1") // promoted: b.test is now the oldest
	mustLookup(t, r, "c.test", "192.0.2.3")
	if s := r.Stats(); s.Evictions != 1 {
		t.Fatalf("Stats.Evictions = %d, want 1", s.Evictions)
	}
	mustLookup(t, r, "a.test", "192.0.2.1")
	wantQueries(t, srv, "a.test", 1, 1)
	mustLookup(t, r, "b.test", "192.0.2.2")
	wantQueries(t, srv, "b.test", 2, 2)
}

func TestResolverClose(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("cached.test. 300 IN A 192.0.2.1", "slow.test. 300 IN A 192.0.2.2")
	r := newTestResolver(t, srv, WithDNSTimeout(5*time.Second))
	mustLookup(t, r, "cached.test", "192.0.2.1")
	srv.SetDelay(time.Minute)

	pending := make(chan error, 1)
	go func() {
		_, err := r.LookupNetIP(context.Background(), "slow.test")
		pending <- err
	}()
	eventually(t, "query", func() bool { return srv.Queries("slow.test", dns.TypeA) == 1 })
	start := time.Now()
	r.Close()
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Close took %v", elapsed)
	}
	if err := <-pending; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending lookup: %v, want net.ErrClosed", err)
	}
	if _, err := r.LookupNetIP(context.Background(), "other.test"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("lookup after Close: %v, want net.ErrClosed", err)
	}
	mustLookup(t, r, "cached.test", "192.0.2.1")
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewResolverOptions(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.com\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := []struct {
		name        string
		opts        []ResolverOption
		wantServers []string
	}{
		{"servers", []ResolverOption{WithDNSServers("192.0.2.1", "192.0.2.2:5353", "::1", "[::1]", "[2001:db8::1]:54")},
			[]string{"192.0.2.1:53", "192.0.2.2:5353", "[::1]:53", "[::1]:53", "[2001:db8::1]:54"}},
		{"resolv.conf", []ResolverOption{WithResolvConf(conf)}, []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		{"everything", []ResolverOption{WithDNSServers("192.0.2.1"), WithHostsFile(""), WithDNSCacheSize(1), WithDNSTTL(0, time.Second),
			WithDNSNegativeTTL(0), WithDNSErrorTTL(0), WithDNSServeStale(0), WithDNSTimeout(time.Millisecond), WithDNSPrefetch(false), nil}, []string{"192.0.2.1:53"}},
	}
	for _, tt := range valid {
		r, err := NewResolver(tt.opts...)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !slices.Equal(r.servers, tt.wantServers) {
			t.Errorf("%s: servers %v, want %v", tt.name, r.servers, tt.wantServers)
		}
		r.Close()
	}
	invalid := map[string]ResolverOption{
		"no servers":         WithDNSServers(),
		"host name":          WithDNSServers("dns.example.com"),
		"port 0":             WithDNSServers("192.0.2.1:0"),
		"bad port":           WithDNSServers("192.0.2.1:dns"),
		"brackets":           WithDNSServers("[192.0.2.1"),
		"missing resolvconf": WithResolvConf(filepath.Join(dir, "nope")),
		"empty resolvconf":   WithResolvConf(empty),
		"resolvconf path":    WithResolvConf(""),
		"hosts is a dir":     WithHostsFile(dir),
		"cache size":         WithDNSCacheSize(0),
		"TTL order":          WithDNSTTL(time.Hour, time.Second),
		"TTL negative":       WithDNSTTL(-1, time.Second),
		"TTL max zero":       WithDNSTTL(0, 0),
		"negative TTL":       WithDNSNegativeTTL(-1),
		"error TTL":          WithDNSErrorTTL(-1),
		"stale":              WithDNSServeStale(-1),
		"timeout":            WithDNSTimeout(0),
	}
	for name, opt := range invalid {
		if r, err := NewResolver(opt); err == nil {
			r.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		host, want string
		allocs     float64
	}{
		{"example.com", "example.com", 0},
		{"example.com.", "example.com", 0},
		{"a-b_c.example.com", "a-b_c.example.com", 0},
		{"Example.COM.", "example.com", 1},
	}
	for _, tt := range tests {
		var name string
		var kind hostKind
		allocs := testing.AllocsPerRun(100, func() { name, kind = normalizeHost(tt.host) })
		if name != tt.want || kind != hostName || allocs != tt.allocs {
			t.Errorf("normalizeHost(%q) = %q, %v with %v allocations; want %q, a name, %v allocations", tt.host, name, kind, allocs, tt.want, tt.allocs)
		}
	}
}

// TestNormalizeHostKinds: the one host-name rule (httpx.CheckHostname) and
// the resolver's own steps around it.
func TestNormalizeHostKinds(t *testing.T) {
	long := strings.Repeat("a.", 126) + "a" // 253 bytes
	tests := []struct {
		host, want string
		kind       hostKind
	}{
		{"::1", "::1", hostIP},
		{"fe80::1%eth0", "fe80::1%eth0", hostIP},
		{"192.0.2.1", "192.0.2.1", hostIP},
		{"192.0.2.1.", "192.0.2.1", hostIP},
		{"1-2.example", "1-2.example", hostName},
		{long + ".", long, hostName},
		{"", "", hostInvalid},
		{".", "", hostInvalid},
		{"a..b", "", hostInvalid},
		{"example.com..", "", hostInvalid},
		{long + "a", "", hostInvalid}, // 254 bytes
		{strings.Repeat("a", 64) + ".com", "", hostInvalid},
		{"-a.example", "", hostInvalid}, // Go's resolver: no '-' at a label's edge
		{"a-.example", "", hostInvalid},
		{"a.example-", "", hostInvalid},
		{"a.example-.", "", hostInvalid},
		{"exa mple.com", "", hostInvalid},
		{"\u212aelvin.example", "", hostInvalid},
		{"bücher.example", "", hostInvalid},
	}
	for _, tt := range tests {
		if name, kind := normalizeHost(tt.host); name != tt.want || kind != tt.kind {
			t.Errorf("normalizeHost(%q) = %q, %v; want %q, %v", tt.host, name, kind, tt.want, tt.kind)
		}
	}
}
