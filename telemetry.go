package fwdproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/telemetry"
)

// Telemetry wraps the pipeline twice, and only twice: on the server side,
// observe is the one middleware every client request passes through
// (ServeHTTP's and the interception front end's alike); on the client side,
// observeRoundTrip wraps the upstream router's send (transport.go), which
// tells it the path it chose. Tunnels report their start and end
// (tunnelStarted, tunnelEnded), and fail its refusals (noteFailure). What
// these measure goes to the Stats counters (always), and to spans, metrics
// and the access log when they are on: the OTel mechanics are
// internal/telemetry's, the access record is accesslog.go's.

// initTelemetry sets up tracing, metrics, the access log and the Stats
// counters from c, New's configuration; New calls it. They outlive
// configurations.
func (p *Proxy) initTelemetry(c *config) error {
	tel, err := telemetry.New(telemetry.Config{
		TracerProvider: c.tracerProvider,
		MeterProvider:  c.meterProvider,
		Propagator:     c.propagator,
		Off:            c.telemetryOff,
		Counts:         p.telemetryCounts,
	})
	if err != nil {
		return err
	}
	p.tel = tel
	p.stats.latency = newLatencyWindow()
	p.initAccessLog(c.logQueueSize)
	return nil
}

// telemetryCounts are the counters the observable instruments report.
func (p *Proxy) telemetryCounts() telemetry.Counts {
	s := p.dnsStats() // upstream.go
	return telemetry.Counts{DNSHits: s.Hits, DNSMisses: s.Misses, DNSCoalesced: s.Coalesced,
		DNSStale: s.Stale, DNSEvictions: s.Evictions, DNSErrors: s.Errors, LogDropped: p.logDropped(),
		RefusedProxyHeader: p.stats.refusedProxyHeader.Load(), RefusedTLS: p.stats.refusedTLS.Load(),
		RefusedSOCKS: p.stats.refusedSOCKS.Load(),
		QuotaCuts:    p.quotas.cuts.Load(), QuotaStoreErrors: p.quotas.storeErrors.Load()}
}

// closeTelemetry flushes the access log, bounded by ctx, and unregisters
// the metric callback. Shutdown calls it last.
func (p *Proxy) closeTelemetry(ctx context.Context) error {
	p.tel.Close()
	return p.closeAccessLog(ctx)
}

// reqState follows one client request (or tunnel) when any telemetry wants
// it, or an Admin records flows: it wraps the ResponseWriter to see the
// status and count bytes, and rides in the request context so that the
// upstream round trip, the dial, fail and the tunnel can report to it.
// With telemetry unused and nothing recording none is made.
type reqState struct {
	rw       http.ResponseWriter
	req      *http.Request // the request as passed on, with this state in its context
	start    time.Time
	span     trace.Span // nil unless tracing
	metrics  bool
	logging  bool
	status   int
	bytesOut int64
	body     *countingBody // the request body, when it has one
	errKind  string        // set by fail, or by the round trip on failure
	upAddr   net.Addr      // upstream address, when known
	via      string        // the upstream proxy's name (redacted), when one served it (via.go)
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

	tb *telemetry.SpanBufs // nil unless tracing

	// The client trace that reports the upstream connection, kept here so
	// that it costs no allocation of its own (withClientTrace).
	clientTrace httptrace.ClientTrace
	traceUsed   bool
	traceTel    *telemetry.Telemetry
	traceCtx    context.Context

	// For the flow record when an Admin records (flowrec.go): the
	// recorder, the response header the handler used, and the timing
	// phases. The dial and the TLS handshake may run on a transport's
	// goroutine, even after the request is over: their phases are atomics.
	rec          *recorder
	mayIntercept bool // not from the own HTTP/1.1 loop, which never serves a request inside an intercepted CONNECT
	respHeader   http.Header
	firstByte    time.Duration
	dnsTime      atomic.Int64 // nanoseconds
	connTime     atomic.Int64
	tlsTime      atomic.Int64
	tlsStart     atomic.Int64 // Unix nanoseconds
}

type ctxKeyReqState struct{}

func reqStateFrom(ctx context.Context) *reqState {
	rs, _ := ctx.Value(ctxKeyReqState{}).(*reqState)
	return rs
}

