package flows

import (
	"sync"
	"testing"
)

// benchFlows cycles through 2,000 flows, twice the ring's count cap, so
// that a flow is re-added only after it was evicted.
func benchFlows() func() *Flow {
	flows := make([]*Flow, 2000)
	for i := range flows {
		flows[i] = newFlow(i, 0, 512)
	}
	next := 0
	return func() *Flow {
		f := flows[next]
		next = (next + 1) % len(flows)
		return f
	}
}

// BenchmarkRingAdd measures recording a flow already built: with no
// subscriber, with one that keeps up, and with one whose buffer is full.
func BenchmarkRingAdd(b *testing.B) {
	b.Run("no_subscriber", func(b *testing.B) {
		r := NewRing(Options{})
		next := benchFlows()
		b.ReportAllocs()
		for b.Loop() {
			r.Add(next())
		}
	})
	b.Run("one_subscriber", func(b *testing.B) {
		r := NewRing(Options{})
		s := r.Subscribe(DefaultStreamBuffer)
		var wg sync.WaitGroup
		wg.Go(func() {
			for range s.C() {
			}
		})
		next := benchFlows()
		b.ReportAllocs()
		for b.Loop() {
			r.Add(next())
		}
		b.StopTimer()
		s.Close()
		wg.Wait()
	})
	b.Run("full_subscriber", func(b *testing.B) {
		r := NewRing(Options{})
		s := r.Subscribe(1)
		defer s.Close()
		next := benchFlows()
		b.ReportAllocs()
		for b.Loop() {
			r.Add(next())
		}
	})
	b.Run("parallel", func(b *testing.B) {
		r := NewRing(Options{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			next := benchFlows()
			for pb.Next() {
				r.Add(next())
			}
		})
	})
}

// BenchmarkQuery measures a filtered query of a full ring.
func BenchmarkQuery(b *testing.B) {
	r := NewRing(Options{})
	next := benchFlows()
	for range DefaultMaxFlows {
		r.Add(next())
	}
	f := Filter{Host: "example", Method: "GET", Limit: 200}
	b.ReportAllocs()
	for b.Loop() {
		r.Query(f)
	}
}
