package fwdproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// instrumentationName names the tracer and meter of this package.
const instrumentationName = "github.com/fwdproxy/fwdproxy"

// durationBuckets are the bucket boundaries, in seconds, that the HTTP
// semantic conventions recommend for request durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Measurement options with fixed attributes, made once rather than per
// request (each attribute set is hashed when made).
var (
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

// telemetry holds the instruments of one Proxy.
type telemetry struct {
	tracer  trace.Tracer
	tracing bool // false for no-op tracers: no span is started at all
	prop    propagation.TextMapPropagator

	serverDuration metric.Float64Histogram
	clientDuration metric.Float64Histogram
	activeRequests metric.Int64UpDownCounter
	tunnelBytes    metric.Int64Counter
	activeTunnels  metric.Int64UpDownCounter
	tunnelDuration metric.Float64Histogram
	upstreamConns  metric.Int64Counter
	denials        metric.Int64Counter
	registration   metric.Registration

	// off disables every per-request measurement but the Stats counters.
	// Only the benchmark sets it, as the baseline.
	off bool
}

// initTelemetry sets up tracing, metrics, the access log and the Stats
// counters from c, New's configuration; New calls it. They outlive
// configurations.
func (p *Proxy) initTelemetry(c *config) error {
	tel := &p.tel
	tel.off = c.telemetryOff
	tp := c.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tel.tracer = tp.Tracer(instrumentationName)
	tel.tracing = !isNoopTracerProvider(tp)
	tel.prop = c.propagator
	if tel.prop == nil {
		tel.prop = otel.GetTextMapPropagator()
		if len(tel.prop.Fields()) == 0 {
			tel.prop = propagation.TraceContext{}
		}
	}
	mp := c.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if err := tel.initMetrics(mp.Meter(instrumentationName), p); err != nil {
		return err
	}
	p.stats.latency = newLatencyWindow()
	p.initAccessLog(c.logQueueSize)
	return nil
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

func (tel *telemetry) initMetrics(m metric.Meter, p *Proxy) error {
	var err error
	var errs []error
	check := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	tel.serverDuration, err = m.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests, CONNECT tunnels included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	tel.clientDuration, err = m.Float64Histogram("http.client.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of upstream HTTP requests, until the response headers arrive."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	tel.activeRequests, err = m.Int64UpDownCounter("http.server.active_requests",
		metric.WithUnit("{request}"), metric.WithDescription("Number of active HTTP server requests."))
	check(err)
	tel.tunnelBytes, err = m.Int64Counter("fwdproxy.tunnel.io",
		metric.WithUnit("By"), metric.WithDescription("Bytes relayed by tunnels: transmit is client to upstream, receive is upstream to client."))
	check(err)
	tel.activeTunnels, err = m.Int64UpDownCounter("fwdproxy.tunnel.active",
		metric.WithUnit("{tunnel}"), metric.WithDescription("Number of open CONNECT and upgraded tunnels."))
	check(err)
	tel.tunnelDuration, err = m.Float64Histogram("fwdproxy.tunnel.duration",
		metric.WithUnit("s"), metric.WithDescription("How long tunnels stayed open."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	tel.upstreamConns, err = m.Int64Counter("fwdproxy.upstream.connections",
		metric.WithUnit("{connection}"), metric.WithDescription("Upstream connections taken for requests, by whether they were reused from the pool."))
	check(err)
	tel.denials, err = m.Int64Counter("fwdproxy.denials",
		metric.WithUnit("{request}"), metric.WithDescription("Requests refused by access control, by reason."))
	check(err)

	type obs struct {
		name, desc string
		get        func(ResolverStats) uint64
	}
	dnsObs := []obs{
		{"fwdproxy.dns.hits", "Lookups answered from the DNS cache.", func(s ResolverStats) uint64 { return s.Hits }},
		{"fwdproxy.dns.misses", "Lookups that waited for a DNS query.", func(s ResolverStats) uint64 { return s.Misses }},
		{"fwdproxy.dns.coalesced", "DNS misses that shared another lookup's query.", func(s ResolverStats) uint64 { return s.Coalesced }},
		{"fwdproxy.dns.stale", "Lookups answered with stale addresses.", func(s ResolverStats) uint64 { return s.Stale }},
		{"fwdproxy.dns.evictions", "Names evicted from the full DNS cache.", func(s ResolverStats) uint64 { return s.Evictions }},
		{"fwdproxy.dns.errors", "Failed exchanges with DNS servers.", func(s ResolverStats) uint64 { return s.Errors }},
	}
	counters := make([]metric.Int64ObservableCounter, len(dnsObs))
	insts := make([]metric.Observable, 0, len(dnsObs)+1)
	for i, o := range dnsObs {
		counters[i], err = m.Int64ObservableCounter(o.name, metric.WithUnit("{lookup}"), metric.WithDescription(o.desc))
		check(err)
		insts = append(insts, counters[i])
	}
	dropped, err := m.Int64ObservableCounter("fwdproxy.log.dropped",
		metric.WithUnit("{record}"), metric.WithDescription("Log records dropped because the log queue was full."))
	check(err)
	insts = append(insts, dropped)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	tel.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := p.dnsStats() // upstream.go
		for i, ob := range dnsObs {
			o.ObserveInt64(counters[i], int64(ob.get(s)))
		}
		o.ObserveInt64(dropped, int64(p.logDropped()))
		return nil
	}, insts...)
	return err
}

// closeTelemetry flushes the access log, bounded by ctx, and unregisters
// the metric callback. Shutdown calls it last.
func (p *Proxy) closeTelemetry(ctx context.Context) error {
	if p.tel.registration != nil {
		_ = p.tel.registration.Unregister()
	}
	return p.closeAccessLog(ctx)
}

// reqState follows one client request (or tunnel) when any telemetry wants
// it: it wraps the ResponseWriter to see the status and count bytes, and
// rides in the request context so that the upstream round trip, fail and
// the tunnel can report to it. With telemetry unused none is made.
type reqState struct {
	rw       http.ResponseWriter
	req      *http.Request // the request as passed on, with this state in its context
	start    time.Time
	span     trace.Span           // nil unless tracing
	attrs    []attribute.KeyValue // the server span's request attributes, reused by the client span
	metrics  bool
	logging  bool
	status   int
	bytesOut int64
	body     *countingBody // the request body, when it has one
	errKind  string        // set by fail, or by the round trip on failure
	upstream string        // upstream address, when known
	user     string        // the authenticated user, set by admit
	tunnel   bool
	tunUp    int64
	tunDown  int64
	capture  *capture // nil unless WithCapture

	// For the access record (accesslog.go): the refusal or failure it
	// reports (logFailure) and its duration_s.
	failure  *Error
	duration durationSeconds

	// An intercepted CONNECT (intercept.go) counts the requests served
	// inside it.
	intercepted bool
	requests    int64

	tb *traceBufs // nil unless tracing

	// The client trace that reports the upstream connection, kept here so
	// that it costs no allocation of its own (telemetry_fast.go).
	clientTrace httptrace.ClientTrace
	traceUsed   bool
	traceTel    *telemetry
	traceCtx    context.Context
}

// traceBufs is room for a traced request's span attributes and options,
// allocated with its reqState only when tracing is on.
type traceBufs struct {
	attrBuf   [6]attribute.KeyValue
	endBuf    [5]attribute.KeyValue
	clientEnd [2]attribute.KeyValue
	startOpts [3]trace.SpanStartOption
}

type ctxKeyReqState struct{}

func reqStateFrom(ctx context.Context) *reqState {
	rs, _ := ctx.Value(ctxKeyReqState{}).(*reqState)
	return rs
}

// requestTrack is what ServeHTTP keeps between beginRequest and
// endRequest; it is a value so that the no-op path allocates nothing.
type requestTrack struct {
	start   time.Time
	connect bool
	rs      *reqState
}

// beginRequest accounts for a request that ServeHTTP starts under c and,
// when any telemetry is in use, replaces *w and *r by instrumented ones.
func (p *Proxy) beginRequest(c *config, w *http.ResponseWriter, r **http.Request) requestTrack {
	req := *r
	t := requestTrack{start: time.Now(), connect: req.Method == http.MethodConnect}
	p.stats.active.Add(1)
	tel := &p.tel
	if tel.off {
		return t
	}
	ctx := req.Context()
	metrics := tel.serverDuration.Enabled(ctx)
	logging := p.accessLogOn(ctx)
	if !tel.tracing && !metrics && !logging {
		return t
	}
	var rs *reqState
	if tel.tracing {
		traced := &struct {
			reqState
			traceBufs
		}{}
		rs = &traced.reqState
		rs.tb = &traced.traceBufs
	} else {
		rs = &reqState{}
	}
	rs.rw, rs.start, rs.metrics, rs.logging = *w, t.start, metrics, logging
	if tel.tracing {
		tb := rs.tb
		ctx = tel.prop.Extract(ctx, headerCarrier(req.Header))
		var span trace.Span
		rs.attrs = requestAttrs(tb.attrBuf[:0], req, targetOf(req))
		tb.startOpts = [3]trace.SpanStartOption{serverKindOpt, trace.WithTimestamp(t.start), trace.WithAttributes(rs.attrs...)}
		ctx, span = tel.tracer.Start(ctx, spanName(req.Method), tb.startOpts[:]...)
		rs.span = span
	}
	if metrics {
		tel.activeRequests.Add(ctx, 1, methodAddOpts[methodAttr(req.Method)]...)
	}
	ctx = context.WithValue(ctx, ctxKeyReqState{}, rs)
	req = req.WithContext(ctx)
	if logging && c.capture {
		rs.capture = newCapture(c.captureBytes, req.Header)
	}
	if !t.connect && req.Body != nil && req.Body != http.NoBody {
		rs.body = &countingBody{rc: req.Body, capture: rs.capture}
		req.Body = rs.body
	}
	rs.req = req
	t.rs = rs
	*w, *r = rs, req
	return t
}

// endRequest closes what beginRequest opened. It runs deferred, also when
// the handler panics.
func (p *Proxy) endRequest(t requestTrack) {
	d := time.Since(t.start)
	// Active until its span, metrics and log record are done, so that
	// Stats showing no active requests means their telemetry is out.
	defer p.stats.active.Add(-1)
	p.stats.requests.Add(1)
	if !t.connect {
		p.stats.latency.Observe(d)
	}
	rs := t.rs
	if rs == nil {
		return
	}
	req := rs.req
	ctx := req.Context()
	status := rs.status
	if status == 0 {
		if rs.tunnel {
			status = http.StatusOK
		} else if rs.errKind == "" {
			// The handler ended without a response: the client went away,
			// or the response was aborted.
			rs.errKind = "aborted"
		}
	}
	errType := rs.errKind
	if errType == "" && status >= 500 {
		errType = strconv.Itoa(status)
	}
	if rs.span != nil {
		attrs := rs.tb.endBuf[:0]
		if status > 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(status))
		}
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		if rs.tunnel {
			attrs = append(attrs,
				attribute.Int64("fwdproxy.tunnel.bytes_sent", rs.tunUp),
				attribute.Int64("fwdproxy.tunnel.bytes_received", rs.tunDown))
		}
		if rs.intercepted {
			attrs = append(attrs, attribute.Int64("fwdproxy.intercept.requests", rs.requests))
		}
		rs.span.SetAttributes(attrs...)
		if status >= 500 || (status == 0 && errType != "") {
			rs.span.SetStatus(codes.Error, errType)
		}
		rs.span.End()
	}
	if rs.metrics {
		method := methodAttr(req.Method)
		p.tel.activeRequests.Add(ctx, -1, methodAddOpts[method]...)
		p.tel.serverDuration.Record(ctx, d.Seconds(), serverDurationOpts(serverSetKey{
			method: method, proto: protoVersion(req), status: status, errType: errType})...)
	}
	if rs.logging {
		p.logAccess(ctx, rs, status, d)
	}
}

// Header, Write, WriteHeader, Flush, FlushError and Unwrap make reqState the
// ResponseWriter the handler uses; http.ResponseController reaches the
// server's own through Unwrap (Hijack, EnableFullDuplex).

func (rs *reqState) Header() http.Header { return rs.rw.Header() }

// AdoptHeader passes h1.HeaderAdopter's call on to the server's writer.
func (rs *reqState) AdoptHeader(h http.Header) bool {
	a, ok := rs.rw.(h1.HeaderAdopter)
	return ok && a.AdoptHeader(h)
}

func (rs *reqState) WriteHeader(code int) {
	if rs.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rs.status = code
	}
	rs.rw.WriteHeader(code)
}

