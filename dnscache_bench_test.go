package fwdproxy

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// benchResolver returns a Resolver with the default hosts file asking a
// loopback server that knows bench.test and n0.test to n1023.test.
func benchResolver(b *testing.B) (*Resolver, *dnstest.Server) {
	b.Helper()
	srv := dnstest.NewServer(b)
	srv.Add("bench.test. 3600 IN A 192.0.2.1", "bench.test. 3600 IN AAAA 2001:db8::1")
	for i := range 1024 {
		srv.Add("n" + strconv.Itoa(i) + ".test. 3600 IN A 192.0.2.2")
	}
	r, err := NewResolver(WithDNSServers(srv.Addr()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r, srv
}

func lookupOrFail(b *testing.B, r *Resolver, host string) {
	if _, err := r.LookupNetIP(context.Background(), host); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkLookupNetIPCached(b *testing.B) {
	r, _ := benchResolver(b)
	names := make([]string, 1024)
	for i := range names {
		names[i] = "n" + strconv.Itoa(i) + ".test"
		lookupOrFail(b, r, names[i])
	}
	lookupOrFail(b, r, "bench.test")

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			lookupOrFail(b, r, "bench.test")
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				lookupOrFail(b, r, "bench.test")
			}
		})
	})
	b.Run("parallel-1024-names", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				lookupOrFail(b, r, names[i&1023])
			}
		})
	})
}

// BenchmarkResolverVsGo compares lookups of one name on the same loopback
// server: this Resolver from its cache, this Resolver's query path without
// the cache, and Go's resolver, which does not cache.
func BenchmarkResolverVsGo(b *testing.B) {
	r, srv := benchResolver(b)
	ctx := context.Background()
	lookupOrFail(b, r, "bench.test")
	goResolver := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, srv.Addr())
		},
	}

	b.Run("fwdproxy-cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			lookupOrFail(b, r, "bench.test")
		}
	})
	b.Run("fwdproxy-query", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ans := r.resolve(ctx, "bench.test"); ans.err != nil {
				b.Fatal(ans.err)
			}
		}
	})
	b.Run("go-net-resolver", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := goResolver.LookupNetIP(ctx, "ip", "bench.test."); err != nil {
				b.Fatal(err)
			}
		}
	})
}
