package redisstore

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// Two (or more) fwdproxy replicas sharing one Redis through a Store each,
// as the example server runs them with -redis: what one replica counts,
// the other enforces.

// replica is one fwdproxy Proxy on its own Store, served on loopback.
type replica struct {
	p     *fwdproxy.Proxy
	addr  string
	store *Store
}

var aliceAuth = fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{"alice": "a", "bob": "b"}))

// startReplica starts a Proxy with its own Store on r (storeOpts) and opts,
// authenticating alice and bob, open to loopback.
func startReplica(t *testing.T, r *redisServer, storeOpts []Option, opts ...fwdproxy.Option) *replica {
	t.Helper()
	s := openStore(t, r, storeOpts...)
	all := []fwdproxy.Option{fwdproxy.WithLogger(discardLogger()), fwdproxy.WithAllowPrivate(), aliceAuth, fwdproxy.WithSharedState(s)}
	p, err := fwdproxy.New(append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{p: p, addr: proxytest.Serve(t, p), store: s}
}

// client returns an HTTP client that sends its requests through rp as user.
func (rp *replica) client(t *testing.T, user string) *http.Client {
	return proxytest.Client(t, &url.URL{Scheme: "http", Host: rp.addr, User: url.UserPassword(user, user[:1])}, nil)
}

// tunnel opens a CONNECT tunnel through rp as user and returns it with the
// status (nil for a refusal).
func (rp *replica) tunnel(t *testing.T, user, target string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, br := proxytest.RawConn(t, rp.addr)
	auth := "Basic " + basicOf(user)
	proxytest.MustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+auth+"\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		c.Close()
		return nil, nil, resp.StatusCode
	}
	return c, br, 200
}

func basicOf(user string) string {
	u := &url.URL{User: url.UserPassword(user, user[:1])}
	r := &http.Request{Header: http.Header{}}
	p, _ := u.User.Password()
	r.SetBasicAuth(u.User.Username(), p)
	return r.Header.Get("Authorization")[len("Basic "):]
}

