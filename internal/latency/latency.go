// Package latency keeps live latency quantiles over a sliding time window.
//
// # Precision
//
// Durations are counted in 592 fixed log-linear buckets over nanoseconds:
// exact below 32 ns, then 16 buckets per power of two. A quantile is reported
// as the middle of its bucket, so it is within 1/32 (3.125%) of the
// observation of that rank (nearest-rank definition), and never above the
// exact maximum. Durations from 31<<35 ns (about 17.7 minutes) up share the
// top bucket, and a quantile that falls there is reported as Max. Negative
// durations count as zero.
//
// # Window
//
// The window is cut into slots of window/slots each; a slot is cleared when
// the clock enters it again. A snapshot covers the current, partial slot and
// the slots-1 before it, so an observation leaves the snapshots between
// window-window/slots and window after it was made.
package latency

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const (
	subBits    = 4  // 1<<subBits buckets per power of two
	topBits    = 40 // the buckets end at 1<<topBits ns
	numBuckets = (topBits - subBits + 1) << subBits
	never      = math.MinInt64 // epoch of a slot never used
)

// Quantiles summarises the observations in a window. All fields are zero
// when there were none.
type Quantiles struct {
	Count         uint64
	P50, P95, P99 time.Duration
	Max           time.Duration
}

// Window records durations and reports their quantiles over the last
// window. It is safe for concurrent use. Observe takes no lock except when it
// is the first to enter a new slot, and goroutines on different Ps mostly
// count in different shards, so that concurrent calls do not fight over the
// same cache lines. The zero value is not usable: call [New].
type Window struct {
	elapsed func() time.Duration // time since the window was made
	slotDur time.Duration
	epochs  []atomic.Int64 // per slot: slot durations from the start to the stretch it counts
	shards  []shard
	pool    sync.Pool     // *shard; its per-P cache gives a P its own shard most of the time
	next    atomic.Uint32 // round robin over shards for pool.New
	mu      sync.Mutex    // serialises clearing slots, and snapshots with it
}

// shard holds one set of counts per slot.
type shard []counts

// counts holds observations made during one slot.
type counts struct {
	max     atomic.Int64
	buckets [numBuckets]atomic.Uint64
}

// maxShards bounds the memory of a window on large machines: each shard
// takes about 4.7 KB per slot.
const maxShards = 8

// New returns a window of the given length cut into the given number of
// slots, for example 60 s in 12 slots of 5 s. More slots make old
// observations leave more smoothly and cost more per [Window.Snapshot].
// A window shorter than one nanosecond per slot is lengthened to that, and
// slots below 1 count as 1. A window takes about 4.7 KB per slot for each of
// min(GOMAXPROCS, 8) shards: 113 KB for 12 slots on 2 cores.
func New(window time.Duration, slots int) *Window {
	start := time.Now()
	// time.Since reads only the monotonic clock: half the cost of time.Now.
	elapsed := func() time.Duration { return time.Since(start) }
	return newWindow(window, slots, min(runtime.GOMAXPROCS(0), maxShards), elapsed)
}

// newWindow is [New] with the number of shards and the clock, as the time
// elapsed since the window was made, given.
func newWindow(window time.Duration, slots, shards int, elapsed func() time.Duration) *Window {
	slots = max(slots, 1)
	w := &Window{
		elapsed: elapsed,
		slotDur: max(window/time.Duration(slots), 1),
		epochs:  make([]atomic.Int64, slots),
		shards:  make([]shard, max(shards, 1)),
	}
	for i := range w.epochs {
		w.epochs[i].Store(never)
	}
	for i := range w.shards {
		w.shards[i] = make(shard, slots)
	}
	w.pool.New = func() any { return &w.shards[w.next.Add(1)%uint32(len(w.shards))] }
	return w
}

// epoch returns the number of whole slot durations since the start; a clock
// that went back counts as the start.
func (w *Window) epoch() int64 {
	return int64(max(w.elapsed(), 0) / w.slotDur)
}

// Observe records one duration. It does not allocate.
func (w *Window) Observe(d time.Duration) {
	d = max(d, 0)
	e := w.epoch()
	slot := int(e % int64(len(w.epochs)))
	if w.epochs[slot].Load() != e {
		w.enter(slot, e)
	}
	sh := w.pool.Get().(*shard)
	c := &(*sh)[slot]
	c.buckets[bucketOf(uint64(d))].Add(1)
	for m := c.max.Load(); int64(d) > m; m = c.max.Load() {
		if c.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	w.pool.Put(sh)
}

// enter clears slot for epoch e unless another goroutine already did.
func (w *Window) enter(slot int, e int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epochs[slot].Load() == e {
		return
	}
	for _, sh := range w.shards {
		c := &sh[slot]
		for b := range c.buckets {
			c.buckets[b].Store(0)
		}
		c.max.Store(0)
	}
	w.epochs[slot].Store(e)
}

// Snapshot returns the quantiles of the observations in the window. It does
// not allocate and reads every bucket once: about 600 per slot and shard, so
// it is cheap enough to call every second. Observations made while it runs
// may or may not be included.
func (w *Window) Snapshot() Quantiles {
	e := w.epoch()
	var merged [numBuckets]uint64
	var q Quantiles
	w.mu.Lock()
	for slot := range w.epochs {
		if se := w.epochs[slot].Load(); se <= e-int64(len(w.epochs)) || se > e {
			continue
		}
		for _, sh := range w.shards {
			c := &sh[slot]
			for b := range c.buckets {
				n := c.buckets[b].Load()
				merged[b] += n
				q.Count += n
			}
			q.Max = max(q.Max, time.Duration(c.max.Load()))
		}
	}
	w.mu.Unlock()
	if q.Count == 0 {
		return Quantiles{}
	}
	q.P50 = quantile(&merged, q.Count, 0.50, q.Max)
	q.P95 = quantile(&merged, q.Count, 0.95, q.Max)
	q.P99 = quantile(&merged, q.Count, 0.99, q.Max)
	return q
}

// quantile returns the middle of the bucket that holds the observation of
// rank ceil(q*total), capped at maxD; maxD if that is the top bucket.
func quantile(counts *[numBuckets]uint64, total uint64, q float64, maxD time.Duration) time.Duration {
	rank := max(uint64(math.Ceil(q*float64(total))), 1)
	var seen uint64
	for b, n := range counts {
		if seen += n; seen >= rank && b < numBuckets-1 {
			return min(midpoint(b), maxD)
		}
	}
	return maxD // the rank is in the unbounded top bucket
}

// bucketOf returns the bucket of v nanoseconds: v itself below 2<<subBits,
// then 1<<subBits buckets for each power of two, capped at the top bucket.
func bucketOf(v uint64) int {
	if v < 2<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - subBits
	return min(shift<<subBits+int(v>>shift), numBuckets-1)
}

// midpoint returns the middle of bucket b, the inverse of [bucketOf].
func midpoint(b int) time.Duration {
	if b < 2<<subBits {
		return time.Duration(b)
	}
	shift := b>>subBits - 1
	low := uint64(b&(1<<subBits-1)|1<<subBits) << shift
	return time.Duration(low + 1<<shift/2)
}
