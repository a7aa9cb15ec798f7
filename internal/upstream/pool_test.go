package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testUpstreams returns n HTTP upstreams on the clock, without jitter.
func testUpstreams(t testing.TB, clock *fakeClock, n int) []*Upstream {
	ups := make([]*Upstream, n)
	for i := range ups {
		ups[i] = MustParse(fmt.Sprintf("http://up%d.test:3128", i), WithClock(clock.Now),
			WithBackoff(Backoff{Min: time.Second, Max: time.Minute}))
	}
	return ups
}

// fail reports a fault of u.
func fail(u *Upstream) {
	u.Observe(u.newError(ErrUnreachable, "", "unreachable", syscall.ECONNREFUSED))
}

func names(ups []*Upstream) string {
	var b strings.Builder
	for i, u := range ups {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.TrimSuffix(strings.TrimPrefix(u.Name(), "http://"), ".test:3128"))
	}
	return b.String()
}

func TestBackoff(t *testing.T) {
	clock := newFakeClock()
	u := testUpstreams(t, clock, 1)[0]
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60} {
		if i > 0 {
			// A failure within the back-off (a request that was on its
			// way) leaves it as it is.
			retry := u.Stats().NextRetry
			clock.Advance(retry.Sub(clock.Now()) / 2)
			fail(u)
			if s := u.Stats(); s.Up || !s.NextRetry.Equal(retry) || s.ConsecutiveFailures != 2*i {
				t.Fatalf("a failure within the back-off: up %v, retry %v (want %v), consecutive %d (want %d)", s.Up, s.NextRetry, retry, s.ConsecutiveFailures, 2*i)
			}
			// The trial after it fails: the back-off doubles.
			clock.Advance(retry.Sub(clock.Now()))
		}
		fail(u)
		s := u.Stats()
		if s.Up || s.ConsecutiveFailures != 2*i+1 || s.NextRetry.Sub(clock.Now()) != want*time.Second {
			t.Fatalf("after %d failed trials: up %v, consecutive %d, retry in %v; want %v", i+1, s.Up, s.ConsecutiveFailures, s.NextRetry.Sub(clock.Now()), want*time.Second)
		}
		if !s.LastFailure.Equal(clock.Now()) || !strings.Contains(s.LastError, "unreachable") {
			t.Fatalf("last failure %v %q", s.LastFailure, s.LastError)
		}
	}
	u.Observe(nil)
	if s := u.Stats(); !s.Up || s.ConsecutiveFailures != 0 || !s.NextRetry.IsZero() || s.Failures != 15 || s.Successes != 1 {
		t.Fatalf("after a success: %+v", s)
	}
	fail(u)
	if d := u.Stats().NextRetry.Sub(clock.Now()); d != time.Second {
		t.Fatalf("the back-off did not start over: %v", d)
	}
}

func TestBackoffJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		clock := newFakeClock()
		u := MustParse("http://h:1", WithClock(clock.Now), WithBackoff(Backoff{Min: time.Second, Max: time.Minute, Jitter: 0.2}))
		fail(u)
		d := u.Stats().NextRetry.Sub(clock.Now())
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("first back-off %v outside 1 s ± 20 %%", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter gave only %d distinct back-offs in 50", len(seen))
	}
}

func TestObserve(t *testing.T) {
	u := MustParse("http://h:1")
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tt := range []struct {
		name                string
		err                 error
		fault, refusal, up  bool
		successes, failures uint64
	}{
		{"canceled", context.Canceled, false, false, true, 0, 0},
		{"canceled *Error", u.newError(context.Canceled, "", "x", nil), false, false, true, 0, 0},
		{"unknown error", errors.New("odd"), false, false, true, 0, 0},
		{"refused target", u.newError(ErrRefused, "", "x", nil), false, true, true, 0, 0},
		{"rejected credentials", u.newError(ErrAuth, "", "x", nil), false, true, true, 0, 0},
		{"ECONNREFUSED", opErr, true, false, false, 0, 1},
		{"EOF", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true, false, false, 0, 2},
		{"timeout *Error", u.newError(ErrTimeout, "", "x", nil), true, false, false, 0, 3},
		{"protocol *Error", u.newError(ErrProtocol, "", "x", nil), true, false, false, 0, 4},
		{"success", nil, false, false, true, 1, 4},
	} {
		before := u.Stats()
		u.Observe(tt.err)
		s := u.Stats()
		if s.Up != tt.up || s.Successes != tt.successes || s.Failures != tt.failures ||
			(s.Refusals > before.Refusals) != tt.refusal {
			t.Errorf("%s: %+v", tt.name, s)
		}
	}
	d := MustParse("DIRECT")
	d.Observe(opErr)
	if !d.Up() || d.Stats().Failures != 0 {
		t.Fatal("DIRECT went down")
	}
}

