package redisstore

import (
	"github.com/fwdproxy/fwdproxy"

	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ByteCounter defaults: a ByteCounter flushes its count to the QuotaStore
// once this many bytes are counted, or this long after the first byte not
// yet flushed.
const (
	DefaultFlushBytes    = 64 << 10
	DefaultFlushInterval = 100 * time.Millisecond
)

// ByteCounter counts the bytes of one transfer (a tunnel, a download)
// against a byte quota in a QuotaStore, in batches: Add only adds to a local
// count, and the count is flushed to the store (AddBytes) in the background
// once FlushBytes are counted or FlushInterval after the first byte not yet
// flushed, and by Close. Each flush learns the usage of every replica.
//
// The caller cuts the transfer at the quota: before moving a chunk it asks
// Remaining, moves at most that many bytes and adds them; once Remaining is
// 0 (or Add returns false, or Exceeded is closed) it stops. Remaining counts
// this transfer's bytes at once and other transfers' as of its last flush,
// so the quota is passed by what other transfers moved that this one has
// not seen yet: at most about one batch each while flushes keep up. Near the
// quota the batches shrink (to a quarter of what is left, down to 4 KiB),
// so that transfers sharing a quota see each other sooner.
//
// A ByteCounter is safe for concurrent use, e.g. by both directions of a
// tunnel. It starts no goroutine while idle. Close it when the transfer
// ends.
type ByteCounter struct {
	qs         fwdproxy.QuotaStore
	key        string
	limit      int64
	window     time.Duration
	flushBytes int64
	flushEvery time.Duration

	used     atomic.Int64 // the shared usage at the last flush
	pending  atomic.Int64 // counted, not flushed yet
	inflight atomic.Int64 // being flushed
	flushing atomic.Bool  // a flush runs
	armed    atomic.Bool  // the timer is set
	closed   atomic.Bool
	over     atomic.Bool

	exceeded chan struct{} // closed once the quota is crossed
	timer    *time.Timer

	mu    sync.Mutex // serialises closing with starting flushes
	wg    sync.WaitGroup
	errMu sync.Mutex
	err   error // the last flush's error
}

// ByteCounterOption configures a ByteCounter.
type ByteCounterOption func(*ByteCounter) error

// FlushBytes sets how many counted bytes trigger a flush (default
// DefaultFlushBytes, 64 KiB).
func FlushBytes(n int64) ByteCounterOption {
	return func(c *ByteCounter) error {
		if n < 1 {
			return fmt.Errorf("flush bytes %d must be at least 1", n)
		}
		c.flushBytes = n
		return nil
	}
}

// FlushInterval sets how long after the first byte not yet flushed a flush
// happens at the latest (default DefaultFlushInterval, 100 ms).
func FlushInterval(d time.Duration) ByteCounterOption {
	return func(c *ByteCounter) error {
		if d <= 0 {
			return fmt.Errorf("flush interval %v must be positive", d)
		}
		c.flushEvery = d
		return nil
	}
}

// InitialUsage sets the shared usage known when the transfer starts, such
// as the answer of the AddBytes(ctx, key, 0, window) that admitted it, so
// that Remaining is right before the first flush (default 0).
func InitialUsage(used int64) ByteCounterOption {
	return func(c *ByteCounter) error {
		if used < 0 {
			return fmt.Errorf("initial usage %d must not be negative", used)
		}
		c.used.Store(used)
		return nil
	}
}

// NewByteCounter returns a ByteCounter adding to key's usage in qs, in
// windows of length window, against a quota of limit bytes.
func NewByteCounter(qs fwdproxy.QuotaStore, key string, limit int64, window time.Duration, opts ...ByteCounterOption) (*ByteCounter, error) {
	if qs == nil {
		return nil, errors.New("redisstore: NewByteCounter: nil QuotaStore")
	}
	if limit < 0 {
		return nil, fmt.Errorf("redisstore: NewByteCounter: limit %d must not be negative", limit)
	}
	c := &ByteCounter{
		qs: qs, key: key, limit: limit, window: window,
		flushBytes: DefaultFlushBytes, flushEvery: DefaultFlushInterval,
		exceeded: make(chan struct{}),
	}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("redisstore: NewByteCounter: nil option")
		}
		if err := o(c); err != nil {
			return nil, fmt.Errorf("redisstore: NewByteCounter: %w", err)
		}
	}
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.timer.Stop()
	if c.used.Load() >= limit {
		c.markExceeded()
	}
	return c, nil
}

