package redisstore

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Redis stopped during a steady load, then started again on the same port:
// no call waits past the timeout, the fallback decides while Redis is away,
// each replica logs the two state changes once, and once Redis is back the
// limits are shared again.
func TestRedisStoppedDuringLoad(t *testing.T) {
	r := startRedis(t)
	const timeout = 50 * time.Millisecond
	logs := &recordingHandler{}
	open := func() *Store {
		s, err := Open(r.url(), WithTimeout(timeout), WithProbeInterval(100*time.Millisecond), WithLogger(slog.New(logs)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	stores := []*Store{a, b}

	load := runLoad(t, stores)
	time.Sleep(300 * time.Millisecond)
	r.stop()
	stopped := time.Now()
	waitFor(t, 2*time.Second, "both replicas mark Redis down", func() bool { return !a.Up() && !b.Up() })
	t.Logf("both replicas marked Redis down %v after it stopped", time.Since(stopped).Round(time.Millisecond))

	// Down: the fallback decides, fail-open with the local limit.
	local := Rate{PerSecond: 0.001, Burst: 5}
	if n := countAllowed(t, []*Store{a}, "down-key", local, 10); n != 5 {
		t.Errorf("while Redis is down, a replica allowed %d of 10 for a burst of 5, want 5 (the local fallback)", n)
	}
	if _, ok, err := a.Acquire(context.Background(), "down-lease", 1, time.Second); !ok || err != nil {
		t.Errorf("fail-open Acquire while down: %v, %v", ok, err)
	}
	time.Sleep(500 * time.Millisecond)

	r.start() // the same port
	restarted := time.Now()
	waitFor(t, 2*time.Second, "both replicas see Redis back", func() bool { return a.Up() && b.Up() })
	t.Logf("both replicas saw Redis back %v after it restarted (probe every 100ms)", time.Since(restarted).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	res := load.stop()

	t.Logf("steady load: %d calls, max wait %v (timeout %v; scheduling delay up to %v), %d fallbacks",
		res.calls, res.max.Round(time.Microsecond), timeout, res.sched.Round(time.Microsecond), res.fallbacks)
	if res.max > timeout+res.slack() {
		t.Errorf("a call waited %v, past the timeout of %v and %v of slack", res.max, timeout, res.slack())
	}
	// Each replica went down and up once; on a starved machine a call may
	// also time out before the stop, and so count a brief outage more.
	var changes uint64
	for i, s := range stores {
		st := s.Stats()
		t.Logf("replica %d: %+v", i, st)
		changes += st.StateChanges
		if st.StateChanges < 2 || st.StateChanges%2 != 0 || st.Fallbacks == 0 || !st.Up {
			t.Errorf("replica %d: %+v; want down and up (2 state changes), fallbacks, up", i, st)
		}
	}
	var down, up int
	for _, m := range logs.messages() {
		switch {
		case strings.HasPrefix(m, "redis unreachable"):
			down++
		case strings.HasPrefix(m, "redis reachable again"):
			up++
		}
	}
	if down != up || uint64(down+up) != changes || len(logs.messages()) != down+up {
		t.Errorf("logged %d down and %d up transitions for %d state changes, want one line each: %q", down, up, changes, logs.messages())
	}

	// Shared again: a burst of 5 across both replicas.
	before := a.Stats().Fallbacks + b.Stats().Fallbacks
	if n := countAllowed(t, stores, "after-key", local, 10); n != 5 {
		t.Errorf("after Redis came back, both replicas allowed %d of 10 for a shared burst of 5", n)
	}
	if after := a.Stats().Fallbacks + b.Stats().Fallbacks; after != before {
		t.Errorf("%d fallbacks after Redis came back", after-before)
	}
}

// Redis stuck (the process stopped, its sockets open): calls time out at
// the timeout, Redis is marked down after the failure threshold, and no
// call waits past the timeout; resumed, it is used again.
func TestRedisStuck(t *testing.T) {
	r := startRedis(t)
	const timeout = 50 * time.Millisecond
	s, err := Open(r.url(), WithTimeout(timeout), WithProbeInterval(100*time.Millisecond), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	load := runLoad(t, []*Store{s})
	time.Sleep(200 * time.Millisecond)
	r.pause()
	waitFor(t, time.Second, "Redis marked down", func() bool { return !s.Up() })
	time.Sleep(300 * time.Millisecond)
	r.resume()
	waitFor(t, 2*time.Second, "Redis back", func() bool { return s.Up() })
	time.Sleep(200 * time.Millisecond)
	res := load.stop()
	st := s.Stats()
	t.Logf("stuck Redis: %d calls, max wait %v (timeout %v; scheduling delay up to %v); %+v",
		res.calls, res.max.Round(time.Microsecond), timeout, res.sched.Round(time.Microsecond), st)
	if st.Timeouts == 0 {
		t.Error("no timeouts counted")
	}
	if res.max > timeout+res.slack() {
		t.Errorf("a call waited %v, past the timeout of %v and %v of slack", res.max, timeout, res.slack())
	}
}

// Fail-closed policies refuse while Redis is unreachable.
func TestFailClosed(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r, WithFailurePolicy(RateLimits, FailClosed), WithFailurePolicy(Quotas, FailClosed),
		WithFailurePolicy(Leases, FailClosed), WithProbeInterval(time.Hour), WithFailureThreshold(1))
	r.stop()
	ctx := context.Background()
	d, err := s.Allow(ctx, "k", Rate{PerSecond: 1000, Burst: 1000})
	if err != nil || d.Allowed || d.RetryAfter != time.Hour {
		t.Errorf("fail-closed Allow: %+v, %v; want denied, retry after the probe interval", d, err)
	}
	if n, retry, err := s.Take(ctx, "k", Rate{PerSecond: 1000, Burst: 1000}, 100); err != nil || n != 0 || retry != time.Hour {
		t.Errorf("fail-closed Take: %d, %v, %v; want none, retry after the probe interval", n, retry, err)
	}
	if used, _, err := s.AddBytes(ctx, "k", 1, time.Hour); err != nil || used != math.MaxInt64 {
		t.Errorf("fail-closed AddBytes: %d, %v; want MaxInt64", used, err)
	}
	if _, ok, err := s.Acquire(ctx, "k", 1000, time.Second); err != nil || ok {
		t.Errorf("fail-closed Acquire: %v, %v; want no lease", ok, err)
	}
	if err := s.Renew(ctx, "k", "id", time.Second); err == nil {
		t.Error("Renew with Redis down succeeded")
	}
	if _, ok := s.Get(ctx, "example.com"); ok {
		t.Error("Get with Redis down hit")
	}
	if c, unlock, err := s.LockMint(ctx, "example.com", time.Second); c != nil || unlock == nil || err != nil {
		t.Errorf("LockMint with Redis down: %v, %v; want the caller to mint", c, err)
	} else {
		unlock()
	}
}

// Fail-open quotas count locally while Redis is down, on top of the usage
// last seen, and add those bytes in Redis once it is back.
func TestQuotaFallbackCatchesUp(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r, WithTimeout(50*time.Millisecond), WithProbeInterval(50*time.Millisecond), WithFailureThreshold(1), WithLocalShare(0.5))
	ctx := context.Background()
	if used, _, _ := s.AddBytes(ctx, "k", 1000, time.Hour); used != 1000 {
		t.Fatalf("used %d", used)
	}
	r.stop()
	used, _, err := s.AddBytes(ctx, "k", 100, time.Hour)
	if err != nil || used != 1000+200 {
		t.Errorf("AddBytes while down: %d, %v; want 1000 + 100/0.5", used, err)
	}
	r.start()
	waitFor(t, 2*time.Second, "Redis back", s.Up)
	// Redis restarted empty: it gets the 100 bytes counted while it was
	// down with the next add.
	if used, _, _ := s.AddBytes(ctx, "k", 1, time.Hour); used != 101 {
		t.Errorf("after Redis came back: %d, want 101 (the bytes counted while down, then this one)", used)
	}
}

type loadResult struct {
	calls, fallbacks int64
	max              time.Duration // the longest call
	sched            time.Duration // the longest a 1 ms sleep overslept: the machine's scheduling delay
}

// slack is what a call may take past the timeout: 20 ms, plus the
// scheduling delay measured meanwhile (these tests share two cores with the
// race detector and whatever else runs).
func (r loadResult) slack() time.Duration { return 20*time.Millisecond + r.sched }

type loadRun struct {
	stop func() loadResult
}

// runLoad calls Allow, AddBytes and Acquire/Release on every store from two
// goroutines each, about once a millisecond, and measures the longest call.
func runLoad(t *testing.T, stores []*Store) loadRun {
	var done atomic.Bool
	var calls atomic.Int64
	var maxNS, schedNS atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !done.Load() {
			start := time.Now()
			time.Sleep(time.Millisecond)
			if d := int64(time.Since(start) - time.Millisecond); d > schedNS.Load() {
				schedNS.Store(d)
			}
		}
	})
	ctx := context.Background()
	timed := func(f func()) {
		start := time.Now()
		f()
		d := int64(time.Since(start))
		calls.Add(1)
		for {
			m := maxNS.Load()
			if d <= m || maxNS.CompareAndSwap(m, d) {
				break
			}
		}
	}
	for i := range 2 * len(stores) {
		s := stores[i%len(stores)]
		wg.Go(func() {
			for !done.Load() {
				timed(func() {
					if _, err := s.Allow(ctx, "steady", Rate{PerSecond: 1e4, Burst: 100}); err != nil {
						t.Error(err)
					}
				})
				timed(func() {
					if _, _, err := s.AddBytes(ctx, "steady", 100, time.Hour); err != nil {
						t.Error(err)
					}
				})
				var id string
				var ok bool
				timed(func() {
					var err error
					if id, ok, err = s.Acquire(ctx, "steady", 100, time.Second); err != nil {
						t.Error(err)
					}
				})
				if ok {
					timed(func() { _ = s.Release(ctx, "steady", id) })
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return loadRun{stop: func() loadResult {
		done.Store(true)
		wg.Wait()
		var fb uint64
		for _, s := range stores {
			fb += s.Stats().Fallbacks
		}
		return loadResult{calls: calls.Load(), fallbacks: int64(fb), max: time.Duration(maxNS.Load()), sched: time.Duration(schedNS.Load())}
	}}
}

// countAllowed makes n Allow calls for key, alternating between stores,
// and returns how many were allowed.
func countAllowed(t *testing.T, stores []*Store, key string, r Rate, n int) int {
	t.Helper()
	allowed := 0
	for i := range n {
		d, err := stores[i%len(stores)].Allow(context.Background(), key, r)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	return allowed
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