// observe is the server-side middleware: next serves the request under c,
// its configuration, and observe accounts for it around that, once. A
// request ends when next returns, unless next hands it over to a tunnel
// that outlives the handler (a parked CONNECT tunnel,
// tunnelpark_linux.go), by returning that tunnel's requestEnd: it then
// ends when the tunnel ends, and its handler has returned.
func (p *Proxy) observe(c *config, w http.ResponseWriter, r *http.Request, next func(*config, http.ResponseWriter, *http.Request) *requestEnd) {
	t := p.beginRequest(c, &w, &r)
	var e *requestEnd
	defer func() {
		if e != nil {
			e.handlerDone(t)
		} else {
			p.endRequest(t)
		}
	}()
	e = next(c, w, r)
}

// requestEnd is the end of a request that a tunnel took over from its
// handler: endRequest runs once both the handler has returned
// (handlerDone, from observe) and the tunnel has ended (tunnelDone), on
// the goroutine of whichever comes second. A tunnel that takes requests
// over holds one.
//
// Only a CONNECT's tunnel takes its request over. Of its requestTrack, e
// keeps start and rs (a word less than the requestTrack itself: a parked
// tunnel holds one for as long as it lives).
type requestEnd struct {
	p     *Proxy
	start time.Time    // set by handlerDone
	rs    *reqState    // set by handlerDone; nil with compact
	n     atomic.Int32 // handlerDone and tunnelDone calls so far

	// With compact, the request's state is rec (keep), and the handler's
	// reqState is not kept: endRequest gets one rebuilt from rec.
	compact bool
	rec     tunnelRecord
}

func (e *requestEnd) handlerDone(t requestTrack) {
	e.start = t.start
	if !e.compact {
		e.rs = t.rs
	} // else rec stands for it
	e.done()
}

func (e *requestEnd) tunnelDone() { e.done() }

func (e *requestEnd) done() {
	if e.n.Add(1) == 2 {
		rs := e.rs
		if e.compact {
			rs = e.rec.reqState(e.start)
		}
		e.p.endRequest(requestTrack{start: e.start, connect: true, rs: rs})
	}
}

// tunnelRecord is what the end of a CONNECT request reads of it when its
// tunnel outlives the handler (tunnelpark_linux.go) and the request has no
// span, no flow record and no capture, which need more (reqState.detach):
// the access record's and the metrics' values, taken when the tunnel parks
// (requestEnd.keep), a few words that point at strings the tunnel keeps
// anyway. The request, its context, its reqState and the ResponseWriter
// go when the handler returns; reqState rebuilds what endRequest reads,
// once, when the tunnel has ended.
type tunnelRecord struct {
	info      *tunnelInfo // target, protocol, client, user: the tunnel's own
	userAgent string
	rare      *tunnelRecordRare // nil when all its fields are empty, as usual
	upAddr    net.Addr
	up, down  int64
	status    int32
	metrics   bool
	logging   bool
	tunnel    bool
}

// tunnelRecordRare is the part of a tunnelRecord that is usually empty.
type tunnelRecordRare struct {
	user    string // the user (usually info.user)
	via     string // the upstream proxy (via.go)
	errKind string
	failure *Error
}

// compactable reports whether the end of rs's request, a CONNECT whose
// tunnel outlives its handler, needs no more of it than a tunnelRecord.
func (rs *reqState) compactable() bool {
	return rs.span == nil && rs.rec == nil && rs.capture == nil
}

// keep makes e's request end from a tunnelRecord of rs (compactable), the
// state of r, a CONNECT whose tunnel info is the tunnel's, instead of from
// rs: neither is kept.
func (e *requestEnd) keep(rs *reqState, r *http.Request, info *tunnelInfo) {
	e.compact = true
	e.rec = tunnelRecord{info: info, upAddr: rs.upAddr, status: int32(rs.status), metrics: rs.metrics, logging: rs.logging}
	if ua := r.Header["User-Agent"]; len(ua) > 0 {
		e.rec.userAgent = ua[0]
	}
	if user := rs.userName(r.Context()); user != info.user || rs.via != "" || rs.errKind != "" || rs.failure != nil {
		e.rec.rare = &tunnelRecordRare{user: user, via: rs.via, errKind: rs.errKind, failure: rs.failure}
	}
}