// Add counts n bytes moved. It never waits for the store: at most it starts
// a flush in the background. It reports whether the transfer is still
// within the quota (false once the quota is known to be reached).
func (c *ByteCounter) Add(n int) bool {
	if n <= 0 {
		return c.Remaining() > 0
	}
	p := c.pending.Add(int64(n))
	est := c.used.Load() + c.inflight.Load() + p
	if est >= c.limit {
		c.markExceeded()
	}
	if c.closed.Load() {
		return !c.over.Load()
	}
	if p >= c.threshold(est) {
		c.startFlush()
	} else if !c.armed.Load() && c.armed.CompareAndSwap(false, true) {
		c.timer.Reset(c.flushEvery)
	}
	return !c.over.Load()
}

// Remaining returns how many more bytes the transfer may move: the quota
// less the shared usage at the last flush and this counter's bytes not yet
// in it. At 0 the quota is reached: Exceeded is closed.
func (c *ByteCounter) Remaining() int64 {
	left := c.limit - c.used.Load() - c.inflight.Load() - c.pending.Load()
	if left <= 0 {
		c.markExceeded()
		return 0
	}
	return left
}

// Used returns the usage as this counter knows it: the shared usage at the
// last flush plus its own bytes not yet in it.
func (c *ByteCounter) Used() int64 {
	return c.used.Load() + c.inflight.Load() + c.pending.Load()
}

// Exceeded returns a channel closed once the quota is reached, by this
// transfer's bytes or, as learnt at a flush, others'. A transfer that
// splices without calling Add for each chunk can select on it to cut.
func (c *ByteCounter) Exceeded() <-chan struct{} { return c.exceeded }

// Err returns the error of the last flush that failed, if any; its bytes
// are flushed again with the next one.
func (c *ByteCounter) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Close stops the background flushes and flushes the rest, waiting for the
// store (a Store waits its timeout at most), and returns the error of that
// last flush. Later Closes do nothing; bytes added after Close are counted
// locally but never flushed.
func (c *ByteCounter) Close() error {
	c.mu.Lock()
	if c.closed.Swap(true) {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.timer.Stop()
	c.wg.Wait()
	n := c.pending.Swap(0)
	if n == 0 {
		return nil
	}
	return c.flush(n)
}

// minFlushBytes is the smallest batch: near the quota, batches shrink to
// a quarter of what is left, down to this.
const minFlushBytes = 4 << 10

// threshold returns the batch that starts a flush at estimated usage est:
// FlushBytes, or a quarter of what is left of the quota when that is less,
// so that transfers sharing a quota learn of each other's bytes more often
// as it nears, and pass it by less.
func (c *ByteCounter) threshold(est int64) int64 {
	left := c.limit - est
	if left >= 4*c.flushBytes {
		return c.flushBytes
	}
	return min(c.flushBytes, max(minFlushBytes, left/4))
}

func (c *ByteCounter) markExceeded() {
	if c.over.CompareAndSwap(false, true) {
		close(c.exceeded)
	}
}

// onTimer is the timer's flush, FlushInterval after the first byte not
// flushed.
func (c *ByteCounter) onTimer() {
	c.armed.Store(false)
	c.startFlush()
}

// startFlush runs a flush in a goroutine unless one runs or the counter is
// closed.
func (c *ByteCounter) startFlush() {
	if c.flushing.Load() || !c.flushing.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		c.flushing.Store(false)
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		for {
			var err error
			if n := c.pending.Swap(0); n > 0 {
				err = c.flush(n)
			}
			c.flushing.Store(false)
			// Bytes counted meanwhile: flush them now when they make a
			// batch, otherwise when the timer fires.
			p := c.pending.Load()
			if err == nil && p >= c.threshold(c.used.Load()+c.inflight.Load()+p) && !c.closed.Load() && c.flushing.CompareAndSwap(false, true) {
				continue
			}
			if p > 0 && !c.closed.Load() && c.armed.CompareAndSwap(false, true) {
				c.timer.Reset(c.flushEvery)
			}
			return
		}
	}()
}

// flush adds n bytes in the store and learns the shared usage. On failure
// the bytes are counted again, for the next flush.
func (c *ByteCounter) flush(n int64) error {
	c.inflight.Add(n)
	used, _, err := c.qs.AddBytes(context.Background(), c.key, n, c.window)
	c.inflight.Add(-n)
	if err != nil {
		c.pending.Add(n)
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		return err
	}
	c.used.Store(used)
	c.Remaining() // marks the quota reached by others' bytes with ours
	return nil
}
