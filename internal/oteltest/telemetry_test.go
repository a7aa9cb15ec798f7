package oteltest

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

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// TestTracePropagation: the client's trace continues through the proxy's
// server span and client span to the origin, which sees the client span as
// its parent.
func TestTracePropagation(t *testing.T) {
	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
	)
	got := make(chan string, 1)
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		_, _ = io.WriteString(w, "ok")
	})
	opt, rec := tracing(t)
	tp := startProxy(t, opt)
	req, _ := http.NewRequest("GET", o.URL+"/path?q=1", nil)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := proxytest.Client(t, tp.URL, nil).Do(req)
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
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	refused := proxytest.ClosedPort(t)
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
			resp, _ := proxytest.MustGet(t, proxytest.Client(t, tp.URL, nil), u)
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
	addr := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	opt, rec := tracing(t)
	tp := startProxy(t, opt, allowPortOf(t, addr))
	proxytest.TunnelRoundTrip(t, tp.Addr, addr, 12345)
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

// TestMetrics checks metric values after known traffic: three GETs over
// one keep-alive connection, one refused request and one tunnel.
func TestMetrics(t *testing.T) {
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	echoAddr := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	opt, rd := metering(t)
	deny := fwdproxy.WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		if out.URL.Path == "/deny" {
			return nil, fwdproxy.Deny(403, "no")
		}
		return nil, nil
	})
	tp := startProxy(t, opt, deny, allowPortOf(t, echoAddr))
	c := proxytest.Client(t, tp.URL, nil)
	for range 3 {
		proxytest.MustGet(t, c, o.URL+"/")
	}
	if resp, _ := proxytest.MustGet(t, c, o.URL+"/deny"); resp.StatusCode != 403 {
		t.Fatalf("deny: %d", resp.StatusCode)
	}
	proxytest.TunnelRoundTrip(t, tp.Addr, echoAddr, 1000)
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
	// The buckets of the HTTP semantic conventions (the library's durationBuckets).
	durationBuckets := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	if b := h.DataPoints[0].Bounds; len(b) != len(durationBuckets) || b[0] != 0.005 || b[len(b)-1] != 10 {
		t.Errorf("bucket bounds %v", b)
	}
	if u := ms["http.server.request.duration"].Unit; u != "s" {
		t.Errorf("unit %q", u)
	}
}

// TestNoopAllocationsSeeSDK is the other half of the library's
// TestNoopAllocations, which finds that with no-op providers the request
// path allocates exactly as much as with telemetry switched off: the same
// measurement sees what SDK tracing allocates, so that finding is not for
// want of sensitivity. The switch that turns telemetry off is not public
// API; no-op providers, equal to it by that test, are the baseline here.
func TestNoopAllocationsSeeSDK(t *testing.T) {
	allocs := func(opts ...fwdproxy.Option) float64 {
		p, err := fwdproxy.New(append([]fwdproxy.Option{fwdproxy.WithRequestHook(proxytest.NoContent), fwdproxy.WithLogger(proxytest.Logger(t))}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		return proxytest.ServeHTTPAllocs(p)
	}
	noop := allocs(fwdproxy.WithTracerProvider(tracenoop.NewTracerProvider()), fwdproxy.WithMeterProvider(metricnoop.NewMeterProvider()))
	opt, _ := tracing(t)
	if sdk := allocs(opt); sdk <= noop {
		t.Errorf("SDK tracing allocates %v, no-op %v: the measurement sees nothing", sdk, noop)
	}
}

// TestUpgradeSpan: a request upgraded with 101 is one server span with
// status 101, a client span, and the relayed bytes each way.
func TestUpgradeSpan(t *testing.T) {
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
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
	c, br := proxytest.RawConn(t, tp.Addr)
	proxytest.MustWrite(t, c, "GET "+o.URL+"/ws HTTP/1.1\r\nHost: "+o.Listener.Addr().String()+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	proxytest.MustWrite(t, c, "hello")
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
	addr := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	opt, rec := tracing(t)
	p, err := fwdproxy.New(fwdproxy.WithLogger(proxytest.Logger(t)), opt, fwdproxy.WithAllowPrivate(), allowPortOf(t, addr))
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
	proxytest.MustWrite(t, pw, msg)
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