func TestPickFailover(t *testing.T) {
	clock := newFakeClock()
	ups := testUpstreams(t, clock, 3)
	p, err := NewPool(Failover, ups...)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p.Pick("x")); got != "up0 up1 up2" {
		t.Fatalf("all up: %s", got)
	}
	fail(ups[0])
	if got := names(p.Pick("x")); got != "up1 up2 up0" {
		t.Fatalf("up0 down: %s", got)
	}
	clock.Advance(time.Millisecond)
	fail(ups[2])
	clock.Advance(time.Millisecond)
	fail(ups[1])
	// Every upstream down: all still tried, least recently failed first.
	if got := names(p.Pick("x")); got != "up0 up2 up1" {
		t.Fatalf("all down: %s", got)
	}
	ups[2].Observe(nil)
	if got := names(p.Pick("x")); got != "up2 up0 up1" {
		t.Fatalf("up2 back: %s", got)
	}
}

// TestTrialAfterBackoff checks that once its back-off has passed, a down
// upstream is let through to one pick in its place, and is up for all
// once that trial succeeds.
func TestTrialAfterBackoff(t *testing.T) {
	clock := newFakeClock()
	ups := testUpstreams(t, clock, 2)
	p, _ := NewPool(Failover, ups...)
	fail(ups[0])
	clock.Advance(999 * time.Millisecond)
	if got := names(p.Pick("x")); got != "up1 up0" {
		t.Fatalf("in back-off: %s", got)
	}
	clock.Advance(time.Millisecond)
	trials := 0
	for range 10 {
		if p.Pick("x")[0] == ups[0] {
			trials++
		}
	}
	if trials != 1 {
		t.Fatalf("%d picks got the trial, want 1", trials)
	}
	// A trial that never reports: another after one more back-off period.
	clock.Advance(time.Second)
	if p.Pick("x")[0] != ups[0] {
		t.Fatal("no second trial")
	}
	ups[0].Observe(nil)
	for range 3 {
		if got := names(p.Pick("x")); got != "up0 up1" {
			t.Fatalf("after the trial: %s", got)
		}
	}
}

func TestPickRoundRobin(t *testing.T) {
	clock := newFakeClock()
	ups := testUpstreams(t, clock, 3)
	p, _ := NewPool(RoundRobin, ups...)
	spread := func(picks int) map[*Upstream]int {
		first := map[*Upstream]int{}
		for range picks {
			order := p.Pick("x")
			if len(order) != 3 {
				t.Fatalf("order of %d", len(order))
			}
			first[order[0]]++
		}
		return first
	}
	within := func(got, want int) bool { return got >= want*9/10 && got <= want*11/10 }
	for u, n := range spread(3000) {
		if !within(n, 1000) {
			t.Fatalf("%s first %d times in 3000, want 1000 ± 10 %%", u, n)
		}
	}
	fail(ups[1])
	first := spread(3000)
	if first[ups[1]] != 0 || !within(first[ups[0]], 1500) || !within(first[ups[2]], 1500) {
		t.Fatalf("with up1 down: up0 %d, up1 %d, up2 %d; want 1500 ± 10 %%, 0, 1500 ± 10 %%", first[ups[0]], first[ups[1]], first[ups[2]])
	}
	if o := p.Pick("x"); o[2] != ups[1] {
		t.Fatalf("the down upstream is not last: %s", names(o))
	}
}

