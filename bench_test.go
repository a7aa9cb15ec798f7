package fwdproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkSmallGET measures a 100-byte GET over loopback keep-alive
// connections, direct and through the proxy, in one run. Client and origin
// live in the same process, so the proxy's own cost per request is the
// difference between the two sub-benchmarks (time, bytes and allocations).
func BenchmarkSmallGET(b *testing.B) {
	body := strings.Repeat("x", 100)
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})
	tp := startProxy(b)
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(direct.CloseIdleConnections)
	proxied := tp.client(b, nil)
	proxied.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	for _, bc := range []struct {
		name string
		c    *http.Client
	}{{"direct", direct}, {"proxy", proxied}} {
		run := func(b *testing.B, get func()) {
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				get()
			}
		}
		get := func() {
			resp, err := bc.c.Get(o.URL + "/small")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
		b.Run(bc.name, func(b *testing.B) { run(b, get) })
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
		})
	}
}
