package quota

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBatchSize(t *testing.T) {
	for _, c := range []struct {
		rate  float64
		burst int
		want  int
	}{
		{10, 100, 1},      // 100 per 10 s: one event per 100 ms, single events
		{0.5, 10, 1},      // slower still
		{100, 100, 10},    // 100 ms of 100 a second
		{100, 4, 4},       // at most the burst
		{1e9, 1e9, 1e8},   // the bench's policy
		{1e6, 0, 1},       // a burst under 1 counts as 1
		{155.5, 1000, 15}, // rounded down
		{1e300, 1 << 40, 1 << 40},
	} {
		if got := BatchSize(c.rate, c.burst, 100*time.Millisecond); got != c.want {
			t.Errorf("BatchSize(%v, %d) = %d, want %d", c.rate, c.burst, got, c.want)
		}
	}
}

// fakeTaker is a shared limit that grants from a pool of events.
type fakeTaker struct {
	mu    sync.Mutex
	pool  int
	calls []int // n of each call
	gate  chan struct{}
	err   error
}

func (f *fakeTaker) take(ctx context.Context, n int) (int, time.Duration, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, n)
	if f.err != nil {
		return 0, 0, f.err
	}
	got := min(n, f.pool)
	f.pool -= got
	if got == 0 {
		return 0, 300 * time.Millisecond, nil
	}
	return got, 0, nil
}

func (f *fakeTaker) callsSoFar() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.calls...)
}

// waitFills waits until the stock has no take in flight.
func waitFills(t *testing.T, s *Stock) {
	t.Helper()
	for range 1000 {
		s.mu.Lock()
		busy := s.fill != nil
		s.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("a take still in flight after 1 s")
}

// TestStock: the first decision waits for one take of a batch; the next
// ones spend it with no call; at half a batch it takes the rest in the
// background; when the store grants none it refuses locally until the
// store's retry time; it never holds more than k.
func TestStock(t *testing.T) {
	f := &fakeTaker{pool: 25}
	s := NewStock(10, time.Second, f.take)
	ctx := context.Background()
	allowed := 0
	for i := range 40 {
		d, err := s.Allow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		} else if d.RetryAfter <= 0 || d.RetryAfter > 300*time.Millisecond {
			t.Fatalf("decision %d: refused with RetryAfter %v", i, d.RetryAfter)
		}
		if n := s.Tokens(); n > 10 {
			t.Fatalf("holds %d events, more than a batch", n)
		}
		waitFills(t, s) // make the background takes deterministic
	}
	if allowed != 25 {
		t.Errorf("%d of 40 allowed from a pool of 25", allowed)
	}
	calls := f.callsSoFar()
	// 10 at first, 5 when 5 are left, 5, 5, then 5 of which 0 are granted:
	// the pool is empty and the refusals are local until the retry time.
	if want := []int{10, 5, 5, 5, 5}; !equal(calls, want) {
		t.Errorf("takes %v, want %v", calls, want)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStockWaiters: 50 concurrent decisions on an empty stock share one
// take; a take that fails gives its error to its waiters; a take slower
// than the timeout ends the wait at the timeout.
func TestStockWaiters(t *testing.T) {
	t.Run("share", func(t *testing.T) {
		f := &fakeTaker{pool: 1000, gate: make(chan struct{})}
		s := NewStock(100, 5*time.Second, f.take)
		var wg sync.WaitGroup
		var allowed atomic.Int64
		for range 50 {
			wg.Go(func() {
				if d, err := s.Allow(context.Background()); err == nil && d.Allowed {
					allowed.Add(1)
				}
			})
		}
		time.Sleep(50 * time.Millisecond)
		close(f.gate)
		wg.Wait()
		waitFills(t, s)
		if allowed.Load() != 50 {
			t.Errorf("%d of 50 allowed", allowed.Load())
		}
		if calls := f.callsSoFar(); len(calls) != 2 || calls[0] != 100 || calls[1] != 50 {
			t.Errorf("takes %v, want [100 50] (one for the waiters, one refill at half)", calls)
		}
	})
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		f := &fakeTaker{err: boom}
		s := NewStock(10, time.Second, f.take)
		if _, err := s.Allow(context.Background()); !errors.Is(err, boom) {
			t.Errorf("err %v, want boom", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := &fakeTaker{pool: 10, gate: make(chan struct{})}
		defer close(f.gate)
		s := NewStock(10, 30*time.Millisecond, f.take)
		start := time.Now()
		_, err := s.Allow(context.Background())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want the deadline", err)
		}
		if e := time.Since(start); e > 500*time.Millisecond {
			t.Errorf("waited %v for a timeout of 30ms", e)
		}
		waitFills(t, s)
	})
}