func TestPickLeastOutstanding(t *testing.T) {
	clock := newFakeClock()
	ups := testUpstreams(t, clock, 3)
	p, _ := NewPool(LeastOutstanding, ups...)
	for range 3 {
		ups[0].Begin()
	}
	ups[2].Begin()
	for range 10 {
		if got := names(p.Pick("x")); got != "up1 up2 up0" {
			t.Fatalf("order %s, want the idle one first", got)
		}
	}
	ups[0].End()
	ups[0].End()
	ups[0].End()
	ups[2].End()
	// Equal loads take turns.
	first := map[*Upstream]int{}
	for range 300 {
		first[p.Pick("x")[0]]++
	}
	for _, u := range ups {
		if first[u] != 100 {
			t.Fatalf("idle pool: %s first %d times in 300", u, first[u])
		}
	}
	if s := ups[0].Stats(); s.Requests != 3 || s.Outstanding != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPickConsistentHash(t *testing.T) {
	clock := newFakeClock()
	ups := testUpstreams(t, clock, 5)
	p, _ := NewPool(ConsistentHash, ups...)
	const hosts = 200
	exit := map[string]*Upstream{}
	load := map[*Upstream]int{}
	for i := range hosts {
		h := fmt.Sprintf("host%d.example.com", i)
		first := p.Pick(h)[0]
		for range 1000 {
			if o := p.Pick(h); o[0] != first || len(o) != len(ups) {
				t.Fatalf("%s moved from %s to %s", h, first, o[0])
			}
		}
		exit[h] = first
		load[first]++
	}
	for _, u := range ups {
		if load[u] < hosts/len(ups)/2 {
			t.Fatalf("%s serves %d of %d hosts: %v", u, load[u], hosts, load)
		}
	}
	if p.Pick("HOST1.Example.COM.")[0] != exit["host1.example.com"] {
		t.Fatal("spellings of one host differ")
	}

	// One down: only its hosts move, spread over the others.
	down := ups[2]
	fail(down)
	moved := map[*Upstream]int{}
	for h, was := range exit {
		now := p.Pick(h)[0]
		switch {
		case was != down && now != was:
			t.Fatalf("%s moved from %s to %s though %s is up", h, was, now, was)
		case was == down:
			if now == down {
				t.Fatalf("%s still on the down upstream", h)
			}
			moved[now]++
		}
	}
	if len(moved) < 3 {
		t.Fatalf("the hosts of the down upstream went to %d others, want them spread: %v", len(moved), moved)
	}
	down.Observe(nil)
	for h, was := range exit {
		if p.Pick(h)[0] != was {
			t.Fatalf("%s did not return to %s", h, was)
		}
	}
}

func TestNewPool(t *testing.T) {
	a, b := MustParse("http://a:1"), MustParse("http://b:1")
	many := make([]*Upstream, 65)
	for i := range many {
		many[i] = MustParse(fmt.Sprintf("http://h%d:1", i))
	}
	for _, tt := range []struct {
		policy Policy
		ups    []*Upstream
		want   string
	}{
		{Failover, nil, "at least one"},
		{Failover, []*Upstream{a, nil}, "entry 1 is nil"},
		{Failover, []*Upstream{a, b, a}, "twice"},
		{Policy(9), []*Upstream{a}, "unknown policy"},
		{RoundRobin, many, "at most 64"},
	} {
		if _, err := NewPool(tt.policy, tt.ups...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewPool(%v, %d) = %v, want %q", tt.policy, len(tt.ups), err, tt.want)
		}
	}
	p, err := NewPool(RoundRobin, many[:64]...)
	if err != nil || len(p.Upstreams()) != 64 || p.Policy() != RoundRobin || len(p.Stats()) != 64 {
		t.Fatal(err)
	}
}

func TestParsePolicy(t *testing.T) {
	for s, want := range map[string]Policy{"": Failover, "failover": Failover, "Round-Robin": RoundRobin,
		"least-outstanding": LeastOutstanding, "consistent-hash": ConsistentHash} {
		got, err := ParsePolicy(s)
		if err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v", s, got, err)
		}
		if s != "" && !strings.EqualFold(got.String(), s) {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	if _, err := ParsePolicy("random"); err == nil || !strings.Contains(err.Error(), "round-robin") {
		t.Fatalf("ParsePolicy(random) = %v", err)
	}
}

// TestPickAllocations checks the allocation goals: none for Failover and
// RoundRobin with every upstream up, none for any policy with AppendPick
// into a buffer.
func TestPickAllocations(t *testing.T) {
	clock := newFakeClock()
	for _, policy := range []Policy{Failover, RoundRobin, LeastOutstanding, ConsistentHash} {
		for _, n := range []int{1, 3} {
			p, _ := NewPool(policy, testUpstreams(t, clock, n)...)
			if policy == Failover || policy == RoundRobin || n == 1 {
				if a := testing.AllocsPerRun(100, func() { _ = p.Pick("example.com") }); a != 0 {
					t.Errorf("%v/%d: Pick allocates %v", policy, n, a)
				}
			}
			var buf [8]*Upstream
			if a := testing.AllocsPerRun(100, func() { _ = p.AppendPick(buf[:0], "example.com") }); a != 0 {
				t.Errorf("%v/%d: AppendPick allocates %v", policy, n, a)
			}
		}
	}
}

// TestPoolConcurrent runs picks, outcomes and accounting at once, for the
// race detector.
func TestPoolConcurrent(t *testing.T) {
	ups := make([]*Upstream, 4)
	for i := range ups {
		ups[i] = MustParse(fmt.Sprintf("http://c%d:1", i), WithBackoff(Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Jitter: 0.2}))
	}
	var wg sync.WaitGroup
	for _, policy := range []Policy{Failover, RoundRobin, LeastOutstanding, ConsistentHash} {
		p, _ := NewPool(policy, ups...)
		for g := range 4 {
			wg.Go(func() {
				for i := range 500 {
					order := p.Pick(fmt.Sprint("h", i%7))
					u := order[0]
					u.Begin()
					if (i+g)%5 == 0 {
						fail(u)
					} else {
						u.Observe(nil)
					}
					u.End()
					_ = p.Stats()
				}
			})
		}
	}
	wg.Wait()
	for _, u := range ups {
		if s := u.Stats(); s.Outstanding != 0 {
			t.Fatalf("%s: %+v", u, s)
		}
	}
}

func TestMayRetry(t *testing.T) {
	key := http.Header{"Idempotency-Key": {"abc"}}
	xkey := http.Header{"X-Idempotency-Key": nil}
	for _, tt := range []struct {
		method          string
		header          http.Header
		sent, responded bool
		want            bool
	}{
		{"GET", nil, false, false, true},
		{"GET", nil, true, false, true},
		{"GET", nil, true, true, false},
		{"HEAD", nil, true, false, true},
		{"OPTIONS", nil, true, false, true},
		{"TRACE", nil, true, false, true},
		{"PUT", nil, true, false, true},
		{"DELETE", nil, true, false, true},
		{"POST", nil, false, false, true},
		{"POST", nil, true, false, false},
		{"POST", key, true, false, true},
		{"POST", xkey, true, false, true},
		{"POST", key, true, true, false},
		{"PATCH", nil, true, false, false},
		{"PATCH", nil, false, false, true},
		{"CONNECT", nil, false, false, true},
		{"CONNECT", nil, true, true, true}, // refused by one upstream: try the next
	} {
		if got := MayRetry(tt.method, tt.header, tt.sent, tt.responded); got != tt.want {
			t.Errorf("MayRetry(%s, %v, sent %v, responded %v) = %v", tt.method, tt.header, tt.sent, tt.responded, got)
		}
	}
}

func TestProbe(t *testing.T) {
	var refuse atomic.Bool
	var dials atomic.Int32
	srv, h := startHTTPProxy(t, "", "")
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		if refuse.Load() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, strings.TrimPrefix(srv.URL, "http://"))
	}
	u := MustParse("http://probed.test:3128", WithDial(dial))
	ctx := context.Background()

	if err := Probe(ctx, u, ProbeConfig{}); err != nil || !u.Up() {
		t.Fatalf("TCP probe: %v", err)
	}
	origin := echoServer(t)
	if err := Probe(ctx, u, ProbeConfig{Target: origin}); err != nil || h.connectCount() != 1 {
		t.Fatalf("CONNECT probe: %v, %d CONNECTs", err, h.connectCount())
	}
	if err := Probe(ctx, MustParse("DIRECT"), ProbeConfig{}); err != nil {
		t.Fatal(err)
	}

	p := StartProbing([]*Upstream{u, MustParse("DIRECT")}, ProbeConfig{Interval: 5 * time.Millisecond, Timeout: time.Second})
	defer p.Stop()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, u.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	}
	refuse.Store(true)
	waitFor("the probe to mark it down", func() bool { return !u.Up() })
	refuse.Store(false)
	waitFor("the probe to bring it back", u.Up)
	p.Stop()
	n := dials.Load()
	time.Sleep(20 * time.Millisecond)
	if dials.Load() != n {
		t.Fatal("probes go on after Stop")
	}
}
