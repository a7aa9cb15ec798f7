package dashboard

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

func TestTopKExact(t *testing.T) {
	k := NewTopK(8)
	for i, n := range []int{5, 3, 9, 1} {
		for range n {
			k.Observe("h" + strconv.Itoa(i))
		}
	}
	top, total := k.Top(3)
	if total != 18 || len(top) != 3 || top[0] != (TopEntry{"h2", 9}) || top[1] != (TopEntry{"h0", 5}) || top[2] != (TopEntry{"h1", 3}) {
		t.Errorf("Top(3) = %v, %v", top, total)
	}
	if all, _ := k.Top(100); len(all) != 4 {
		t.Errorf("Top(100) has %d entries, want the 4 seen", len(all))
	}
}

// TestTopKHeavyHitters checks the space-saving guarantee: among many rare
// keys, the frequent ones stay tracked and come first.
func TestTopKHeavyHitters(t *testing.T) {
	k := NewTopK(16)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100_000 {
		switch {
		case i%4 == 0:
			k.Observe("big.example")
		case i%10 == 1:
			k.Observe("medium.example")
		default:
			k.Observe("rare-" + strconv.Itoa(rng.IntN(5000)))
		}
	}
	top, total := k.Top(2)
	if top[0].Key != "big.example" || top[1].Key != "medium.example" {
		t.Fatalf("Top(2) = %v", top)
	}
	// Counts overestimate by at most total/capacity.
	if c := top[0].Count; c < 25_000 || c > 25_000+total/16 {
		t.Errorf("big.example counted %v, want 25,000 to %v", c, 25_000+total/16)
	}
}

func TestTopKDecay(t *testing.T) {
	k := NewTopK(4)
	for range 100 {
		k.Observe("old")
	}
	k.Decay(decayFactor(120, 60)) // two half-lives
	for range 30 {
		k.Observe("new")
	}
	top, total := k.Top(2)
	if top[0].Key != "new" || math.Abs(top[1].Count-25) > 1e-9 || math.Abs(total-55) > 1e-9 {
		t.Errorf("after decay: %v total %v, want new first, old at 25, total 55", top, total)
	}
	k.Decay(0)   // ignored
	k.Decay(1.5) // ignored
	if _, total := k.Top(1); math.Abs(total-55) > 1e-9 {
		t.Errorf("out-of-range factors changed the counts: %v", total)
	}
}

func TestTopKConcurrent(t *testing.T) {
	k := NewTopK(4)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k.Observe("h" + strconv.Itoa((g+i)%6))
				if i%100 == 0 {
					k.Decay(0.99)
					k.Top(2)
				}
			}
		})
	}
	wg.Wait()
	top, _ := k.Top(10)
	if len(top) != 4 {
		t.Errorf("%d tracked, want the capacity, 4", len(top))
	}
	for i, e := range k.heap { // the index and the positions match the heap
		if k.idx[e.key] != e || e.pos != i {
			t.Fatalf("index broken at %d", i)
		}
		if p := (i - 1) / 2; i > 0 && k.heap[p].count > e.count {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

// TestTopKObserveAllocs checks that counting a tracked key does not
// allocate: the proxy calls Observe per request.
func TestTopKObserveAllocs(t *testing.T) {
	k := NewTopK(64)
	hosts := make([]string, 32)
	for i := range hosts {
		hosts[i] = "host-" + strconv.Itoa(i) + ".example"
		k.Observe(hosts[i])
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		k.Observe(hosts[i%len(hosts)])
		i++
	}); n != 0 {
		t.Errorf("Observe of a tracked key: %v allocations", n)
	}
}

// BenchmarkTopKObserve measures the per-request cost: a key already
// tracked (the common case: a few busy destinations), a new key each time
// (the worst case: every request to another host), and many goroutines.
func BenchmarkTopKObserve(b *testing.B) {
	hosts := make([]string, 1024)
	for i := range hosts {
		hosts[i] = "host-" + strconv.Itoa(i) + ".example.com"
	}
	b.Run("tracked", func(b *testing.B) {
		k := NewTopK(DefaultTopCapacity)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			k.Observe(hosts[i%32])
			i++
		}
	})
	b.Run("untracked", func(b *testing.B) {
		k := NewTopK(DefaultTopCapacity)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			k.Observe(hosts[i%len(hosts)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		k := NewTopK(DefaultTopCapacity)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k.Observe(hosts[i%32])
				i++
			}
		})
	})
}
