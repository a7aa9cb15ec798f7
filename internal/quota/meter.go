package quota

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Adder adds bytes to a quota key's usage in fixed windows: the root
// package's QuotaStore.
type Adder interface {
	AddBytes(ctx context.Context, key string, n int64, window time.Duration) (used int64, reset time.Time, err error)
}

// Meter defaults: a Meter flushes once this many bytes are counted, or this
// long after the first byte not yet flushed.
const (
	DefaultFlushBytes    = 64 << 10
	DefaultFlushInterval = 100 * time.Millisecond
	minFlushBytes        = 4 << 10
)

// Meter counts one subject's bytes against a byte quota, for every transfer
// of that subject on this process (requests, responses, tunnels), and
// adds them to the store in batches: once FlushBytes are counted (fewer
// near the quota: a quarter of what is left, down to 4 KiB) or
// FlushInterval after the first byte not yet flushed. Each flush learns the
// usage of every process sharing the store.
//
// A transfer asks Remaining before it moves a chunk, moves at most that
// many bytes and Adds them; at 0 it stops. Remaining counts this process's
// bytes at once and others' as of the last flush, so the quota is passed
// only by what other processes moved since: about one batch each.
type Meter struct {
	store   Adder
	key     string
	limit   int64
	window  time.Duration
	batch   int64
	every   time.Duration
	timeout time.Duration
	onErr   func(error) // a failed flush; the bytes are kept for the next

	used     atomic.Int64 // the shared usage at the last flush
	reset    atomic.Int64 // the end of its window, Unix nanoseconds
	pending  atomic.Int64 // counted, not flushed
	inflight atomic.Int64 // being flushed
	armed    atomic.Bool  // the timer is set
	flushing atomic.Bool  // a background flush is started

	flushMu sync.Mutex // one flush at a time
	timer   *time.Timer
	timerMu sync.Mutex
}

// NewMeter returns a Meter of key in store, a quota of limit bytes per
// window. Each flush waits at most timeout; onErr is told of a failed one.
func NewMeter(store Adder, key string, limit int64, window, timeout time.Duration, onErr func(error)) *Meter {
	return &Meter{store: store, key: key, limit: limit, window: window,
		batch: DefaultFlushBytes, every: DefaultFlushInterval, timeout: timeout, onErr: onErr}
}

// Store returns the store the Meter adds to.
func (m *Meter) Store() Adder { return m.store }

// Limit returns the quota, in bytes per window.
func (m *Meter) Limit() int64 { return m.limit }

// Reset returns when the window of the last flush ends (the zero Time
// before the first).
func (m *Meter) Reset() time.Time {
	n := m.reset.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Stale reports whether the Meter has not flushed in the current window:
// its usage is then unknown or that of a window that has ended.
func (m *Meter) Stale(now time.Time) bool {
	n := m.reset.Load()
	return n == 0 || now.UnixNano() >= n
}

// Remaining returns how many bytes may move before the quota is reached.
func (m *Meter) Remaining() int64 {
	return max(0, m.limit-m.used.Load()-m.pending.Load()-m.inflight.Load())
}

// Add counts n bytes moved and starts a flush when a batch is full. When
// two batches are waiting (the store is slower than the transfer), it
// flushes before it returns, so that no process runs more than that ahead
// of what the others see.
func (m *Meter) Add(n int64) {
	if n <= 0 {
		return
	}
	p := m.pending.Add(n)
	th := m.threshold()
	switch {
	case p >= 2*th:
		_ = m.Flush(context.Background())
	case p >= th:
		if m.flushing.CompareAndSwap(false, true) {
			go func() {
				defer m.flushing.Store(false)
				_ = m.Flush(context.Background())
			}()
		}
	default:
		if m.armed.CompareAndSwap(false, true) {
			m.timerMu.Lock()
			if m.timer == nil {
				m.timer = time.AfterFunc(m.every, m.onTimer)
			} else {
				m.timer.Reset(m.every)
			}
			m.timerMu.Unlock()
		}
	}
}

func (m *Meter) onTimer() {
	m.armed.Store(false)
	m.Flush(context.Background())
}

// threshold is the batch size: FlushBytes, or near the quota a quarter of
// what is left (at least 4 KiB), so that processes sharing it see each
// other sooner.
func (m *Meter) threshold() int64 {
	left := m.limit - m.used.Load()
	return max(minFlushBytes, min(m.batch, left/4))
}

// Flush adds the bytes counted so far to the store and learns the shared
// usage; with none counted, it only learns. It waits for a flush in
// progress. A failed flush keeps the bytes for the next and returns the
// error.
func (m *Meter) Flush(ctx context.Context) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	// In flight before it leaves pending: Remaining never misses it
	// (counted twice for a moment, the safe side).
	n := m.pending.Load()
	m.inflight.Store(n)
	m.pending.Add(-n)
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	used, reset, err := m.store.AddBytes(ctx, m.key, n, m.window)
	cancel()
	if err != nil {
		m.pending.Add(n)
		m.inflight.Store(0)
		if m.onErr != nil {
			m.onErr(err)
		}
		return err
	}
	m.used.Store(used)
	m.reset.Store(reset.UnixNano())
	m.inflight.Store(0)
	return nil
}

// Close stops the timer and flushes what is counted. A transfer still
// counting into a closed Meter (a Reload replaced it) arms the timer again,
// so its last bytes reach the store too.
func (m *Meter) Close() {
	m.timerMu.Lock()
	if m.timer != nil {
		m.timer.Stop()
	}
	m.armed.Store(false)
	m.timerMu.Unlock()
	if m.pending.Load() > 0 {
		_ = m.Flush(context.Background())
	}
}
