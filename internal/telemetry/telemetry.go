// Package telemetry holds the proxy's OpenTelemetry mechanics: the tracer,
// propagator and instruments of one Proxy, the attribute sets its
// measurements carry (made once per distinct combination and cached per
// Telemetry, not per process), the span attributes of a request, and a
// header carrier that does not canonicalize the trace-context keys.
//
// It knows nothing of the proxy. The root package decides what is measured
// and when: one server-side middleware around the request pipeline and one
// client-side wrapper around the upstream router (telemetry.go there), which
// call the methods here.
package telemetry

import (
	"context"
	"errors"
	"net/http"
	"reflect"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// InstrumentationName names the tracer and meter of the proxy.
const InstrumentationName = "github.com/fwdproxy/fwdproxy"

// durationBuckets are the bucket boundaries, in seconds, that the HTTP
// semantic conventions recommend for request durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Config is what New builds a Telemetry from. Nil providers and propagator
// fall back to the OTel globals as they are when New runs.
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	// Off disables every per-request measurement. Only the benchmark
	// baseline sets it.
	Off bool
	// Counts returns the counters the observable instruments report
	// (the DNS cache's and the log queue's); it is called from the metric
	// callback, on the reader's goroutine.
	Counts func() Counts
}

// Counts are the cumulative counters that the observable instruments
// report at each collection.
type Counts struct {
	DNSHits, DNSMisses, DNSCoalesced, DNSStale, DNSEvictions, DNSErrors uint64
	LogDropped                                                          uint64
	QuotaCuts, QuotaStoreErrors                                         uint64
	// Handshakes refused by front end (the root package's
	// HandshakeRefusals).
	RefusedProxyHeader, RefusedTLS, RefusedSOCKS uint64
}

// Telemetry holds the tracer, propagator and instruments of one Proxy,
// and the caches of the attribute sets its measurements carry. It is safe
// for concurrent use.
type Telemetry struct {
	// Off disables every per-request measurement (Config.Off).
	Off bool
	// Tracing is false for no-op tracers: no span is started at all.
	Tracing bool

	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	serverDuration metric.Float64Histogram
	clientDuration metric.Float64Histogram
	activeRequests metric.Int64UpDownCounter
	tunnelBytes    metric.Int64Counter
	activeTunnels  metric.Int64UpDownCounter
	tunnelDuration metric.Float64Histogram
	upstreamConns  metric.Int64Counter
	denials        metric.Int64Counter
	registration   metric.Registration

	// The attribute sets of the duration histograms, one cache each per
	// Telemetry: two Proxies share none of them.
	serverSets setCache[serverSetKey]
	clientSets setCache[clientSetKey]
}

// New sets up tracing and metrics from c.
func New(c Config) (*Telemetry, error) {
	t := &Telemetry{Off: c.Off}
	tp := c.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	t.tracer = tp.Tracer(InstrumentationName)
	t.Tracing = !isNoopTracerProvider(tp)
	t.prop = c.Propagator
	if t.prop == nil {
		t.prop = otel.GetTextMapPropagator()
		if len(t.prop.Fields()) == 0 {
			t.prop = propagation.TraceContext{}
		}
	}
	mp := c.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if err := t.initMetrics(mp.Meter(InstrumentationName), c.Counts); err != nil {
		return nil, err
	}
	return t, nil
}

// Close unregisters the metric callback.
func (t *Telemetry) Close() {
	if t.registration != nil {
		_ = t.registration.Unregister()
	}
}

// isNoopTracerProvider reports whether tp can only make non-recording spans
// that carry no trace: the no-op provider, or the global delegate that no
// SDK provider was installed into before New.
func isNoopTracerProvider(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
		return true
	}
	t := reflect.TypeOf(tp)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

