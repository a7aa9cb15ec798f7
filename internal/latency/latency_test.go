package latency

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// maxRelErr is the documented precision of a reported quantile.
const maxRelErr = 1.0 / 32

// clock is a settable clock for tests, safe for concurrent use: the time
// elapsed since it was made.
type clock struct{ ns atomic.Int64 }

func (c *clock) elapsed() time.Duration  { return time.Duration(c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newTestWindow(window time.Duration, slots int) (*Window, *clock) {
	c := &clock{}
	return newWindow(window, slots, 2, c.elapsed), c
}

func within(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= maxRelErr*float64(want)
}

func TestBuckets(t *testing.T) {
	check := func(v uint64) {
		b := bucketOf(v)
		if b < 0 || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", v, b, numBuckets)
		}
		if v < 1<<topBits && !within(midpoint(b), time.Duration(v)) {
			t.Fatalf("midpoint(bucketOf(%d)) = %d, more than %.4f off", v, midpoint(b), maxRelErr)
		}
	}
	for v := range uint64(1 << 16) {
		check(v)
		if v > 0 && bucketOf(v) < bucketOf(v-1) {
			t.Fatalf("bucketOf not monotonic at %d", v)
		}
	}
	for shift := 16; shift < 64; shift++ {
		base := uint64(1) << shift
		for _, v := range []uint64{base - 1, base, base + 1, base + base/3, base*2 - 1} {
			check(v)
		}
	}
	check(math.MaxUint64)
	for b := 1; b < numBuckets; b++ {
		if midpoint(b) <= midpoint(b-1) {
			t.Fatalf("midpoint not increasing at bucket %d", b)
		}
		if bucketOf(uint64(midpoint(b))) != b {
			t.Fatalf("bucketOf(midpoint(%d)) = %d", b, bucketOf(uint64(midpoint(b))))
		}
	}
	if got := bucketOf(1 << 62); got != numBuckets-1 {
		t.Errorf("bucketOf(2^62) = %d, want the top bucket %d", got, numBuckets-1)
	}
}

// nearestRank returns the observation of rank ceil(q*n) in sorted.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	return sorted[max(int(math.Ceil(q*float64(len(sorted))))-1, 0)]
}

func TestQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := func(n int, f func() time.Duration) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = f()
		}
		return ds
	}
	tests := []struct {
		name string
		ds   []time.Duration
	}{
		{"one", []time.Duration{3 * time.Millisecond}},
		{"constant", gen(1000, func() time.Duration { return 1234567 * time.Nanosecond })},
		{"sub-microsecond", gen(1000, func() time.Duration { return time.Duration(r.IntN(1000)) })},
		{"uniform 1µs..10min", gen(100000, func() time.Duration {
			return time.Microsecond + time.Duration(r.Int64N(int64(10*time.Minute)))
		})},
		{"exponential mean 20ms", gen(100000, func() time.Duration {
			return time.Duration(r.ExpFloat64() * float64(20*time.Millisecond))
		})},
		{"log-uniform 1µs..10min", gen(100000, func() time.Duration {
			return time.Duration(math.Exp(math.Log(1e3) + r.Float64()*(math.Log(6e11)-math.Log(1e3))))
		})},
		{"bimodal with slow tail", gen(100000, func() time.Duration {
			if r.IntN(100) < 3 {
				return 2*time.Second + time.Duration(r.IntN(1e9))
			}
			return 800*time.Microsecond + time.Duration(r.IntN(400e3))
		})},
		{"ascending 1..200", gen(200, func() time.Duration { return 0 })},
	}
	for i := range tests[len(tests)-1].ds {
		tests[len(tests)-1].ds[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, _ := newTestWindow(time.Minute, 12)
			for _, d := range tt.ds {
				w.Observe(d)
			}
			got := w.Snapshot()
			sorted := slices.Sorted(slices.Values(tt.ds))
			if got.Count != uint64(len(tt.ds)) {
				t.Errorf("Count = %d, want %d", got.Count, len(tt.ds))
			}
			if want := sorted[len(sorted)-1]; got.Max != want {
				t.Errorf("Max = %v, want %v", got.Max, want)
			}
			for _, c := range []struct {
				q   float64
				got time.Duration
			}{{0.50, got.P50}, {0.95, got.P95}, {0.99, got.P99}} {
				if want := nearestRank(sorted, c.q); !within(c.got, want) {
					t.Errorf("P%v = %v, want %v within %.2f%%", c.q*100, c.got, want, maxRelErr*100)
				}
			}
		})
	}
}

