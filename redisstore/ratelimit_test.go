package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Two replicas sharing one Redis: a limit of 100 requests per 10 s for one
// key holds across both. The GCRA allows the burst of 100 at once, then one
// request every 100 ms; hammered from both for about a second, the two
// together allow 100 plus the elapsed time's share, within a few.
func TestRateLimitSharedAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	rate := Rate{PerSecond: 10, Burst: 100} // 100 per 10 s
	ctx := context.Background()

	before := r.commandCalls()
	tripsBefore := a.Stats().RoundTrips + b.Stats().RoundTrips
	var allowed, denied, calls atomic.Int64
	var badRetry atomic.Int64
	start := time.Now()
	stop := start.Add(time.Second)
	var wg sync.WaitGroup
	for i := range 8 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for time.Now().Before(stop) {
				d, err := s.Allow(ctx, "user:alice", rate)
				calls.Add(1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				} else {
					denied.Add(1)
					if d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond {
						badRetry.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	want := 100 + int64(elapsed.Seconds()*rate.PerSecond)
	t.Logf("%d calls in %v from 2 replicas: %d allowed (expected about %d), %d denied", calls.Load(), elapsed.Round(time.Millisecond), allowed.Load(), want, denied.Load())
	if got := allowed.Load(); got < 100 || got > want+2 {
		t.Errorf("allowed %d across both replicas, want 100..%d", got, want+2)
	}
	if badRetry.Load() > 0 {
		t.Errorf("%d denials with a RetryAfter outside (0, 100ms]", badRetry.Load())
	}

	// One round trip per decision: counted by the client hook and by Redis.
	trips := a.Stats().RoundTrips + b.Stats().RoundTrips - tripsBefore
	after := r.commandCalls()
	evalsha := after["evalsha"] - before["evalsha"]
	evals := after["eval"] - before["eval"]
	perCall := float64(trips) / float64(calls.Load())
	t.Logf("round trips per Allow: %.3f (client hook: %d trips for %d calls; Redis: %d EVALSHA, %d EVAL)", perCall, trips, calls.Load(), evalsha, evals)
	if perCall > 1 {
		t.Errorf("%.3f round trips per Allow, want ≤ 1", perCall)
	}
	if int64(evalsha+evals) != calls.Load() {
		t.Errorf("Redis ran %d scripts for %d Allow calls", evalsha+evals, calls.Load())
	}
	for _, s := range []*Store{a, b} {
		if st := s.Stats(); st.Errors != 0 || st.Fallbacks != 0 || !st.Up {
			t.Errorf("stats %+v, want no errors or fallbacks, up", st)
		}
	}
}

func TestAllowRemainingAndRetryAfter(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	rate := Rate{PerSecond: 2, Burst: 3}
	for i := range 3 {
		d, err := s.Allow(ctx, "k", rate)
		if err != nil || !d.Allowed || d.Remaining != 2-i {
			t.Fatalf("call %d: %+v, %v; want allowed with %d remaining", i, d, err, 2-i)
		}
	}
	d, err := s.Allow(ctx, "k", rate)
	if err != nil || d.Allowed || d.RetryAfter <= 400*time.Millisecond || d.RetryAfter > 500*time.Millisecond {
		t.Fatalf("4th call: %+v, %v; want denied, retry after about 500ms", d, err)
	}
	time.Sleep(d.RetryAfter)
	if d, err := s.Allow(ctx, "k", rate); err != nil || !d.Allowed {
		t.Fatalf("after RetryAfter: %+v, %v; want allowed", d, err)
	}
	if _, err := s.Allow(ctx, "k", Rate{PerSecond: 0, Burst: 1}); err == nil {
		t.Error("a zero rate was accepted")
	}
	if _, err := s.Allow(ctx, "k", Rate{PerSecond: 1, Burst: 0}); err == nil {
		t.Error("a zero burst was accepted")
	}
}

// AllowMany decides several limits in one round trip.
func TestAllowManyPipelined(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	limits := []Limit{
		{"user:bob", Rate{PerSecond: 1, Burst: 1}},
		{"ip:192.0.2.1", Rate{PerSecond: 1, Burst: 5}},
		{"global", Rate{PerSecond: 1000, Burst: 1000}},
	}
	trips := s.Stats().RoundTrips
	ds, err := s.AllowMany(ctx, limits...)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().RoundTrips - trips; n != 1 {
		t.Errorf("AllowMany of 3 took %d round trips, want 1", n)
	}
	for i, d := range ds {
		if !d.Allowed {
			t.Errorf("limit %d: %+v, want allowed", i, d)
		}
	}
	ds, err = s.AllowMany(ctx, limits...)
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Allowed || !ds[1].Allowed || ds[1].Remaining != 3 || !ds[2].Allowed {
		t.Errorf("second AllowMany: %+v; want the first denied, the others allowed", ds)
	}
}

// Redis lost its scripts (SCRIPT FLUSH, or a restart the Store has not
// noticed): the next call runs the script with EVAL and succeeds.
func TestNoScriptFallsBackToEval(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	if _, err := r.cli("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	d, err := s.Allow(ctx, "k", Rate{PerSecond: 1, Burst: 1})
	if err != nil || !d.Allowed {
		t.Fatalf("Allow after SCRIPT FLUSH: %+v, %v", d, err)
	}
	if _, err := r.cli("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	ds, err := s.AllowMany(ctx, Limit{"k", Rate{PerSecond: 1, Burst: 1}}, Limit{"k2", Rate{PerSecond: 1, Burst: 1}})
	if err != nil || ds[0].Allowed || !ds[1].Allowed {
		t.Fatalf("AllowMany after SCRIPT FLUSH: %+v, %v", ds, err)
	}
	if st := s.Stats(); st.Fallbacks != 0 || st.Errors != 0 {
		t.Errorf("stats %+v, want no fallbacks or errors", st)
	}
}

// Take takes several events of a limit at once, on the same GCRA as Allow:
// as many as the burst allows, then none with the time to retry; after a
// SCRIPT FLUSH it runs with EVAL; while Redis is down, fail-open takes from
// the local limit.
func TestTake(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	rate := Rate{PerSecond: 1, Burst: 10}
	trips := s.Stats().RoundTrips
	for i, want := range []int{4, 4, 2} {
		n, retry, err := s.Take(ctx, "k", rate, 4)
		// A second passing adds one event: allow it on the last.
		if err != nil || retry != 0 || n < want || n > want+i/2 {
			t.Fatalf("take %d of 4: %d, %v, %v; want %d", i+1, n, retry, err, want)
		}
	}
	if n := s.Stats().RoundTrips - trips; n != 3 {
		t.Errorf("3 takes in %d round trips, want 3", n)
	}
	if d, err := s.Allow(ctx, "k", rate); err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
		t.Errorf("Allow after the burst was taken: %+v, %v; want denied within 1s", d, err)
	}
	n, retry, err := s.Take(ctx, "k", rate, 5)
	if err != nil || n != 0 || retry <= 0 || retry > time.Second {
		t.Fatalf("take of an empty limit: %d, %v, %v; want none, retry within 1s", n, retry, err)
	}
	time.Sleep(retry)
	if n, _, err := s.Take(ctx, "k", rate, 5); err != nil || n != 1 {
		t.Errorf("take after the retry time: %d, %v; want 1", n, err)
	}
	// A limit of its own, after SCRIPT FLUSH: EVAL.
	if _, err := r.cli("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	if n, _, err := s.Take(ctx, "k2", Rate{PerSecond: 100, Burst: 50}, 80); err != nil || n != 50 {
		t.Errorf("take 80 of a burst of 50 after SCRIPT FLUSH: %d, %v; want 50", n, err)
	}
	if _, _, err := s.Take(ctx, "k", rate, 0); err == nil {
		t.Error("a take of 0 events was accepted")
	}
	if _, _, err := s.Take(ctx, "k", Rate{PerSecond: 0, Burst: 1}, 1); err == nil {
		t.Error("a zero rate was accepted")
	}
	if st := s.Stats(); st.Fallbacks != 0 || st.Errors != 0 {
		t.Errorf("stats %+v, want no fallbacks or errors", st)
	}
	// Redis down, fail-open: the local limit (share 1) grants its burst.
	down := openStore(t, r, WithFailureThreshold(1), WithProbeInterval(time.Hour))
	r.stop()
	if n, _, err := down.Take(ctx, "k3", Rate{PerSecond: 1, Burst: 6}, 4); err != nil || n != 4 {
		t.Errorf("fail-open take of 4: %d, %v; want 4", n, err)
	}
	if n, _, err := down.Take(ctx, "k3", Rate{PerSecond: 1, Burst: 6}, 4); err != nil || n != 2 {
		t.Errorf("fail-open take of 4 more: %d, %v; want the 2 left", n, err)
	}
	if down.Stats().Fallbacks != 2 {
		t.Errorf("%d fallbacks, want 2", down.Stats().Fallbacks)
	}
}
