package fwdproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
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
	// proxy-recording: the same with an Admin open, its flow ring (1,000
	// flows, the default) recording every request, nobody watching.
	tr := startProxy(b)
	admin, err := tr.NewAdmin(AdminOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { admin.Close() })
	recorded := tr.client(b, nil)
	recorded.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	// proxy-recording-20k: the same with a ring of 20,000 flows.
	tr20 := startProxy(b)
	admin20, err := tr20.NewAdmin(AdminOptions{MaxFlows: 20_000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { admin20.Close() })
	recorded20 := tr20.client(b, nil)
	recorded20.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	// proxy-policy: the same with a default policy (per client address)
	// whose every quota is on and none reached, kept in memory.
	tq := startProxy(b, WithPolicies(Policy{Name: "all", Rate: Rate{PerSecond: 1e9, Burst: 1e9}, BytesPerDay: 1 << 40, MaxTunnels: 100000}))
	quotas := tq.client(b, nil)
	quotas.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	for _, bc := range []struct {
		name  string
		c     *http.Client
		flows int
	}{{"direct", direct, 0}, {"proxy", proxied, 0}, {"proxy-recording", recorded, 1000}, {"proxy-recording-20k", recorded20, 20_000}, {"proxy-policy", quotas, 0}} {
		filled := false
		run := func(b *testing.B, get func()) {
			// A full flow ring from the first timed request.
			if !filled {
				for range bc.flows {
					get()
				}
				filled = true
			}
			b.ReportAllocs()
			b.ResetTimer()
			gc := readGCCPU()
			for i := 0; i < b.N; i++ {
				get()
			}
			b.StopTimer()
			reportGCCPU(b, gc)
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
			gc := readGCCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
			reportGCCPU(b, gc)
		})
	}
}

// gcCPUMetrics are the garbage collector's CPU time that requests pay for:
// mark assists, the dedicated mark workers and the pauses; not the idle
// workers, which only take CPU nothing else wanted.
var gcCPUMetrics = []metrics.Sample{
	{Name: "/cpu/classes/gc/mark/assist:cpu-seconds"},
	{Name: "/cpu/classes/gc/mark/dedicated:cpu-seconds"},
	{Name: "/cpu/classes/gc/pause:cpu-seconds"},
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/gc/scan/heap:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

type gcCPU struct {
	seconds    float64
	cycles     uint64
	scan, live uint64 // the heap scanned, and live, at the last cycle
}

func readGCCPU() gcCPU {
	s := slices.Clone(gcCPUMetrics)
	metrics.Read(s)
	var g gcCPU
	for _, m := range s[:3] {
		g.seconds += m.Value.Float64()
	}
	g.cycles, g.scan, g.live = s[3].Value.Uint64(), s[4].Value.Uint64(), s[5].Value.Uint64()
	return g
}

// reportGCCPU reports the GC's CPU time per request since before, the
// requests per GC cycle, and the heap the last cycle found live and had to
// scan (the live heap less the objects without pointers).
func reportGCCPU(b *testing.B, before gcCPU) {
	after := readGCCPU()
	b.ReportMetric((after.seconds-before.seconds)*1e9/float64(b.N), "gc-ns/op")
	if n := after.cycles - before.cycles; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "req/gc")
	}
	b.ReportMetric(float64(after.live)/1e3, "live-kB")
	b.ReportMetric(float64(after.scan)/1e3, "scan-kB")
}

// BenchmarkAccessControl measures the request path with the access checks
// open (guard lifted, no rules, no auth) and with the guard, a dozen rules
// and Basic authentication all on, in one run. The loopback origin is let
// through the guard by WithAllowedCIDRs, so every address is still
// classified.
func BenchmarkAccessControl(b *testing.B) {
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 100))
	})
	open := startProxy(b)
	guarded := startGuardedProxy(b,
		WithAllowedCIDRs("127.0.0.0/8"),
		WithDenyHosts("*.ads.example", "tracker.example", "10.0.0.0/8", "192.168.0.0/16", "*.internal", "metadata.google.internal"),
		WithAllowHosts("127.0.0.1", "*.example.com", "*.example.org", "172.16.0.0/12", "*.corp.example", "api.example.net"),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "s3cret", "bob": "hunter2", "carol": "pw"})),
	)
	for _, bc := range []struct {
		name string
		tp   *testProxy
		user *url.Userinfo
	}{{"open", open, nil}, {"guard+rules+auth", guarded, url.UserPassword("bob", "hunter2")}} {
		u := *bc.tp.URL
		u.User = bc.user
		tr := &http.Transport{Proxy: http.ProxyURL(&u), MaxIdleConnsPerHost: 64, DisableCompression: true}
		b.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Get(o.URL + "/small")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}

// BenchmarkIntercept compares a small GET through the same proxy as plain
// HTTP, as HTTPS through a CONNECT tunnel, and as HTTPS intercepted
// (HTTP/1.1 and HTTP/2 on the client side), over keep-alive connections;
// "handshake" measures a new intercepted TLS connection with a cached leaf
// (CONNECT, full handshake, one request).
func BenchmarkIntercept(b *testing.B) {
	body := strings.Repeat("x", 100)
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	}
	plain := origin(b, h)
	secure, originRoots := tlsOrigin(b, h)
	ca, caPool := newTestCA(b)
	// Interception of 127.0.0.1 only: the tunnel case uses "localhost".
	tp := startProxy(b, WithUpstreamRootCAs(originRoots), WithInterception(ca, WithInterceptFunc(
		func(ctx context.Context, target string, r *http.Request) bool {
			return strings.HasPrefix(target, "127.")
		})))
	_, port, _ := net.SplitHostPort(secure.Listener.Addr().String())
	tunnelRoots := originRoots.Clone()
	newClient := func(b *testing.B, roots *x509.CertPool, h2, keepAlive bool) *http.Client {
		tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), MaxIdleConnsPerHost: 64, DisableCompression: true,
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "example.com"}, ForceAttemptHTTP2: h2, DisableKeepAlives: !keepAlive}
		if !h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		b.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	for _, bc := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"plain-http", newClient(b, nil, false, true), plain.URL + "/small"},
		{"tunnel-h1", newClient(b, tunnelRoots, false, true), "https://localhost:" + port + "/small"},
		{"intercept-h1", newClient(b, caPool, false, true), secure.URL + "/small"},
		{"intercept-h2", newClient(b, caPool, true, true), secure.URL + "/small"},
		{"intercept-handshake", newClient(b, caPool, false, false), secure.URL + "/small"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := bc.c.Get(bc.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}

// BenchmarkRecording measures what recording a flow adds to a request
// without the network: ServeHTTP of a GET that a request hook answers,
// with no Admin, and with one recording (nobody watching).
func BenchmarkRecording(b *testing.B) {
	for _, recording := range []bool{false, true} {
		p, err := New(WithRequestHook(proxytest.NoContent), WithLogger(testLogger(b)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Shutdown(context.Background()) })
		name := "off"
		if recording {
			a, err := p.NewAdmin(AdminOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { a.Close() })
			name = "recording"
		}
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "http://example.com/x?y=1", nil)
			req.Header.Set("User-Agent", "bench/1.0")
			req.Header.Set("Accept", "*/*")
			b.ReportAllocs()
			for b.Loop() {
				p.ServeHTTP(httptest.NewRecorder(), req) // a header map of its own: the flow keeps it
			}
		})
	}
}
