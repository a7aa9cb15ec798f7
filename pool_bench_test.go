package fwdproxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkLargeGET measures a 1 MiB GET (Content-Length, so the proxy
// splices it) over keep-alive loopback connections, direct and through the
// proxy, in one run; MB/s is the figure to compare.
func BenchmarkLargeGET(b *testing.B) {
	const size = 1 << 20
	body := make([]byte, size)
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	tp := startProxy(b)
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(direct.CloseIdleConnections)
	proxied := tp.client(b, nil)
	proxied.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	buf := make([]byte, 64<<10)
	for _, bc := range []struct {
		name string
		c    *http.Client
	}{{"direct", direct}, {"proxy", proxied}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				resp, err := bc.c.Get(o.URL + "/1m")
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != size {
					b.Fatalf("%s: %d bytes", resp.Status, n)
				}
			}
		})
	}
}