func (t *Telemetry) initMetrics(m metric.Meter, counts func() Counts) error {
	var err error
	var errs []error
	check := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	t.serverDuration, err = m.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests, CONNECT tunnels included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	t.clientDuration, err = m.Float64Histogram("http.client.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of upstream HTTP requests, until the response headers arrive."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	t.activeRequests, err = m.Int64UpDownCounter("http.server.active_requests",
		metric.WithUnit("{request}"), metric.WithDescription("Number of active HTTP server requests."))
	check(err)
	t.tunnelBytes, err = m.Int64Counter("fwdproxy.tunnel.io",
		metric.WithUnit("By"), metric.WithDescription("Bytes relayed by tunnels: transmit is client to upstream, receive is upstream to client."))
	check(err)
	t.activeTunnels, err = m.Int64UpDownCounter("fwdproxy.tunnel.active",
		metric.WithUnit("{tunnel}"), metric.WithDescription("Number of open CONNECT and upgraded tunnels."))
	check(err)
	t.tunnelDuration, err = m.Float64Histogram("fwdproxy.tunnel.duration",
		metric.WithUnit("s"), metric.WithDescription("How long tunnels stayed open."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	t.upstreamConns, err = m.Int64Counter("fwdproxy.upstream.connections",
		metric.WithUnit("{connection}"), metric.WithDescription("Upstream connections taken for requests, by whether they were reused from the pool."))
	check(err)
	t.denials, err = m.Int64Counter("fwdproxy.denials",
		metric.WithUnit("{request}"), metric.WithDescription("Requests refused by access control, by reason."))
	check(err)

	type obs struct {
		name, unit, desc string
		get              func(Counts) uint64
	}
	observed := []obs{
		{"fwdproxy.dns.hits", "{lookup}", "Lookups answered from the DNS cache.", func(c Counts) uint64 { return c.DNSHits }},
		{"fwdproxy.dns.misses", "{lookup}", "Lookups that waited for a DNS query.", func(c Counts) uint64 { return c.DNSMisses }},
		{"fwdproxy.dns.coalesced", "{lookup}", "DNS misses that shared another lookup's query.", func(c Counts) uint64 { return c.DNSCoalesced }},
		{"fwdproxy.dns.stale", "{lookup}", "Lookups answered with stale addresses.", func(c Counts) uint64 { return c.DNSStale }},
		{"fwdproxy.dns.evictions", "{lookup}", "Names evicted from the full DNS cache.", func(c Counts) uint64 { return c.DNSEvictions }},
		{"fwdproxy.dns.errors", "{lookup}", "Failed exchanges with DNS servers.", func(c Counts) uint64 { return c.DNSErrors }},
		{"fwdproxy.log.dropped", "{record}", "Log records dropped because the log queue was full.", func(c Counts) uint64 { return c.LogDropped }},
		{"fwdproxy.quota.cuts", "{transfer}", "Transfers (bodies, tunnels) cut at a policy's byte quota.", func(c Counts) uint64 { return c.QuotaCuts }},
		{"fwdproxy.quota.store.errors", "{call}", "Calls to the shared state store that failed and were decided in memory.", func(c Counts) uint64 { return c.QuotaStoreErrors }},
	}
	counters := make([]metric.Int64ObservableCounter, len(observed))
	insts := make([]metric.Observable, len(observed), len(observed)+1)
	for i, o := range observed {
		counters[i], err = m.Int64ObservableCounter(o.name, metric.WithUnit(o.unit), metric.WithDescription(o.desc))
		check(err)
		insts[i] = counters[i]
	}
	refusals, err := m.Int64ObservableCounter("fwdproxy.handshake.refusals", metric.WithUnit("{connection}"),
		metric.WithDescription("Client connections closed before any request because their front end's handshake failed, by front end."))
	check(err)
	insts = append(insts, refusals)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if counts == nil {
		return nil
	}
	t.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c := counts()
		for i, ob := range observed {
			o.ObserveInt64(counters[i], int64(ob.get(c)))
		}
		o.ObserveInt64(refusals, int64(c.RefusedProxyHeader), frontEndOpts[0])
		o.ObserveInt64(refusals, int64(c.RefusedTLS), frontEndOpts[1])
		o.ObserveInt64(refusals, int64(c.RefusedSOCKS), frontEndOpts[2])
		return nil
	}, insts...)
	return err
}

// Measurement options with fixed attributes, made once rather than per
// request (each attribute set is hashed when made). They are only read.
var (
	// frontEndOpts are fwdproxy.handshake.refusals' attribute sets: the
	// PROXY protocol's, TLS's and SOCKS5's refusals.
	frontEndOpts = [3]metric.ObserveOption{
		metric.WithAttributeSet(attribute.NewSet(attribute.String("fwdproxy.front_end", "proxy_protocol"))),
		metric.WithAttributeSet(attribute.NewSet(attribute.String("fwdproxy.front_end", "tls"))),
		metric.WithAttributeSet(attribute.NewSet(attribute.String("fwdproxy.front_end", "socks"))),
	}
	methodOpts = func() map[string]metric.MeasurementOption {
		m := make(map[string]metric.MeasurementOption)
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
			http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace, "_OTHER"} {
			m[method] = metric.WithAttributeSet(attribute.NewSet(semconv.HTTPRequestMethodKey.String(method)))
		}
		return m
	}()
	reusedOpt   = metric.WithAttributeSet(attribute.NewSet(attribute.Bool("fwdproxy.connection.reused", true)))
	newConnOpt  = metric.WithAttributeSet(attribute.NewSet(attribute.Bool("fwdproxy.connection.reused", false)))
	transmitOpt = metric.WithAttributeSet(attribute.NewSet(semconv.NetworkIODirectionKey.String("transmit")))
	receiveOpt  = metric.WithAttributeSet(attribute.NewSet(semconv.NetworkIODirectionKey.String("receive")))
)

// Option slices for the variadic Add of the per-request counters, made once:
// a slice made at the call would be allocated for every measurement.
var (
	methodAddOpts = func() map[string][]metric.AddOption {
		m := make(map[string][]metric.AddOption, len(methodOpts))
		for method, opt := range methodOpts {
			m[method] = []metric.AddOption{opt}
		}
		return m
	}()
	reusedAddOpts  = []metric.AddOption{reusedOpt}
	newConnAddOpts = []metric.AddOption{newConnOpt}
)
