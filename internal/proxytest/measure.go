package proxytest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// BenchGET is the measured loop of BenchmarkTelemetry: GETs of u with c (a
// client of the proxy), one unmeasured first, each read to its end and
// required to be a 200, reporting allocations and the process's CPU time
// per request as cpu-ns/op.
func BenchGET(b *testing.B, c *http.Client, u string) {
	get := func() {
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
	get()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := ProcessCPU()
	for i := 0; i < b.N; i++ {
		get()
	}
	b.StopTimer()
	// CPU time of the whole process (client, proxy and origin) per
	// request: less noisy than wall time on a shared machine.
	b.ReportMetric(float64(ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// ProcessCPU returns the user and system CPU time this process has used.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// NoContent is a request hook (for fwdproxy.WithRequestHook) that answers
// every request itself with an empty 204, so that nothing goes upstream.
func NoContent(ctx context.Context, out *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 204, Body: http.NoBody, ContentLength: 0, ProtoMajor: 1, ProtoMinor: 1}, nil
}

// ServeHTTPAllocs returns the allocations of one call of h.ServeHTTP for a
// GET of http://example.com/ into a recorder, averaged over 200 runs: the
// request path of a Proxy without the network.
func ServeHTTPAllocs(h http.Handler) float64 {
	req := httptest.NewRequest("GET", "http://example.com/", nil)
	w := httptest.NewRecorder()
	return testing.AllocsPerRun(200, func() {
		w.Body.Reset()
		h.ServeHTTP(w, req)
	})
}
