package pac

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// mapResolver answers from memory, after an optional delay standing in
// for a DNS round trip.
type mapResolver struct {
	delay time.Duration
	addrs map[string][]netip.Addr
}

func (m mapResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if m.delay > 0 {
		t := time.NewTimer(m.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if a, ok := m.addrs[host]; ok {
		return a, nil
	}
	return m.addrs["*"], nil
}

var benchResolver = mapResolver{addrs: map[string][]netip.Addr{
	"app.corp.test":    {netip.MustParseAddr("10.1.2.3")},
	"web.example.test": {netip.MustParseAddr("192.0.2.10")},
	"*":                {netip.MustParseAddr("192.0.2.20")},
}}

// BenchmarkFindProxyForURL measures an answer from the cache, and an
// evaluation of routingPAC (helpers, two lookups from memory) with the
// cache off.
func BenchmarkFindProxyForURL(b *testing.B) {
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		e, err := New([]byte(routingPAC), WithResolver(benchResolver))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.FindProxyForURL(ctx, "https://web.example.test/", "web.example.test"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		e, err := New([]byte(routingPAC), WithResolver(benchResolver), WithCache(0, 0))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.FindProxyForURL(ctx, "https://web.example.test/", "web.example.test"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRuntimes compares one runtime (what a mutex gives) with pools
// of runtimes, uncached, on 4×GOMAXPROCS parallel callers asking for
// distinct hosts, whose script waits 1 ms on DNS.
func BenchmarkRuntimes(b *testing.B) {
	slow := benchResolver
	slow.delay = time.Millisecond
	var seq atomic.Uint64
	for _, n := range []int{1, runtime.GOMAXPROCS(0), 4 * runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("runtimes=%d", n), func(b *testing.B) {
			e, err := New([]byte(routingPAC), WithResolver(slow), WithCache(0, 0), WithRuntimes(n), WithTimeout(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					host := fmt.Sprintf("h%d.example.test", seq.Add(1))
					if _, err := e.FindProxyForURL(ctx(), "https://"+host+"/", host); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func ctx() context.Context { return context.Background() }