// tunnelEnded is tunnelEnded's part for a request ended from rec: what
// the tunnel moved and the upstream it moved it to.
func (rec *tunnelRecord) tunnelEnded(p *Proxy, upstream net.Conn, up, down int64, d time.Duration) {
	rec.tunnel, rec.up, rec.down = true, up, down
	if rec.upAddr == nil && upstream != nil {
		rec.upAddr = upstream.RemoteAddr()
	}
	if rec.metrics {
		p.tel.TunnelEnded(context.Background(), up, down, d)
	}
}

// reqState rebuilds, for endRequest, the state of the request rec was
// taken from, which started at start: what the access record and the
// metrics read of it, with the request as the tunnel keeps it
// (tunnelInfo.request) and its User-Agent, as reqState.detach would have
// left them.
func (rec *tunnelRecord) reqState(start time.Time) *reqState {
	rs := &reqState{rw: detachedWriter{}, start: start, metrics: rec.metrics, logging: rec.logging,
		status: int(rec.status), upAddr: rec.upAddr, user: rec.info.user,
		tunnel: rec.tunnel, tunUp: rec.up, tunDown: rec.down}
	if r := rec.rare; r != nil {
		rs.user, rs.via, rs.errKind, rs.failure = r.user, r.via, r.errKind, r.failure
	}
	req := withUserAgent(rec.info.request(), rec.userAgent)
	rs.req = req.WithContext(context.WithValue(req.Context(), ctxKeyReqState{}, rs))
	return rs
}

// withUserAgent returns req, a request rebuilt from its tunnelInfo, with
// ua as its User-Agent when it has none ("": as it is).
func withUserAgent(req *http.Request, ua string) *http.Request {
	if ua == "" || req.Header["User-Agent"] != nil {
		return req
	}
	h := make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		h[k] = v
	}
	h["User-Agent"] = []string{ua}
	req.Header = h
	return req
}

// requestTrack is what observe keeps between beginRequest and endRequest;
// it is a value so that the no-op path allocates nothing.
type requestTrack struct {
	start   time.Time
	connect bool
	rs      *reqState
}

// beginRequest accounts for a request that starts under c and, when any
// telemetry is in use, replaces *w and *r by instrumented ones.
func (p *Proxy) beginRequest(c *config, w *http.ResponseWriter, r **http.Request) requestTrack {
	req := *r
	t := requestTrack{start: time.Now(), connect: req.Method == http.MethodConnect}
	p.stats.active.Add(1)
	rec := p.recording(req) // flowrec.go: nil unless an Admin records flows
	tel := p.tel
	if tel.Off && rec == nil {
		return t
	}
	ctx := req.Context()
	metrics := !tel.Off && tel.MetricsOn(ctx)
	logging := !tel.Off && p.accessLogOn(ctx)
	if !tel.Tracing && !metrics && !logging && rec == nil {
		return t
	}
	var rs *reqState
	if tel.Tracing {
		traced := &struct {
			reqState
			telemetry.SpanBufs
		}{}
		rs = &traced.reqState
		rs.tb = &traced.SpanBufs
	} else {
		rs = &reqState{}
	}
	rs.rw, rs.start, rs.metrics, rs.logging, rs.rec = *w, t.start, metrics, logging, rec
	if rec != nil {
		_, own := (*w).(h1.HeaderAdopter)
		rs.mayIntercept = !own
	}
	if tel.Tracing {
		ctx, rs.span = tel.StartServer(ctx, req, targetOf(req), t.start, rs.tb)
	}
	if metrics {
		tel.RequestStarted(ctx, req.Method)
	}
	ctx = context.WithValue(ctx, ctxKeyReqState{}, rs)
	req = req.WithContext(ctx)
	if (logging || rec != nil) && c.capture {
		rs.capture = newCapture(c.captureBytes, req.Header, logging)
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
		telemetry.EndServer(rs.span, rs.tb, telemetry.ServerEnd{
			Status: status, ErrType: errType,
			Tunnel: rs.tunnel, Sent: rs.tunUp, Received: rs.tunDown,
			Intercepted: rs.intercepted, Requests: rs.requests, Via: rs.via,
		})
	}
	if rs.metrics {
		p.tel.RequestEnded(ctx, req, status, errType, d)
	}
	if rs.logging {
		p.logAccess(ctx, rs, status, d)
	}
	if rs.rec != nil {
		p.recordFlow(rs, status, d) // flowrec.go
	}
}

