package fwdproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// viaOrigin answers each request with the Via it was sent, which names
// the upstream fwdproxy that forwarded it.
func viaOrigin(t testing.TB) string {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header.Values("Via"), ", "))
	})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	return port
}

// hopOf returns which of names a Via value names.
func hopOf(via string, names []string) string {
	for _, n := range names {
		if strings.Contains(via, n) {
			return n
		}
	}
	return "none: " + via
}

// balanceEnv is a first proxy with a route over three upstream fwdproxies
// by policy, and names h0.test … h19.test resolving to the loopback
// origin for both hops.
type balanceEnv struct {
	tp    *testProxy
	port  string
	names []string
}

func newBalanceEnv(t *testing.T, policy string) *balanceEnv {
	ds := dnstest.NewServer(t)
	for i := range 20 {
		ds.Add(fmt.Sprintf("h%d.test. 60 IN A 127.0.0.1", i))
	}
	e := &balanceEnv{port: viaOrigin(t), names: []string{"bal-a", "bal-b", "bal-c"}}
	var specs []string
	for _, n := range e.names {
		up := upstreamFwdproxy(t, n, WithDNSServers(ds.Addr()))
		specs = append(specs, "http://"+chainUser+":"+chainPass+"@"+up.Addr)
	}
	e.tp = startProxy(t, WithDNSServers(ds.Addr()), WithUpstreams(Route{Upstreams: specs, Policy: policy}))
	return e
}

// get sends a GET for host through the first proxy and returns the hop
// that forwarded it.
func (e *balanceEnv) get(t *testing.T, c *http.Client, host string) string {
	t.Helper()
	hop, err := e.tryGet(c, host)
	if err != nil {
		t.Fatal(err)
	}
	return hop
}

// tryGet is get for a goroutine other than the test's: it returns the
// failure instead of ending the test.
func (e *balanceEnv) tryGet(c *http.Client, host string) (string, error) {
	resp, err := c.Get("http://" + host + ":" + e.port + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %d %q", host, resp.StatusCode, b)
	}
	return hopOf(string(b), e.names), nil
}

// TestConsistentHash: with consistent hashing each of 20 hosts keeps one
// upstream over 1,000 requests, and the hosts spread over all three.
func TestConsistentHash(t *testing.T) {
	e := newBalanceEnv(t, "consistent-hash")
	c := e.tp.client(t, nil)
	exit := map[string]string{}
	used := map[string]int{}
	for i := range 1000 {
		host := fmt.Sprintf("h%d.test", i%20)
		hop := e.get(t, c, host)
		if prev, ok := exit[host]; ok && prev != hop {
			t.Fatalf("request %d: %s went through %s, before through %s", i, host, hop, prev)
		}
		exit[host] = hop
		used[hop]++
	}
	if len(used) != 3 {
		t.Errorf("20 hosts used %v; want all three upstreams", used)
	}
}

// TestRoundRobin: round robin spreads 999 requests over three upstreams
// within ±10 % of a third each, from concurrent clients too.
func TestRoundRobin(t *testing.T) {
	e := newBalanceEnv(t, "round-robin")
	var mu sync.Mutex
	used := map[string]int{}
	var wg sync.WaitGroup
	for w := range 3 {
		c := e.tp.client(t, nil)
		wg.Go(func() {
			for i := range 333 {
				hop, err := e.tryGet(c, fmt.Sprintf("h%d.test", (w+i)%20))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				used[hop]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, n := range e.names {
		if got := used[n]; got < 300 || got > 366 {
			t.Errorf("round robin: %v; want each of %v within 333±10%%", used, e.names)
			break
		}
	}
}

// TestLeastOutstanding: least outstanding sends a new tunnel to the
// upstream with the fewest open: with two tunnels held open through
// each of two upstreams, the next two go to the third.
func TestLeastOutstanding(t *testing.T) {
	e := newBalanceEnv(t, "least-outstanding")
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	count := func() map[string]int64 {
		m := map[string]int64{}
		for _, s := range e.tp.Stats().Upstreams {
			m[s.Name] = s.Outstanding
		}
		return m
	}
	var open []net.Conn
	for range 6 {
		c, br := e.tp.connect(t, echoAddr, "")
		echoThrough(t, c, br)
		open = append(open, c)
	}
	for name, n := range count() {
		if n != 2 {
			t.Errorf("after 6 tunnels: %s has %d open, want 2 each: %v", name, n, count())
		}
	}
	for _, c := range open {
		c.Close()
	}
	eventually(t, "no tunnel outstanding once closed", func() bool {
		for _, n := range count() {
			if n != 0 {
				return false
			}
		}
		return true
	})
}

// TestReloadRoutesUnderLoad: routes change live under a steady load of
// GETs and tunnels, twenty times between two upstreams and DIRECT,
// without a failed request; an upstream that stays in the routes keeps
// its *Upstream, and so its health and counters, across the reloads.
func TestReloadRoutesUnderLoad(t *testing.T) {
	o := newChainOrigin(t)
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	a := upstreamFwdproxy(t, "reload-a")
	b := upstreamFwdproxy(t, "reload-b")
	spec := func(up *testProxy) string { return "http://" + chainUser + ":" + chainPass + "@" + up.Addr }
	configs := [][]Option{
		{WithUpstreams(Route{Upstreams: []string{spec(a)}})},
		{WithUpstreams(Route{Upstreams: []string{spec(a), spec(b)}, Policy: "round-robin"})},
		{WithUpstreams(Route{Upstreams: []string{spec(b)}})},
		{},
		{WithUpstreams(Route{Ports: []uint16{1}, Upstreams: []string{spec(a)}}, Route{Upstreams: []string{spec(b), "DIRECT"}}), WithUpstreamProbe(20*time.Millisecond, "")},
	}
	base := []Option{WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort()}
	tp := startProxy(t, configs[0]...)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for range 4 {
		c := tp.client(t, nil)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(o.URL + "/r")
				if err != nil {
					fail(err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "got /r" {
					fail(fmt.Errorf("%d %q", resp.StatusCode, b))
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := tryConnect(tp.Addr, echoAddr); err != nil {
				fail(err)
				continue
			}
			ok.Add(1)
		}
	})
	kept := 0
	for i := range 20 {
		time.Sleep(30 * time.Millisecond)
		before := tp.cfg.Load().routing
		if err := tp.Reload(append(base, configs[(i+1)%len(configs)]...)...); err != nil {
			t.Error(err)
			break
		}
		if rt := tp.cfg.Load().routing; rt != nil && before != nil {
			for j, u := range rt.ups {
				if old := before.find(rt.keys[j]); old != nil {
					kept++
					if old != u {
						t.Errorf("reload %d made a new *Upstream for %s, whose spec did not change", i, u.Name())
					}
				}
			}
		}
	}
	close(stop)
	wg.Wait()
	if kept == 0 {
		t.Error("no reload kept an upstream")
	}
	if n := failed.Load(); n > 0 || ok.Load() < 100 {
		t.Errorf("%d requests and tunnels, %d failed; the first: %v", ok.Load(), n, firstErr.Load())
	}
}

// tryConnect opens a tunnel through the proxy at proxyAddr to an echo
// server at target and checks one round trip, reporting what failed.
func tryConnect(proxyAddr, target string) error {
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nping\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "ping\n" {
		return fmt.Errorf("echo through the tunnel: %q, %v", line, err)
	}
	return nil
}