func TestWindowExpiry(t *testing.T) {
	// 60 s in 12 slots of 5 s; the clock starts at the start of slot 0.
	w, c := newTestWindow(time.Minute, 12)
	steps := []struct {
		advance   time.Duration
		observe   time.Duration // 0: observe nothing
		wantCount uint64
		wantMax   time.Duration
	}{
		{0, 10 * time.Millisecond, 1, 10 * time.Millisecond},               // t=0
		{4 * time.Second, 30 * time.Millisecond, 2, 30 * time.Millisecond}, // t=4s, same slot
		{2 * time.Second, 20 * time.Millisecond, 3, 30 * time.Millisecond}, // t=6s, slot 1
		{53 * time.Second, 0, 3, 30 * time.Millisecond},                    // t=59s, slot 11: all in
		{time.Second, 0, 1, 20 * time.Millisecond},                         // t=60s: slot 0 left
		{4 * time.Second, 0, 1, 20 * time.Millisecond},                     // t=64s
		{time.Second, 0, 0, 0},                                             // t=65s: slot 1 left
		{0, 5 * time.Millisecond, 1, 5 * time.Millisecond},                 // reuses a cleared slot
		{time.Hour, 0, 0, 0},                                               // long idle
		{0, 7 * time.Millisecond, 1, 7 * time.Millisecond},
	}
	for i, s := range steps {
		c.advance(s.advance)
		if s.observe > 0 {
			w.Observe(s.observe)
		}
		got := w.Snapshot()
		if got.Count != s.wantCount || got.Max != s.wantMax {
			t.Errorf("step %d: Count, Max = %d, %v; want %d, %v", i, got.Count, got.Max, s.wantCount, s.wantMax)
		}
	}
}

func TestZero(t *testing.T) {
	w, c := newTestWindow(time.Minute, 12)
	if got := w.Snapshot(); got != (Quantiles{}) {
		t.Errorf("Snapshot of a new window = %+v, want zeros", got)
	}
	w.Observe(time.Second)
	c.advance(2 * time.Minute)
	if got := w.Snapshot(); got != (Quantiles{}) {
		t.Errorf("Snapshot after the window passed = %+v, want zeros", got)
	}
}

func TestEdgeCases(t *testing.T) {
	tests := []struct {
		name          string
		window        time.Duration
		slots         int
		observe       time.Duration
		clockStep     time.Duration
		wantCount     uint64
		wantP50, wMax time.Duration
	}{
		{"negative duration counts as zero", time.Minute, 12, -time.Second, 0, 1, 0, 0},
		{"huge duration", time.Minute, 12, 1000 * time.Hour, 0, 1, 1000 * time.Hour, 1000 * time.Hour},
		{"zero window and slots", 0, 0, time.Millisecond, 0, 1, time.Millisecond, time.Millisecond},
		{"negative window and slots", -time.Second, -3, time.Millisecond, 0, 1, time.Millisecond, time.Millisecond},
		{"clock goes back", time.Minute, 12, time.Millisecond, -time.Hour, 1, time.Millisecond, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, c := newTestWindow(tt.window, tt.slots)
			c.advance(tt.clockStep)
			w.Observe(tt.observe)
			got := w.Snapshot()
			if got.Count != tt.wantCount || !within(got.P50, tt.wantP50) || got.Max != tt.wMax {
				t.Errorf("Snapshot = %+v, want Count %d, P50 %v, Max %v", got, tt.wantCount, tt.wantP50, tt.wMax)
			}
		})
	}
}