// detach trims rs, the state of a CONNECT whose tunnel outlives its
// handler (tunnelpark_linux.go) and whose end needs more of it than a
// tunnelRecord (a span, a flow record, a capture), to what the request's
// end reads, so that
// the handler's request, context, ResponseWriter and connection state can
// go while the tunnel lives: req, the request as the tunnel keeps it
// (tunnelInfo.request), with the User-Agent of r, the handler's request,
// for the access record (all of r's header for a flow record), becomes
// rs.req, with rs (and the span) in its context; the ResponseWriter
// becomes a stand-in (with the response header, when used or captured).
// It returns the new rs.req.
func (rs *reqState) detach(r, req *http.Request) *http.Request {
	if rs.rec != nil {
		req.Header = r.Header // the flow record shows the CONNECT's header (flowrec.go)
	} else if ua := r.Header["User-Agent"]; len(ua) > 0 {
		req = withUserAgent(req, ua[0])
	}
	ctx := context.WithValue(req.Context(), ctxKeyReqState{}, rs)
	if rs.span != nil {
		ctx = trace.ContextWithSpan(ctx, rs.span)
	}
	rs.req = req.WithContext(ctx)
	h := rs.respHeader
	if h == nil && rs.capture != nil {
		h = rs.rw.Header()
	}
	rs.rw = detachedWriter{h}
	rs.body, rs.traceTel, rs.traceCtx = nil, nil, nil
	rs.clientTrace = httptrace.ClientTrace{}
	return rs.req
}

// detachedWriter stands for the ResponseWriter of a request whose tunnel
// outlives its handler: nothing writes to it any more.
type detachedWriter struct{ h http.Header }

func (w detachedWriter) Header() http.Header {
	if w.h == nil {
		return http.Header{}
	}
	return w.h
}
func (detachedWriter) Write([]byte) (int, error) { return 0, http.ErrHijacked }
func (detachedWriter) WriteHeader(int)           {}

// Header, Write, WriteHeader, Flush, FlushError and Unwrap make reqState the
// ResponseWriter the handler uses; http.ResponseController reaches the
// server's own through Unwrap (Hijack, EnableFullDuplex).

// Header returns the server's header map, and keeps it for the flow record:
// a writer's header map, once made, stays the same map.
func (rs *reqState) Header() http.Header {
	if rs.respHeader == nil {
		rs.respHeader = rs.rw.Header()
	}
	return rs.respHeader
}

// AdoptHeader passes h1.HeaderAdopter's call on to the server's writer.
func (rs *reqState) AdoptHeader(h http.Header) bool {
	a, ok := rs.rw.(h1.HeaderAdopter)
	if ok && a.AdoptHeader(h) {
		rs.respHeader = h
		return true
	}
	return false
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
	p.stats.deniedBy[denialIndex(reason)].Add(1)
	p.tel.Denial(ctx, reason)
}

// observeRoundTrip is the client-side wrapper: it sends out upstream on the
// path the router chose (send: the own HTTP/1.1 transport to addr when
// fast, or the shared transport), inside a client span whose context is
// injected into out's header, and measures it for rs. c is the request's
// configuration.
func (p *Proxy) observeRoundTrip(c *config, rs *reqState, out *http.Request, h hop) (*http.Response, error) {
	ctx := out.Context()
	start := time.Now()
	var span trace.Span
	if rs.span != nil {
		// A request hook may have changed the request: its attributes are
		// then made anew.
		ctx, span = p.tel.StartClient(ctx, out, len(c.requestHooks) > 0, rs.tb)
	}
	var obs h1.ConnObserver
	if rs.metrics || rs.logging || rs.rec != nil {
		if h.fast && ctx == out.Context() {
			// The own transport reports the connection to rs itself
			// (rs.GotConn): no client trace, no copy of the request.
			rs.traceTel, rs.traceCtx = p.tel, ctx
			obs = rs
		} else {
			ctx = rs.withClientTrace(ctx, p.tel)
		}
	}
	if ctx != out.Context() {
		out = out.WithContext(ctx)
	}
	resp, err := p.send(c, out, h, obs) // transport.go
	if rs.rec != nil && err == nil {
		rs.firstByte = time.Since(rs.start)
	}
	status, errType := 0, ""
	if err != nil {
		errType = kindName(asError(out.URL.Host, err).Kind)
		if ctx.Err() != nil {
			errType = "canceled"
		} else if fb, ok := out.Body.(interface{ failed() error }); ok && fb.failed() != nil {
			errType = kindName(ErrMalformed) // the client's body, not the upstream, failed
		}
	} else {
		status = resp.StatusCode
		if status >= 500 {
			errType = strconv.Itoa(status)
		}
	}
	if span != nil {
		if h.via != nil {
			telemetry.SetVia(span, h.via.Name())
		}
		telemetry.EndClient(span, rs.tb, status, errType)
	}
	if rs.metrics {
		p.tel.ClientRequestEnded(ctx, out, resp, status, errType, time.Since(start))
	}
	return resp, err
}

