package fwdproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// tracing returns an option installing a TracerProvider that records into
// the returned SpanRecorder.
func tracing(t testing.TB) (Option, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return WithTracerProvider(tp), rec
}

// metering returns an option installing a MeterProvider read by the
// returned ManualReader.
func metering(t testing.TB) (Option, *sdkmetric.ManualReader) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return WithMeterProvider(mp), rd
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func endedSpans(t testing.TB, rec *tracetest.SpanRecorder, kind trace.SpanKind) []sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

// TestTracePropagation: the client's trace continues through the proxy's
// server span and client span to the origin, which sees the client span as
// its parent.
func TestTracePropagation(t *testing.T) {
	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
	)
	got := make(chan string, 1)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		_, _ = io.WriteString(w, "ok")
	})
	opt, rec := tracing(t)
	tp := startProxy(t, opt)
	req, _ := http.NewRequest("GET", o.URL+"/path?q=1", nil)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := tp.client(t, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	quiesce(t, tp.Proxy)

	var tpOrigin string
	select {
	case tpOrigin = <-got:
	default:
		t.Fatal("origin saw no request")
	}
	parts := strings.Split(tpOrigin, "-")
	if len(parts) != 4 {
		t.Fatalf("origin's traceparent = %q", tpOrigin)
	}
	servers, clients := endedSpans(t, rec, trace.SpanKindServer), endedSpans(t, rec, trace.SpanKindClient)
	if len(servers) != 1 || len(clients) != 1 {
		t.Fatalf("%d server and %d client spans, want 1 and 1", len(servers), len(clients))
	}
	srv, cli := servers[0], clients[0]
	for _, tc := range []struct{ what, got, want string }{
		{"origin's trace id", parts[1], clientTrace},
		{"origin's parent span", parts[2], cli.SpanContext().SpanID().String()},
		{"server span's trace id", srv.SpanContext().TraceID().String(), clientTrace},
		{"server span's parent", srv.Parent().SpanID().String(), clientSpan},
		{"client span's parent", cli.Parent().SpanID().String(), srv.SpanContext().SpanID().String()},
		{"client span's trace id", cli.SpanContext().TraceID().String(), clientTrace},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %s, want %s", tc.what, tc.got, tc.want)
		}
	}
	host, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	want := map[string]string{
		"http.request.method":       "GET",
		"url.full":                  o.URL + "/path?q=1",
		"server.address":            host,
		"server.port":               port,
		"http.response.status_code": "200",
		"network.protocol.version":  "1.1",
	}
	for name, span := range map[string]sdktrace.ReadOnlySpan{"server": srv, "client": cli} {
		attrs := attrMap(span.Attributes())
		for k, v := range want {
			if attrs[k] != v {
				t.Errorf("%s span: %s = %q, want %q", name, k, attrs[k], v)
			}
		}
		if _, ok := attrs["error.type"]; ok {
			t.Errorf("%s span has error.type %q on success", name, attrs["error.type"])
		}
		if span.Status().Code == codes.Error {
			t.Errorf("%s span status is Error on success", name)
		}
	}
}

// TestTraceErrors: 5xx from the origin and upstream failures mark the
// spans as errors with error.type; a 4xx from the proxy does not.
func TestTraceErrors(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	refused := closedPort(t)
	for _, tc := range []struct {
		name       string
		url        string
		status     int
		errType    string
		clientSpan bool
		spanError  bool
	}{
		{"origin 503", o.URL + "/", 503, "503", true, true},
		{"refused", "http://" + refused + "/", 502, "upstream", true, true},
		{"loop", "", 508, "loop", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, rec := tracing(t)
			tp := startProxy(t, opt)
			u := tc.url
			if u == "" {
				u = "http://" + tp.Addr + "/"
			}
			resp, _ := mustGet(t, tp.client(t, nil), u)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			quiesce(t, tp.Proxy)
			servers := endedSpans(t, rec, trace.SpanKindServer)
			if len(servers) != 1 {
				t.Fatalf("%d server spans", len(servers))
			}
			attrs := attrMap(servers[0].Attributes())
			if attrs["error.type"] != tc.errType || attrs["http.response.status_code"] != fmt.Sprint(tc.status) {
				t.Errorf("server span attrs %v, want error.type %s", attrs, tc.errType)
			}
			if (servers[0].Status().Code == codes.Error) != tc.spanError {
				t.Errorf("server span status %v", servers[0].Status())
			}
			clients := endedSpans(t, rec, trace.SpanKindClient)
			if tc.clientSpan != (len(clients) == 1) {
				t.Fatalf("%d client spans", len(clients))
			}
			if tc.clientSpan {
				ca := attrMap(clients[0].Attributes())
				if ca["error.type"] != tc.errType || clients[0].Status().Code != codes.Error {
					t.Errorf("client span: %v %v", ca, clients[0].Status())
				}
			}
		})
	}
}

