package redisstore

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// BenchmarkProxySmallGET: a 100-byte GET through a Proxy, in parallel,
// without policies, with a policy's quotas in memory, and with them on a
// real Redis; redis-rt/op is the Store's round trips per request.
func BenchmarkProxySmallGET(b *testing.B) {
	r := startRedis(b)
	o := proxytest.Origin(b, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "0123456789") })
	policy := fwdproxy.WithPolicies(fwdproxy.Policy{Name: "all", Rate: fwdproxy.Rate{PerSecond: 1e9, Burst: 1e9}, BytesPerDay: 1 << 40, MaxTunnels: 100000})
	s := openStore(b, r, WithTimeout(DefaultTimeout))
	for _, bc := range []struct {
		name string
		opts []fwdproxy.Option
	}{
		{"none", nil},
		{"memory", []fwdproxy.Option{policy}},
		{"redis", []fwdproxy.Option{policy, fwdproxy.WithSharedState(s)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := fwdproxy.New(append([]fwdproxy.Option{fwdproxy.WithLogger(discardLogger()), fwdproxy.WithAllowPrivate()}, bc.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			rp := &replica{p: p, addr: proxytest.Serve(b, p)}
			c := proxytest.Client(b, &url.URL{Scheme: "http", Host: rp.addr}, nil)
			c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
			before := s.Stats().RoundTrips
			b.ReportAllocs()
			b.ResetTimer()
			b.SetParallelism(25)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(o.URL)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(s.Stats().RoundTrips-before)/float64(b.N), "redis-rt/op")
		})
	}
}