func (rs *reqState) Write(b []byte) (int, error) {
	if rs.status == 0 {
		rs.status = http.StatusOK
	}
	n, err := rs.rw.Write(b)
	rs.bytesOut += int64(n)
	if rs.capture != nil {
		rs.capture.response.add(b[:n])
	}
	return n, err
}

// ReadFrom hands a body copy to the server's own ReadFrom (which splices
// from a TCP connection on Linux) unless the body is being captured.
func (rs *reqState) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := rs.rw.(io.ReaderFrom)
	if !ok || rs.capture != nil {
		buf := netx.GetBuffer()
		defer netx.PutBuffer(buf)
		return io.CopyBuffer(netx.WriterOnly{Writer: rs}, src, buf[:])
	}
	if rs.status == 0 {
		rs.status = http.StatusOK
	}
	n, err := rf.ReadFrom(src)
	rs.bytesOut += n
	return n, err
}

func (rs *reqState) Flush() {
	if f, ok := rs.rw.(http.Flusher); ok {
		f.Flush()
	}
}

// FlushError lets http.ResponseController report a failed flush.
func (rs *reqState) FlushError() error { return http.NewResponseController(rs.rw).Flush() }

func (rs *reqState) Unwrap() http.ResponseWriter { return rs.rw }

// countingBody counts (and maybe captures) a request body as it is read.
type countingBody struct {
	rc      io.ReadCloser
	n       atomic.Int64 // the transport may read on its own goroutine
	capture *capture
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if b.capture != nil && n > 0 {
		b.capture.request.add(p[:n])
	}
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// noteFailure records a refused or failed request: Stats' count by kind,
// the error type of its span and metrics, and a denial for refusals by
// access control (with their reason) and other 403 and 407 answers.
// fail calls it.
func (p *Proxy) noteFailure(r *http.Request, e *Error) {
	kind := kindName(e.Kind)
	p.stats.countError(e.Kind)
	if rs := reqStateFrom(r.Context()); rs != nil {
		rs.errKind = kind
	}
	switch {
	case e.denial != "":
		p.countDenial(r.Context(), e.denial)
	case e.Kind == ErrForbidden || e.Kind == ErrAuthRequired:
		p.countDenial(r.Context(), kind)
	}
}

// countDenial counts a request refused by access control for reason (a
// short, low-cardinality word such as "forbidden" or "auth_required").
func (p *Proxy) countDenial(ctx context.Context, reason string) {
	p.stats.denials.Add(1)
	if !p.tel.off && p.tel.denials.Enabled(ctx) {
		p.tel.denials.Add(ctx, 1, metric.WithAttributes(attribute.String("fwdproxy.denial.reason", reason)))
	}
}

// observeRoundTrip sends out upstream (send: the own HTTP/1.1 transport to
// addr when fast, as the router decided, or the shared transport), inside a
// client span whose context is injected into out's header, and measures
// it for rs. c is the request's configuration.
func (p *Proxy) observeRoundTrip(c *config, rs *reqState, out *http.Request, addr string, fast bool) (*http.Response, error) {
	ctx := out.Context()
	start := time.Now()
	target := out.URL.Host
	var span trace.Span
	if rs.span != nil {
		attrs := rs.attrs
		if len(c.requestHooks) > 0 {
			attrs = requestAttrs(nil, out, target) // a hook may have changed the request
		}
		rs.tb.startOpts = [3]trace.SpanStartOption{clientKindOpt, trace.WithAttributes(attrs...)}
		ctx, span = p.tel.tracer.Start(ctx, spanName(out.Method), rs.tb.startOpts[:2]...)
		p.tel.prop.Inject(ctx, headerCarrier(out.Header))
	}
	var obs h1.ConnObserver
	if rs.metrics || rs.logging {
		if fast && ctx == out.Context() {
			// The own transport reports the connection to rs itself
			// (rs.GotConn): no client trace, no copy of the request.
			rs.traceTel, rs.traceCtx = &p.tel, ctx
			obs = rs
		} else {
			ctx = rs.withClientTrace(ctx, &p.tel) // telemetry_fast.go
		}
	}
	if ctx != out.Context() {
		out = out.WithContext(ctx)
	}
	resp, err := p.send(c, out, addr, fast, obs) // transport.go
	status, errType := 0, ""
	if err != nil {
		errType = kindName(asError(target, err).Kind)
		if ctx.Err() != nil {
			errType = "canceled"
		} else if cb, _ := out.Body.(*clientBody); cb.failed() != nil {
			errType = kindName(ErrMalformed) // the client's body, not the upstream, failed
		}
	} else {
		status = resp.StatusCode
		if status >= 500 {
			errType = strconv.Itoa(status)
		}
	}
	if span != nil {
		attrs := rs.tb.clientEnd[:0]
		if status > 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(status))
		}
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		span.SetAttributes(attrs...)
		if errType != "" {
			span.SetStatus(codes.Error, errType)
		}
		span.End()
	}
	if rs.metrics {
		host, port := splitTarget(target, out.URL.Scheme)
		k := clientSetKey{method: methodAttr(out.Method), host: host, port: port, status: status, errType: errType}
		if status > 0 {
			k.proto = respProtoVersion(resp)
		}
		p.tel.clientDuration.Record(ctx, time.Since(start).Seconds(), clientDurationOpts(k)...)
	}
	return resp, err
}

