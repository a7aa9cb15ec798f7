package quota

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for Memory.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestMemoryAllow: the GCRA allows a burst at once, then one event per
// emission interval, and says when the next is allowed.
func TestMemoryAllow(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	m := NewMemory(c.now)
	for i := range 3 {
		if d := m.Allow("k", 1, 3); !d.Allowed || d.Remaining != 2-i {
			t.Fatalf("event %d of the burst: %+v", i+1, d)
		}
	}
	d := m.Allow("k", 1, 3)
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
		t.Fatalf("over the burst: %+v, want refused with a RetryAfter up to 1s", d)
	}
	if d := m.Allow("other", 1, 3); !d.Allowed {
		t.Errorf("another key: %+v", d)
	}
	c.add(d.RetryAfter)
	if d := m.Allow("k", 1, 3); !d.Allowed {
		t.Errorf("after RetryAfter: %+v", d)
	}
	if d := m.Allow("k", 1, 3); d.Allowed {
		t.Errorf("right after: %+v", d)
	}
}

// TestMemoryAddBytes: usage adds up within a window aligned to the epoch
// and starts again in the next; reset is the window's end.
func TestMemoryAddBytes(t *testing.T) {
	c := &clock{t: time.Unix(86400*10+3600, 0)}
	m := NewMemory(c.now)
	used, reset := m.AddBytes("k", 100, 24*time.Hour)
	if used != 100 || !reset.Equal(time.Unix(86400*11, 0)) {
		t.Fatalf("first add: %d, reset %v", used, reset)
	}
	if used, _ := m.AddBytes("k", 0, 24*time.Hour); used != 100 {
		t.Errorf("a read: %d", used)
	}
	c.add(23 * time.Hour)
	if used, reset2 := m.AddBytes("k", 5, 24*time.Hour); used != 5 || !reset2.Equal(reset.Add(24*time.Hour)) {
		t.Errorf("in the next window: %d, reset %v", used, reset2)
	}
}

// TestMemoryLeases: at most max leases are held; a released one, or one
// not renewed within its ttl, frees a place; renewing keeps one.
func TestMemoryLeases(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	m := NewMemory(c.now)
	a, ok1 := m.Acquire("k", 2, time.Second)
	_, ok2 := m.Acquire("k", 2, time.Second)
	if _, ok := m.Acquire("k", 2, time.Second); !ok1 || !ok2 || ok {
		t.Fatalf("acquires: %v %v, a third %v", ok1, ok2, ok)
	}
	m.Release("k", a)
	if _, ok := m.Acquire("k", 2, time.Second); !ok {
		t.Fatal("no place after a release")
	}
	c.add(900 * time.Millisecond)
	if n := m.Held("k"); n != 2 {
		t.Fatalf("held %d", n)
	}
	c.add(200 * time.Millisecond)
	if n := m.Held("k"); n != 0 {
		t.Fatalf("held %d after the ttl", n)
	}
	id, _ := m.Acquire("k", 1, time.Second)
	c.add(900 * time.Millisecond)
	if !m.Renew("k", id, time.Second) {
		t.Fatal("renew failed")
	}
	c.add(900 * time.Millisecond)
	if _, ok := m.Acquire("k", 1, time.Second); ok {
		t.Error("a renewed lease lapsed")
	}
}

// countingAdder is an Adder that counts its calls and can fail.
type countingAdder struct {
	m     *Memory
	calls atomic.Int64
	fail  atomic.Bool
}

func (a *countingAdder) AddBytes(_ context.Context, key string, n int64, w time.Duration) (int64, time.Time, error) {
	a.calls.Add(1)
	if a.fail.Load() {
		return 0, time.Time{}, errors.New("down")
	}
	used, reset := a.m.AddBytes(key, n, w)
	return used, reset, nil
}

