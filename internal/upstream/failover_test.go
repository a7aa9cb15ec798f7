package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialVia is the caller's failover loop for a tunnel, as the proxy is to
// run it: the pool's order, the next upstream while MayRetry allows, the
// request counted on the upstream that serves it.
func dialVia(ctx context.Context, p *Pool, target string) (net.Conn, *Upstream, error) {
	host, _, _ := net.SplitHostPort(target)
	var last error
	for i, u := range p.Pick(host) {
		if i == 3 {
			break // a cap on attempts
		}
		c, err := u.DialTunnel(ctx, target)
		if err == nil {
			u.Begin()
			return c, u, nil
		}
		last = err
		if !MayRetry(http.MethodConnect, nil, true, false) {
			break
		}
	}
	return nil, nil, last
}

// TestFailoverUnderLoad kills one of three upstreams in the middle of a
// steady load of tunnels: no tunnel fails, the dead upstream is marked
// down at its first failure, and it is back in service soon after it
// returns.
func TestFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	origin := echoServer(t)
	type proxy struct {
		h   *proxyHandler
		srv *httptest.Server
	}
	var proxies [3]*proxy
	var ups []*Upstream
	backoff := WithBackoff(Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.2})
	for i := range proxies {
		srv, h := startHTTPProxy(t, "", "")
		proxies[i] = &proxy{h, srv}
		ups = append(ups, MustParse(srv.URL, backoff))
	}
	pool, err := NewPool(RoundRobin, ups...)
	if err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var ok, failed, cut atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, u, err := dialVia(ctx, pool, origin)
				cancel()
				if err != nil {
					failed.Add(1)
					t.Errorf("a tunnel failed: %v", err)
					continue
				}
				if echoed(c) {
					ok.Add(1)
				} else {
					cut.Add(1) // an established tunnel through the upstream killed
				}
				c.Close()
				u.End()
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	waitFor := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				t.Fatalf("%s: not within %v; %+v", what, limit, pool.Stats())
			}
			time.Sleep(time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("load running", 5*time.Second, func() bool { return ok.Load() > 50 })

	// Kill up1: no more accepts, its tunnels cut.
	dead := proxies[1]
	addr := dead.srv.Listener.Addr().String()
	dead.srv.Listener.Close()
	dead.srv.CloseClientConnections()
	dead.h.close()
	took := waitFor("marked down", time.Second, func() bool { return !ups[1].Up() })
	t.Logf("marked down %v after the kill", took)
	before := ok.Load()
	waitFor("load going on without it", 5*time.Second, func() bool { return ok.Load() > before+100 })

	// Bring it back on the same address.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	h := newProxyHandler("", "")
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(func() { srv.Close(); h.close() })
	served := ups[1].Stats().Successes
	took = waitFor("back in service", 5*time.Second, func() bool {
		return ups[1].Up() && ups[1].Stats().Successes > served+10
	})
	t.Logf("back in service %v after it returned; %d tunnels, %d failed to open, %d cut by the kill", took, ok.Load(), failed.Load(), cut.Load())
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d tunnels failed", failed.Load())
	}
	if s := ups[1].Stats(); s.Failures == 0 || s.LastError == "" {
		t.Fatalf("the dead upstream's stats: %+v", s)
	}
}

// echoed reports whether a line sent through c comes back.
func echoed(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "ping\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return false
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return err == nil && string(got) == msg
}