// withClientTrace puts into ctx the client trace that reports the upstream
// connection of rs's round trip (its address, and whether it was reused),
// using the trace kept in rs the first time. ctx is also the context of
// the reuse measurement.
func (rs *reqState) withClientTrace(ctx context.Context, tel *telemetry.Telemetry) context.Context {
	rs.traceTel, rs.traceCtx = tel, ctx
	trace := &rs.clientTrace
	if rs.traceUsed {
		trace = &httptrace.ClientTrace{}
	}
	rs.traceUsed = true
	*trace = httptrace.ClientTrace{GotConn: rs.GotConn}
	if rs.rec != nil {
		trace.TLSHandshakeStart, trace.TLSHandshakeDone = rs.tlsStarted, rs.tlsDone // flowrec.go
	}
	return httptrace.WithClientTrace(ctx, trace)
}

// GotConn is the client trace's GotConn, and what the own HTTP/1.1
// transport reports to as an h1.ConnObserver.
func (rs *reqState) GotConn(info httptrace.GotConnInfo) {
	if info.Conn != nil {
		rs.upAddr = info.Conn.RemoteAddr() // made a string only when logged or read
	}
	if rs.metrics {
		rs.traceTel.UpstreamConn(rs.traceCtx, info.Reused)
	}
}

// dialed accounts for a dial (transport.go) that looked its host up from
// start to looked, then connected or failed with err: a connection for
// requests in Stats, and the DNS and connect phases of the flow being
// recorded, if any.
func (p *Proxy) dialed(ctx context.Context, pol dialPolicy, start, looked time.Time, err error) {
	if err == nil && !pol.connect {
		p.stats.upConns.Add(1)
	}
	if rs := reqStateFrom(ctx); rs != nil && rs.rec != nil {
		rs.dnsTime.Store(int64(looked.Sub(start)))
		rs.connTime.Store(int64(time.Since(looked)))
	}
}

// tunnelStarted and tunnelEnded bracket a tunnel's relay (runTunnel).
func (p *Proxy) tunnelStarted(r *http.Request) {
	p.stats.tunnels.Add(1)
	if rs := reqStateFrom(r.Context()); rs != nil && rs.metrics {
		p.tel.TunnelStarted(r.Context())
	}
}

func (p *Proxy) tunnelEnded(r *http.Request, upstream any, up, down int64, d time.Duration) {
	p.stats.tunnels.Add(-1)
	if upstream != nil { // not an intercepted connection, whose requests count their bodies
		p.stats.tunUp.Add(uint64(up))
		p.stats.tunDown.Add(uint64(down))
	}
	rs := reqStateFrom(r.Context())
	if rs == nil {
		return
	}
	rs.tunnel, rs.tunUp, rs.tunDown = true, up, down
	if rs.status == 0 && r.Method != http.MethodConnect {
		rs.status = http.StatusSwitchingProtocols // written on the hijacked connection
	}
	if c, ok := upstream.(net.Conn); ok && rs.upAddr == nil {
		rs.upAddr = c.RemoteAddr()
	}
	if rs.metrics {
		p.tel.TunnelEnded(r.Context(), up, down, d)
	}
}

// targetOf returns the host:port a request is for.
func targetOf(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return r.Host
	}
	return r.URL.Host
}
