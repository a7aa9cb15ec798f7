package flows

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
	"time"
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

// BenchmarkRecord measures what the proxy would pay per request for the
// inspector: building the record from a typical request (10 header
// fields, a 6-field response, 1 KiB of response body captured) — the
// header clones and the prefix copy are the record's allocations — and
// adding it to a ring nobody watches.
func BenchmarkRecord(b *testing.B) {
	reqHeader := http.Header{
		"Host": {"api.example.com"}, "User-Agent": {"Mozilla/5.0 (X11; Linux x86_64)"}, "Accept": {"application/json"},
		"Accept-Encoding": {"gzip, deflate, br"}, "Accept-Language": {"en-GB,en;q=0.9"}, "Authorization": {"Bearer abc"},
		"Cookie": {"a=1; b=2"}, "Connection": {"keep-alive"}, "Referer": {"https://example.com/"}, "X-Request-Id": {"1234"},
	}
	respHeader := http.Header{
		"Content-Type": {"application/json"}, "Content-Length": {"1024"}, "Date": {"Mon, 02 Jan 2026 15:04:05 GMT"},
		"Cache-Control": {"no-store"}, "Server": {"origin"}, "Set-Cookie": {"sid=x"},
	}
	body := make([]byte, 1024)
	start := time.Now()
	r := NewRing(Options{})
	b.ReportAllocs()
	for b.Loop() {
		r.Add(&Flow{
			Start: start, Method: http.MethodGet, URL: "https://api.example.com/v1/items?page=2", Host: "api.example.com",
			Proto: "HTTP/1.1", Status: 200, Client: "127.0.0.1:50000", Upstream: "192.0.2.1:443",
			BytesOut: 1024, RequestHeader: reqHeader.Clone(), ResponseHeader: respHeader.Clone(),
			ResponseBody: Body{Prefix: bytes.Clone(body)},
			Timings:      Timings{FirstByte: time.Millisecond, Total: 2 * time.Millisecond},
		})
	}
}