// tunnelStarted and tunnelEnded bracket a tunnel's relay (runTunnel).
func (p *Proxy) tunnelStarted(r *http.Request) {
	p.stats.tunnels.Add(1)
	if rs := reqStateFrom(r.Context()); rs != nil && rs.metrics {
		p.tel.activeTunnels.Add(r.Context(), 1)
	}
}

func (p *Proxy) tunnelEnded(r *http.Request, upstream any, up, down int64, d time.Duration) {
	p.stats.tunnels.Add(-1)
	rs := reqStateFrom(r.Context())
	if rs == nil {
		return
	}
	rs.tunnel, rs.tunUp, rs.tunDown = true, up, down
	if rs.status == 0 && r.Method != http.MethodConnect {
		rs.status = http.StatusSwitchingProtocols // written on the hijacked connection
	}
	if c, ok := upstream.(net.Conn); ok && rs.upstream == "" {
		rs.upstream = c.RemoteAddr().String()
	}
	if rs.metrics {
		ctx := r.Context()
		p.tel.activeTunnels.Add(ctx, -1)
		p.tel.tunnelBytes.Add(ctx, up, transmitOpt)
		p.tel.tunnelBytes.Add(ctx, down, receiveOpt)
		p.tel.tunnelDuration.Record(ctx, d.Seconds())
	}
}