// TestMeter: Remaining counts this process's bytes at once and others' at
// each flush; a batch of 64 KiB (or the interval) flushes; a failed flush
// keeps the bytes for the next.
func TestMeter(t *testing.T) {
	store := &countingAdder{m: NewMemory(nil)}
	var errs atomic.Int64
	m := NewMeter(store, "k", 1<<20, time.Hour, time.Second, func(error) { errs.Add(1) })
	defer m.Close()
	if !m.Stale(time.Now()) {
		t.Fatal("a new meter is not stale")
	}
	if err := m.Flush(context.Background()); err != nil || m.Stale(time.Now()) {
		t.Fatalf("flush: %v, stale %v", err, m.Stale(time.Now()))
	}
	m.Add(1000)
	if r := m.Remaining(); r != 1<<20-1000 {
		t.Fatalf("Remaining %d", r)
	}
	calls := store.calls.Load()
	m.Add(64 << 10) // a batch: flushed in the background
	deadline := time.Now().Add(5 * time.Second)
	for store.calls.Load() == calls && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if store.calls.Load() == calls {
		t.Fatal("a full batch was not flushed")
	}
	// Another process's bytes show at the next flush.
	store.m.AddBytes("k", 500_000, time.Hour)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := m.Remaining(); r != 1<<20-1000-64<<10-500_000 {
		t.Errorf("Remaining %d after the other's bytes", r)
	}
	store.fail.Store(true)
	m.Add(10)
	if err := m.Flush(context.Background()); err == nil || errs.Load() == 0 {
		t.Fatalf("a failing store: %v, onErr called %d times", err, errs.Load())
	}
	store.fail.Store(false)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if used, _ := store.m.AddBytes("k", 0, time.Hour); used != 1000+64<<10+500_000+10 {
		t.Errorf("the store holds %d", used)
	}
	m.Add(1 << 20)
	if m.Remaining() != 0 {
		t.Errorf("Remaining %d past the quota", m.Remaining())
	}
}

// TestMeterAfterClose: bytes counted into a closed Meter (a transfer that
// outlives the Reload that replaced it) still reach the store, at the next
// interval.
func TestMeterAfterClose(t *testing.T) {
	store := &countingAdder{m: NewMemory(nil)}
	m := NewMeter(store, "k", 1<<30, time.Hour, time.Second, nil)
	m.Add(100) // arms the timer
	m.Close()  // stops it, flushes the 100
	m.Add(50)  // below a batch: only the timer can flush it
	defer m.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if used, _ := store.m.AddBytes("k", 0, time.Hour); used == 150 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	used, _ := store.m.AddBytes("k", 0, time.Hour)
	t.Fatalf("the store holds %d, want 150: the bytes after Close never flushed", used)
}

// memLeaser is a Leaser on a Memory.
type memLeaser struct{ m *Memory }

func (l memLeaser) Acquire(_ context.Context, key string, max int, ttl time.Duration) (string, bool, error) {
	id, ok := l.m.Acquire(key, max, ttl)
	return id, ok, nil
}

func (l memLeaser) Renew(_ context.Context, key, id string, ttl time.Duration) error {
	if !l.m.Renew(key, id, ttl) {
		return errors.New("not held")
	}
	return nil
}

func (l memLeaser) Release(_ context.Context, key, id string) error {
	l.m.Release(key, id)
	return nil
}

// TestLease: a Lease renews itself past its ttl until released, and
// leaves no goroutine behind (goleak).
func TestLease(t *testing.T) {
	ls := memLeaser{NewMemory(nil)}
	const ttl = 300 * time.Millisecond // renewed every 100 ms: it lapses only if a renewal is 200 ms late
	id, ok, _ := ls.Acquire(context.Background(), "k", 1, ttl)
	if !ok {
		t.Fatal("no lease")
	}
	var errs atomic.Int64
	l := NewLease(ls, "k", id, ttl, func(error) { errs.Add(1) })
	time.Sleep(3 * ttl)
	if n := ls.m.Held("k"); n != 1 || errs.Load() != 0 {
		t.Fatalf("after 3 ttls: %d held, %d renewal errors", n, errs.Load())
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := ls.m.Held("k"); n != 0 {
		t.Errorf("%d held after Release", n)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Errorf("a second Release: %v", err)
	}
}