// TestTunnelSpan: a CONNECT tunnel is one server span carrying its bytes
// each way.
func TestTunnelSpan(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	opt, rec := tracing(t)
	tp := startProxy(t, opt)
	tunnelRoundTrip(t, tp, addr, 12345)
	quiesce(t, tp.Proxy)
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	a := attrMap(spans[0].Attributes())
	want := map[string]string{
		"http.request.method":            "CONNECT",
		"http.response.status_code":      "200",
		"fwdproxy.tunnel.bytes_sent":     "12345",
		"fwdproxy.tunnel.bytes_received": "12345",
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, a[k], v, a)
		}
	}
	if spans[0].Name() != "CONNECT" || spans[0].SpanKind() != trace.SpanKindServer {
		t.Errorf("span %q kind %v", spans[0].Name(), spans[0].SpanKind())
	}
}

// collect reads every metric of rd into a map by name.
func collect(t testing.TB, rd *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// histCount sums the counts of a histogram's points whose attributes
// include every one of want.
func histCount(t testing.TB, m metricdata.Metrics, want ...attribute.KeyValue) uint64 {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T, not a float64 histogram", m.Name, m.Data)
	}
	var n uint64
	for _, dp := range h.DataPoints {
		if hasAll(dp.Attributes, want) {
			n += dp.Count
		}
	}
	return n
}