// targetOf returns the host:port a request is for.
func targetOf(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return r.Host
	}
	return r.URL.Host
}

func spanName(method string) string {
	return methodAttr(method)
}

// methodAttr maps methods outside the known set to _OTHER, as the semantic
// conventions ask, to bound cardinality.
func methodAttr(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// requestAttrs appends to attrs the span attributes of a request to target.
func requestAttrs(attrs []attribute.KeyValue, r *http.Request, target string) []attribute.KeyValue {
	host, port := splitTarget(target, r.URL.Scheme)
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(methodAttr(r.Method)),
		semconv.ServerAddressKey.String(host),
		semconv.NetworkProtocolVersionKey.String(protoVersion(r)),
	)
	if port > 0 {
		attrs = append(attrs, semconv.ServerPortKey.Int(port))
	}
	if r.Method != http.MethodConnect && r.URL.IsAbs() {
		attrs = append(attrs, semconv.URLFullKey.String(r.URL.Redacted()))
	}
	if r.RemoteAddr != "" {
		if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			attrs = append(attrs, semconv.ClientAddressKey.String(h))
		}
	}
	return attrs
}

// splitTarget splits host[:port], defaulting the port from the scheme.
func splitTarget(target, scheme string) (string, int) {
	host, port, err := httpx.ParseTarget(target)
	if err == nil {
		return host, int(port)
	}
	h, p, err := net.SplitHostPort(target)
	if err != nil {
		h = target
		switch scheme {
		case "http":
			return h, 80
		case "https":
			return h, 443
		}
		return h, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func protoVersion(r *http.Request) string {
	return versionString(r.ProtoMajor, r.ProtoMinor)
}

func respProtoVersion(resp *http.Response) string {
	return versionString(resp.ProtoMajor, resp.ProtoMinor)
}

func versionString(major, minor int) string {
	switch {
	case major == 1 && minor == 1:
		return "1.1"
	case major == 1 && minor == 0:
		return "1.0"
	case major == 2:
		return "2"
	case major == 3:
		return "3"
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

// kindName is the short name of an error kind, used as error.type, denial
// reason and Stats key.
func kindName(kind error) string {
	switch kind {
	case ErrMalformed:
		return "malformed"
	case ErrAuthRequired:
		return "auth_required"
	case ErrForbidden:
		return "forbidden"
	case ErrUnavailable:
		return "unavailable"
	case ErrUpstream:
		return "upstream"
	case ErrUpstreamTimeout:
		return "upstream_timeout"
	case ErrLoop:
		return "loop"
	case ErrClientTimeout:
		return "client_timeout"
	case ErrRateLimited:
		return "rate_limited"
	case ErrTooLarge:
		return "too_large"
	}
	return "_OTHER"
}
