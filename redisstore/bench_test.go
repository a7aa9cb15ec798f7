package redisstore

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// The benchmarks run against a real redis-server on loopback, started per
// benchmark. Each reports the Redis round trips per operation.
//
//	go test -run '^$' -bench . -benchmem ./...

func reportTrips(b *testing.B, s *Store, before uint64) {
	b.ReportMetric(float64(s.Stats().RoundTrips-before)/float64(b.N), "roundtrips/op")
}

func BenchmarkAllow(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	ctx := context.Background()
	rate := Rate{PerSecond: 1e9, Burst: 1000}
	trips := s.Stats().RoundTrips
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Allow(ctx, "bench", rate); err != nil {
			b.Fatal(err)
		}
	}
	reportTrips(b, s, trips)
}

// BenchmarkAllowParallel is Allow from GOMAXPROCS goroutines on 64 keys.
func BenchmarkAllowParallel(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	ctx := context.Background()
	rate := Rate{PerSecond: 1e9, Burst: 1000}
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	trips := s.Stats().RoundTrips
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Allow(ctx, keys[i%len(keys)], rate); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	reportTrips(b, s, trips)
}

// BenchmarkAllowMany3 decides three limits per operation in one pipeline.
func BenchmarkAllowMany3(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	ctx := context.Background()
	rate := Rate{PerSecond: 1e9, Burst: 1000}
	limits := []Limit{{"user:a", rate}, {"ip:a", rate}, {"global", rate}}
	trips := s.Stats().RoundTrips
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.AllowMany(ctx, limits...); err != nil {
			b.Fatal(err)
		}
	}
	reportTrips(b, s, trips)
}

// BenchmarkByteCounterAdd is the cost of counting one 16 KiB write; the
// flushes (one per 4 writes) run in the background.
func BenchmarkByteCounterAdd(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	c, err := NewByteCounter(s, "bench", 1<<62, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	trips := s.Stats().RoundTrips
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Add(16 << 10)
	}
	b.StopTimer()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	reportTrips(b, s, trips)
}

// BenchmarkByteCounterAddParallel is both directions of many tunnels
// counting into one counter.
func BenchmarkByteCounterAddParallel(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	c, err := NewByteCounter(s, "bench", 1<<62, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1500)
		}
	})
	b.StopTimer()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLeaseAcquireRelease is one tunnel's lease: Acquire then Release,
// two round trips.
func BenchmarkLeaseAcquireRelease(b *testing.B) {
	r := startRedis(b)
	s := openStore(b, r)
	ctx := context.Background()
	trips := s.Stats().RoundTrips
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		id, ok, err := s.Acquire(ctx, "bench", 100, time.Minute)
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		if err := s.Release(ctx, "bench", id); err != nil {
			b.Fatal(err)
		}
	}
	reportTrips(b, s, trips)
}

// BenchmarkCertGet is a handshake's certificate lookup: from the in-memory
// cache, and from Redis (one GET and a PEM parse) with the cache off.
func BenchmarkCertGet(b *testing.B) {
	r := startRedis(b)
	for _, tc := range []struct {
		name string
		size int
	}{{"cached", DefaultCertCacheSize}, {"redis", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b, r, WithCertCache(tc.size))
			ctx := context.Background()
			s.Put(ctx, "bench.example", mintLeaf(b, "bench.example", 72*time.Hour))
			trips := s.Stats().RoundTrips
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok := s.Get(ctx, "bench.example"); !ok {
					b.Fatal("miss")
				}
			}
			reportTrips(b, s, trips)
		})
	}
}