func sumOf(t testing.TB, m metricdata.Metrics, want ...attribute.KeyValue) int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is %T, not an int64 sum", m.Name, m.Data)
	}
	var n int64
	for _, dp := range s.DataPoints {
		if hasAll(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// TestMetrics checks metric values after known traffic: three GETs over
// one keep-alive connection, one refused request and one tunnel.
func TestMetrics(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	opt, rd := metering(t)
	deny := WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		if out.URL.Path == "/deny" {
			return nil, Deny(403, "no")
		}
		return nil, nil
	})
	tp := startProxy(t, opt, deny)
	c := tp.client(t, nil)
	for range 3 {
		mustGet(t, c, o.URL+"/")
	}
	if resp, _ := mustGet(t, c, o.URL+"/deny"); resp.StatusCode != 403 {
		t.Fatalf("deny: %d", resp.StatusCode)
	}
	tunnelRoundTrip(t, tp, echoAddr, 1000)
	quiesce(t, tp.Proxy)

	ms := collect(t, rd)
	get := attribute.String("http.request.method", "GET")
	ok := attribute.Int("http.response.status_code", 200)
	for _, tc := range []struct {
		name string
		got  int64
		want int64
	}{
		{"server GET 200", int64(histCount(t, ms["http.server.request.duration"], get, ok)), 3},
		{"server GET 403", int64(histCount(t, ms["http.server.request.duration"], get, attribute.Int("http.response.status_code", 403), attribute.String("error.type", "forbidden"))), 1},
		{"server CONNECT", int64(histCount(t, ms["http.server.request.duration"], attribute.String("http.request.method", "CONNECT"))), 1},
		{"client GET 200", int64(histCount(t, ms["http.client.request.duration"], get, ok)), 3},
		{"active requests", sumOf(t, ms["http.server.active_requests"]), 0},
		{"upstream conns", sumOf(t, ms["fwdproxy.upstream.connections"]), 3},
		{"upstream conns reused", sumOf(t, ms["fwdproxy.upstream.connections"], attribute.Bool("fwdproxy.connection.reused", true)), 2},
		{"tunnel bytes transmit", sumOf(t, ms["fwdproxy.tunnel.io"], attribute.String("network.io.direction", "transmit")), 1000},
		{"tunnel bytes receive", sumOf(t, ms["fwdproxy.tunnel.io"], attribute.String("network.io.direction", "receive")), 1000},
		{"active tunnels", sumOf(t, ms["fwdproxy.tunnel.active"]), 0},
		{"tunnel duration", int64(histCount(t, ms["fwdproxy.tunnel.duration"])), 1},
		{"denials", sumOf(t, ms["fwdproxy.denials"], attribute.String("fwdproxy.denial.reason", "forbidden")), 1},
		{"dns hits+misses", sumOf(t, ms["fwdproxy.dns.hits"]) + sumOf(t, ms["fwdproxy.dns.misses"]), int64(tp.Stats().DNS.Hits + tp.Stats().DNS.Misses)},
		{"log dropped", sumOf(t, ms["fwdproxy.log.dropped"]), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	for _, name := range []string{"fwdproxy.dns.coalesced", "fwdproxy.dns.stale", "fwdproxy.dns.evictions", "fwdproxy.dns.errors"} {
		if _, ok := ms[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	h := ms["http.server.request.duration"].Data.(metricdata.Histogram[float64])
	if b := h.DataPoints[0].Bounds; len(b) != len(durationBuckets) || b[0] != 0.005 || b[len(b)-1] != 10 {
		t.Errorf("bucket bounds %v", b)
	}
	if u := ms["http.server.request.duration"].Unit; u != "s" {
		t.Errorf("unit %q", u)
	}
}

// TestNoopAllocations: with no-op providers the request path allocates
// exactly as much as with telemetry switched off.
func TestNoopAllocations(t *testing.T) {
	allocs := func(opts ...Option) float64 {
		p, err := New(append([]Option{WithRequestHook(proxytest.NoContent), WithLogger(testLogger(t))}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		return proxytest.ServeHTTPAllocs(p)
	}
	off := allocs(func(c *config) error { c.telemetryOff = true; return nil })
	noop := allocs(WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider()))
	if noop != off {
		t.Errorf("allocations per request: %v with no-op providers, %v with telemetry off", noop, off)
	}
	opt, _ := tracing(t)
	if sdk := allocs(opt); sdk <= off {
		t.Errorf("SDK tracing allocates %v, off %v: the measurement sees nothing", sdk, off)
	}
}

// TestUpgradeSpan: a request upgraded with 101 is one server span with
// status 101, a client span, and the relayed bytes each way.
func TestUpgradeSpan(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
	opt, rec := tracing(t)
	tp := startProxy(t, opt)
	c, br := tp.rawConn(t)
	mustWrite(t, c, "GET "+o.URL+"/ws HTTP/1.1\r\nHost: "+o.Listener.Addr().String()+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	mustWrite(t, c, "hello")
	b := make([]byte, 5)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	c.Close()
	quiesce(t, tp.Proxy)
	servers, clients := endedSpans(t, rec, trace.SpanKindServer), endedSpans(t, rec, trace.SpanKindClient)
	if len(servers) != 1 || len(clients) != 1 {
		t.Fatalf("%d server, %d client spans", len(servers), len(clients))
	}
	a := attrMap(servers[0].Attributes())
	for k, v := range map[string]string{"http.response.status_code": "101", "fwdproxy.tunnel.bytes_sent": "5", "fwdproxy.tunnel.bytes_received": "5"} {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
}

// TestConnectOverHTTP2Span: an HTTP/2 CONNECT stream, relayed through the
// instrumented ResponseWriter, is one span with status 200 and its bytes.
func TestConnectOverHTTP2Span(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	opt, rec := tracing(t)
	p, err := New(WithLogger(testLogger(t)), opt, WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = p.Shutdown(context.Background())
	})
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	u, _ := url.Parse(srv.URL)
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: u.Host}, Host: addr, Header: http.Header{}, Body: pr}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("CONNECT over h2: %s %d", resp.Proto, resp.StatusCode)
	}
	const msg = "over h2"
	mustWrite(t, pw, msg)
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != msg {
		t.Fatalf("echo %q %v", b, err)
	}
	pw.Close()
	resp.Body.Close()
	quiesce(t, p)
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	a := attrMap(spans[0].Attributes())
	for k, v := range map[string]string{"http.response.status_code": "200", "network.protocol.version": "2",
		"fwdproxy.tunnel.bytes_sent": "7", "fwdproxy.tunnel.bytes_received": "7"} {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
}
