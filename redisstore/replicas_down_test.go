package redisstore

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// TestReplicasRedisDownDuringLoad: two replicas under a steady load of
// alice's requests (a policy with a rate) while Redis goes away, stopped
// (killed: connections refused at once) or stuck (SIGSTOP: nothing
// answers, the case the timeout is for): no request waits past the Store's
// 50 ms timeout (plus the machine's scheduling delay), every one is decided
// by the fallback (fail-open: all answered 200); once Redis is back (started
// again on its port, or resumed), the shared limits resume: bob's burst of
// 5 holds across both replicas again, where each replica alone would allow
// him 5.
func TestReplicasRedisDownDuringLoad(t *testing.T) {
	for _, how := range []string{"stopped", "stuck"} {
		t.Run(how, func(t *testing.T) { redisDownDuringLoad(t, how) })
	}
}

func redisDownDuringLoad(t *testing.T, how string) {
	r := startRedis(t)
	o := proxytest.Origin(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	pol := fwdproxy.WithPolicies(
		fwdproxy.Policy{Name: "busy", Users: []string{"alice"}, Rate: fwdproxy.Rate{PerSecond: 10000, Burst: 10000}},
		fwdproxy.Policy{Name: "slow", Users: []string{"bob"}, Rate: fwdproxy.Rate{PerSecond: 0.001, Burst: 5}})
	so := []Option{WithTimeout(50 * time.Millisecond), WithProbeInterval(50 * time.Millisecond)}
	reps := []*replica{startReplica(t, r, so, pol), startReplica(t, r, so, pol)}

	const timeout = 50 * time.Millisecond
	var mu sync.Mutex
	var worst, worstDown, sched time.Duration // worstDown: of the requests that started while Redis was away
	var failed int
	var down atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, rp := range reps {
		c := rp.client(t, "alice")
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start, wasDown := time.Now(), down.Load()
				resp, err := c.Get(o.URL)
				d := time.Since(start)
				mu.Lock()
				worst = max(worst, d)
				if wasDown {
					worstDown = max(worstDown, d)
				}
				if err != nil || resp.StatusCode != 200 {
					failed++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	// The machine's scheduling delay, measured as the load runs: what a
	// 1 ms sleep overshoots by at most.
	measure := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			s := time.Now()
			time.Sleep(time.Millisecond)
			mu.Lock()
			sched = max(sched, time.Since(s)-time.Millisecond)
			mu.Unlock()
		}
	}
	measure(300 * time.Millisecond)
	mu.Lock()
	worstBefore := worst
	mu.Unlock()
	down.Store(true)
	if how == "stuck" {
		r.pause()
	} else {
		r.stop()
	}
	measure(1500 * time.Millisecond)
	down.Store(false)
	if how == "stuck" {
		r.resume()
	} else {
		r.start()
	}
	close(stop)
	wg.Wait() // a request that hung while Redis was away has ended now, and counts
	schedDown := sched
	t.Logf("slowest request: %v with Redis up, %v while it was %s (scheduling delay up to %v); %d failed",
		worstBefore.Round(time.Millisecond), worstDown.Round(time.Millisecond), how, schedDown.Round(time.Millisecond), failed)
	if failed > 0 {
		t.Errorf("%d requests failed while Redis was %s, want the fail-open fallback to allow them", failed, how)
	}
	if limit := timeout + 100*time.Millisecond + 2*schedDown; worstDown > limit {
		t.Errorf("a request took %v while Redis was %s, want at most the %v timeout (plus %v)", worstDown, how, timeout, limit-timeout)
	}
	for i, rp := range reps {
		if s := rp.store.Stats(); s.Fallbacks == 0 {
			t.Errorf("replica %d: no decision by the fallback: %+v", i+1, s)
		}
	}

	// Redis back: both Stores find it, and the limits are shared again.
	waitFor(t, 5*time.Second, "both stores to find Redis again", func() bool { return reps[0].store.Up() && reps[1].store.Up() })
	allowed := 0
	clients := []*http.Client{reps[0].client(t, "bob"), reps[1].client(t, "bob")}
	for i := range 10 {
		resp, err := clients[i%2].Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("bob: %d of 10 allowed across both replicas after Redis came back, want his burst of 5", allowed)
	}
}

// TestReplicasByteQuota: alice downloads through both replicas at once,
// in tunnels, against one byte quota: together they stop at the quota,
// within one batch (64 KiB) of it per replica, each with one log line.
func TestReplicasByteQuota(t *testing.T) {
	r := startRedis(t)
	const quota = 4 << 20
	chunk := make([]byte, 32<<10)
	// The origin sends once both tunnels are open: loopback buffers hold
	// megabytes, so the first tunnel could otherwise take the whole quota
	// before the second is asked for.
	start := make(chan struct{})
	startOnce := sync.OnceFunc(func() { close(start) })
	src := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		<-start
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	t.Cleanup(startOnce) // after the origin's: it runs first, so no handler waits at its close
	opts := []fwdproxy.Option{fwdproxy.WithAllowPorts(portOf(t, src)),
		fwdproxy.WithPolicies(fwdproxy.Policy{Name: "metered", Users: []string{"alice"}, BytesPerDay: quota})}
	reps := []*replica{startReplica(t, r, nil, opts...), startReplica(t, r, nil, opts...)}
	got := make([]int64, len(reps))
	var wg sync.WaitGroup
	for i, rp := range reps {
		c, br, status := rp.tunnel(t, "alice", src)
		if status != 200 {
			t.Fatalf("tunnel through replica %d: %d", i+1, status)
		}
		wg.Go(func() {
			defer c.Close()
			got[i], _ = io.Copy(io.Discard, br)
		})
	}
	startOnce()
	wg.Wait()
	total := got[0] + got[1]
	t.Logf("downloads of %d and %d bytes: %d in all against a quota of %d (%+d)", got[0], got[1], total, quota, total-quota)
	const batch = 64 << 10
	if total > quota+2*batch || total < quota-2*batch {
		t.Errorf("%d bytes in all, want the quota of %d within one batch (%d) per replica", total, quota, batch)
	}
	for i, rp := range reps {
		proxytest.Eventually(t, "the cut counted", func() bool { return rp.p.Stats().Quotas.Cuts == 1 })
		if _, _, status := rp.tunnel(t, "alice", src); status != 429 {
			t.Errorf("replica %d: a new tunnel after the quota: %d, want 429", i+1, status)
		}
	}
}