func portOf(t *testing.T, addr string) uint16 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// TestReplicasShareRateLimit: alice's limit of 100 requests per 10 s (a
// burst of 100, 10 a second) holds across two replicas taking her requests
// in turn, within the few that the rate adds while the test runs, at one
// Redis round trip per request.
func TestReplicasShareRateLimit(t *testing.T) {
	r := startRedis(t)
	o := proxytest.Origin(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	pol := fwdproxy.WithPolicies(fwdproxy.Policy{Name: "limited", Users: []string{"alice"}, Rate: fwdproxy.Rate{PerSecond: 10, Burst: 100}})
	a, b := startReplica(t, r, nil, pol), startReplica(t, r, nil, pol)
	clients := []*http.Client{a.client(t, "alice"), b.client(t, "alice")}
	trips := func() uint64 { return a.store.Stats().RoundTrips + b.store.Stats().RoundTrips }
	before := trips()
	start := time.Now()
	const n = 200
	allowed := 0
	for i := range n {
		resp, err := clients[i%2].Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			allowed++
		case 429:
			if ra := resp.Header.Get("Retry-After"); ra == "" {
				t.Error("a 429 without Retry-After")
			}
		default:
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	elapsed := time.Since(start)
	rt := trips() - before
	most := 100 + int(elapsed.Seconds()*10) + 2
	t.Logf("%d of %d requests allowed across two replicas in %v (at most %d); %d Redis round trips, %.2f per request",
		allowed, n, elapsed.Round(time.Millisecond), most, rt, float64(rt)/n)
	if allowed < 100 || allowed > most {
		t.Errorf("%d allowed, want 100..%d", allowed, most)
	}
	if rt > n {
		t.Errorf("%d round trips for %d requests, want at most one each", rt, n)
	}
}

// TestReplicasShareBatchedRateLimit: at 100 a second (burst 100) each
// replica takes the limit's events in batches of 10 (100 ms of the rate)
// and spends them without Redis; under load from both replicas for about
// a second, the two together admit what the rate and burst allow within
// the documented bound (one batch per replica either way), in far fewer
// Redis round trips than requests.
func TestReplicasShareBatchedRateLimit(t *testing.T) {
	r := startRedis(t)
	o := proxytest.Origin(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	rate := fwdproxy.Rate{PerSecond: 100, Burst: 100}
	const k = 10 // RateBatchWindow (100 ms) at 100 a second
	pol := fwdproxy.WithPolicies(fwdproxy.Policy{Name: "limited", Users: []string{"alice"}, Rate: rate})
	a, b := startReplica(t, r, nil, pol), startReplica(t, r, nil, pol)
	trips := func() uint64 { return a.store.Stats().RoundTrips + b.store.Stats().RoundTrips }
	before := trips()
	var allowed, refused, noRetry atomic.Int64
	start := time.Now()
	stop := start.Add(time.Second)
	var wg sync.WaitGroup
	for i := range 8 {
		c := []*replica{a, b}[i%2].client(t, "alice")
		wg.Go(func() {
			for time.Now().Before(stop) {
				resp, err := c.Get(o.URL)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					allowed.Add(1)
				case 429:
					refused.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						noRetry.Add(1)
					}
				default:
					t.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	n := allowed.Load() + refused.Load()
	rt := trips() - before
	ideal := 100 + elapsed.Seconds()*rate.PerSecond
	t.Logf("%d of %d requests allowed across two replicas in %v (the limit alone: %.0f); %d Redis round trips, %.3f per request",
		allowed.Load(), n, elapsed.Round(time.Millisecond), ideal, rt, float64(rt)/float64(n))
	// Upper bound: no replica spends more than it took, and the batches
	// start empty. Lower bound: at most a batch per replica left unspent.
	if got := float64(allowed.Load()); got > ideal+2 || got < ideal-2*k-10 {
		t.Errorf("%d allowed, want %.0f..%.0f", allowed.Load(), ideal-2*k-10, ideal+2)
	}
	if noRetry.Load() > 0 {
		t.Errorf("%d refusals without Retry-After", noRetry.Load())
	}
	if n < 400 || rt*4 > uint64(n) {
		t.Errorf("%d round trips for %d requests, want at most a quarter (and at least 400 requests)", rt, n)
	}
}

// countingStore counts the certificates Put (each one minted), and is a
// CertLocker through the Store it wraps.
type countingStore struct {
	*Store
	puts atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, host string, cert *tls.Certificate) {
	c.puts.Add(1)
	c.Store.Put(ctx, host, cert)
}

// TestReplicasShareCertificates: a certificate minted by one replica is
// served by the other (same serial), and 50 concurrent first requests for
// one host across both mint once.
func TestReplicasShareCertificates(t *testing.T) {
	r := startRedis(t)
	ca, caRoots := proxytest.NewCA(t)
	o, originRoots := proxytest.TLSOrigin(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	port := portOf(t, o.Listener.Addr().String())
	ds := dnstest.NewServer(t)
	ds.Add("one.test. 60 IN A 127.0.0.1")
	ds.Add("many.test. 60 IN A 127.0.0.1")
	var stores []*countingStore
	var reps []*replica
	for range 2 {
		cs := &countingStore{Store: openStore(t, r)}
		stores = append(stores, cs)
		reps = append(reps, startReplica(t, r, nil, fwdproxy.WithInterception(ca, fwdproxy.WithCertStore(cs)),
			fwdproxy.WithUpstreamRootCAs(originRoots), fwdproxy.WithDNSServers(ds.Addr()), fwdproxy.WithAllowPorts(port)))
	}
	serial := func(rp *replica, host string) string {
		c, br, status := rp.tunnel(t, "alice", host+":"+strconv.Itoa(int(port)))
		if status != 200 {
			t.Errorf("CONNECT %s: %d", host, status)
			return ""
		}
		defer c.Close()
		_ = br // nothing is read ahead of the TLS handshake: the proxy waits for the ClientHello
		tc := tls.Client(c, &tls.Config{RootCAs: caRoots, ServerName: host})
		if err := tc.Handshake(); err != nil {
			t.Errorf("TLS through the replica: %v", err)
			return ""
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	puts := func() int64 { return stores[0].puts.Load() + stores[1].puts.Load() }
	s1, s2 := serial(reps[0], "one.test"), serial(reps[1], "one.test")
	if s1 == "" || s1 != s2 {
		t.Errorf("serials %s (minted by the first replica) and %s (served by the second), want the same", s1, s2)
	}
	if n := puts(); n != 1 {
		t.Errorf("%d certificates stored for one.test, want 1", n)
	}

	var wg sync.WaitGroup
	serials := make([]string, 50)
	for i := range serials {
		wg.Go(func() { serials[i] = serial(reps[i%2], "many.test") })
	}
	wg.Wait()
	for i, s := range serials {
		if s == "" || s != serials[0] {
			t.Errorf("request %d saw serial %q, request 0 %q", i, s, serials[0])
		}
	}
	if n := puts(); n != 2 {
		t.Errorf("%d certificates minted for many.test by 50 concurrent first requests across two replicas, want 1", n-1)
	}
}

// TestReplicasShareTunnelQuota: alice's 10 concurrent tunnels hold across
// two replicas; closing one frees a place on either.
func TestReplicasShareTunnelQuota(t *testing.T) {
	r := startRedis(t)
	echo := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	opts := []fwdproxy.Option{fwdproxy.WithAllowPorts(portOf(t, echo)),
		fwdproxy.WithPolicies(fwdproxy.Policy{Name: "ten", Users: []string{"alice"}, MaxTunnels: 10})}
	reps := []*replica{startReplica(t, r, nil, opts...), startReplica(t, r, nil, opts...)}
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range 10 {
		c, _, status := reps[i%2].tunnel(t, "alice", echo)
		if status != 200 {
			t.Fatalf("tunnel %d: %d", i+1, status)
		}
		open = append(open, c)
	}
	for i, rp := range reps {
		if _, _, status := rp.tunnel(t, "alice", echo); status != 429 {
			t.Errorf("an 11th tunnel on replica %d: %d, want 429", i+1, status)
		}
	}
	if _, _, status := reps[0].tunnel(t, "bob", echo); status != 200 {
		t.Errorf("bob's tunnel: %d", status)
	}
	open[0].Close() // on the first replica
	open = open[1:]
	var c net.Conn
	deadline := time.Now().Add(5 * time.Second)
	for c == nil && time.Now().Before(deadline) {
		var status int
		if c, _, status = reps[1].tunnel(t, "alice", echo); status != 200 && status != 429 {
			t.Fatalf("after closing one: %d", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c == nil {
		t.Fatal("no tunnel on the second replica after one closed on the first")
	}
	open = append(open, c)
}

func proxytestEcho(t *testing.T) string {
	return proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
}
