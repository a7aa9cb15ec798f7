package upstream

import (
	"fmt"
	"testing"
)

// BenchmarkPick measures the route decision per policy, for one static
// upstream and for three, with Pick and with AppendPick into a buffer on
// the stack.
func BenchmarkPick(b *testing.B) {
	clock := newFakeClock()
	for _, policy := range []Policy{Failover, RoundRobin, LeastOutstanding, ConsistentHash} {
		for _, n := range []int{1, 3} {
			p, err := NewPool(policy, testUpstreams(b, clock, n)...)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%v/%d/Pick", policy, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = p.Pick("www.example.com")
				}
			})
			b.Run(fmt.Sprintf("%v/%d/AppendPick", policy, n), func(b *testing.B) {
				b.ReportAllocs()
				var buf [8]*Upstream
				for b.Loop() {
					_ = p.AppendPick(buf[:0], "www.example.com")
				}
			})
		}
	}
	// One of three down (in back-off): the slower path.
	ups := testUpstreams(b, clock, 3)
	fail(ups[1])
	p, _ := NewPool(RoundRobin, ups...)
	b.Run("round-robin/3-one-down/Pick", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = p.Pick("www.example.com")
		}
	})
}