func TestShards(t *testing.T) {
	// Counts in every shard are merged, and cleared together with their slot.
	c := &clock{}
	w := newWindow(time.Minute, 12, 3, c.elapsed)
	w.Observe(time.Millisecond) // sets the slot's epoch
	for i, sh := range w.shards {
		sh[0].buckets[bucketOf(uint64(time.Second))].Add(1)
		sh[0].max.Store(int64(time.Second) + int64(i))
	}
	got := w.Snapshot()
	if got.Count != 4 || !within(got.P95, time.Second) || got.Max != time.Second+2 {
		t.Errorf("Snapshot = %+v, want Count 4, P95 about 1s, Max 1.000000002s", got)
	}
	c.advance(time.Minute)
	w.Observe(time.Millisecond)
	if got := w.Snapshot(); got.Count != 1 || got.Max != time.Millisecond {
		t.Errorf("Snapshot after the slot came round again = %+v, want one observation of 1ms", got)
	}
}

func TestNewUsesRealClock(t *testing.T) {
	w := New(time.Minute, 12)
	w.Observe(time.Millisecond)
	if got := w.Snapshot(); got.Count != 1 || got.Max != time.Millisecond {
		t.Errorf("Snapshot = %+v, want one observation of 1ms", got)
	}
}

func TestConcurrentObserve(t *testing.T) {
	const goroutines, each = 8, 20000
	w, c := newTestWindow(time.Minute, 12)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				w.Observe(time.Duration(g*each+i) * time.Microsecond)
				if g == 0 && i%1000 == 0 {
					c.advance(100 * time.Millisecond) // slot changes while others observe
					w.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	got := w.Snapshot()
	if got.Count != goroutines*each {
		t.Errorf("Count = %d, want %d", got.Count, goroutines*each)
	}
	if want := time.Duration(goroutines*each-1) * time.Microsecond; got.Max != want {
		t.Errorf("Max = %v, want %v", got.Max, want)
	}
}

func TestNoAllocs(t *testing.T) {
	w := New(time.Minute, 12)
	if n := testing.AllocsPerRun(1000, func() { w.Observe(time.Millisecond) }); n != 0 {
		t.Errorf("Observe allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { w.Snapshot() }); n != 0 {
		t.Errorf("Snapshot allocates %v times", n)
	}
}

// durations is a spread of request latencies, 100µs to ~1s, for benchmarks.
var durations = func() []time.Duration {
	r := rand.New(rand.NewPCG(3, 4))
	ds := make([]time.Duration, 1024)
	for i := range ds {
		ds[i] = time.Duration(math.Exp(math.Log(1e5) + r.Float64()*math.Log(1e4)))
	}
	return ds
}()

func BenchmarkObserve(b *testing.B) {
	w := New(time.Minute, 12)
	i := 0
	for b.Loop() {
		w.Observe(durations[i%len(durations)])
		i++
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	for _, bc := range []struct {
		name   string
		spread bool
	}{{"same", false}, {"spread", true}} {
		b.Run(bc.name, func(b *testing.B) {
			w := New(time.Minute, 12)
			var start atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(start.Add(337))
				for pb.Next() {
					d := time.Millisecond
					if bc.spread {
						d = durations[i%len(durations)]
					}
					w.Observe(d)
					i++
				}
			})
		})
	}
}

func BenchmarkSnapshot(b *testing.B) {
	w, c := newTestWindow(time.Minute, 12)
	for range 12 { // fill every slot
		for _, d := range durations {
			w.Observe(d)
		}
		c.advance(5 * time.Second)
	}
	c.advance(-time.Second)
	if n := w.Snapshot().Count; n != 12*uint64(len(durations)) {
		b.Fatalf("Count = %d, want every slot full", n)
	}
	for b.Loop() {
		w.Snapshot()
	}
}
