package telemetry

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// The span options that never change, made once.
var (
	serverKindOpt = trace.WithSpanKind(trace.SpanKindServer)
	clientKindOpt = trace.WithSpanKind(trace.SpanKindClient)
)

// SpanBufs is room for a traced request's span attributes and options:
// the caller allocates it together with its own per-request state, and
// only when tracing is on, so that spans cost no allocation of their own.
type SpanBufs struct {
	attrBuf   [6]attribute.KeyValue
	endBuf    [6]attribute.KeyValue
	clientEnd [2]attribute.KeyValue
	startOpts [3]trace.SpanStartOption
	attrs     []attribute.KeyValue // the server span's request attributes, reused by the client span
}

// StartServer starts the server span of r, a request to target received
// at start, under the trace context that r's header carries (extracted
// with the propagator), and returns the span's context.
func (t *Telemetry) StartServer(ctx context.Context, r *http.Request, target string, start time.Time, b *SpanBufs) (context.Context, trace.Span) {
	ctx = t.prop.Extract(ctx, headerCarrier(r.Header))
	b.attrs = requestAttrs(b.attrBuf[:0], r, target)
	b.startOpts = [3]trace.SpanStartOption{serverKindOpt, trace.WithTimestamp(start), trace.WithAttributes(b.attrs...)}
	return t.tracer.Start(ctx, MethodAttr(r.Method), b.startOpts[:]...)
}

// ServerEnd is what a server span records when it ends.
type ServerEnd struct {
	Status  int    // the response status; 0 when none was sent
	ErrType string // the error type; "" when none
	// Tunnel is set for a CONNECT or upgrade that relayed Sent bytes from
	// the client and Received bytes to it.
	Tunnel         bool
	Sent, Received int64
	// Intercepted is set for an intercepted CONNECT, which served
	// Requests requests inside.
	Intercepted bool
	Requests    int64
	// Via names the upstream proxy that served the request or tunnel,
	// without credentials; "" when it went directly.
	Via string
}

// EndServer ends span, a server span that StartServer started with b,
// with e's attributes; a status of 500 and up, or an error with no status,
// marks it failed.
func EndServer(span trace.Span, b *SpanBufs, e ServerEnd) {
	attrs := b.endBuf[:0]
	if e.Status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(e.Status))
	}
	if e.ErrType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(e.ErrType))
	}
	if e.Tunnel {
		attrs = append(attrs,
			attribute.Int64("fwdproxy.tunnel.bytes_sent", e.Sent),
			attribute.Int64("fwdproxy.tunnel.bytes_received", e.Received))
	}
	if e.Intercepted {
		attrs = append(attrs, attribute.Int64("fwdproxy.intercept.requests", e.Requests))
	}
	if e.Via != "" {
		attrs = append(attrs, attribute.String("fwdproxy.upstream.proxy", e.Via))
	}
	span.SetAttributes(attrs...)
	if e.Status >= 500 || (e.Status == 0 && e.ErrType != "") {
		span.SetStatus(codes.Error, e.ErrType)
	}
	span.End()
}

// StartClient starts the client span of out, the upstream request of a
// request whose server span StartServer started with b, and injects its
// context into out's header. The client span takes the server span's
// request attributes, unless changed is set: a hook may have changed the
// request, and its attributes are made anew.
func (t *Telemetry) StartClient(ctx context.Context, out *http.Request, changed bool, b *SpanBufs) (context.Context, trace.Span) {
	attrs := b.attrs
	if changed {
		attrs = requestAttrs(nil, out, out.URL.Host)
	}
	b.startOpts = [3]trace.SpanStartOption{clientKindOpt, trace.WithAttributes(attrs...)}
	ctx, span := t.tracer.Start(ctx, MethodAttr(out.Method), b.startOpts[:2]...)
	t.prop.Inject(ctx, headerCarrier(out.Header))
	return ctx, span
}

// EndClient ends span, a client span that StartClient started with b, with
// the upstream's status (0 for none) and the error type ("" for none),
// which marks it failed.
func EndClient(span trace.Span, b *SpanBufs, status int, errType string) {
	attrs := b.clientEnd[:0]
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

// SetVia records on span, a client span, the upstream proxy (its name,
// without credentials) that the request was sent through.
func SetVia(span trace.Span, via string) {
	span.SetAttributes(attribute.String("fwdproxy.upstream.proxy", via))
}

// MethodAttr maps methods outside the known set to _OTHER, as the semantic
// conventions ask, to bound cardinality. It is also a span's name.
func MethodAttr(m string) string {
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
	name, version := protocol(r)
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(MethodAttr(r.Method)),
		semconv.ServerAddressKey.String(host),
	)
	if name != "" {
		attrs = append(attrs, semconv.NetworkProtocolNameKey.String(name))
	}
	attrs = append(attrs, semconv.NetworkProtocolVersionKey.String(version))
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

// versionString is the network.protocol.version of HTTP major.minor.
// SOCKS5Proto is the Proto of the CONNECT request that stands for a SOCKS5
// client's CONNECT (the root package's socks.go makes it): its spans and
// metrics say network.protocol.name socks, version 5, not HTTP's.
const SOCKS5Proto = "SOCKS5"

// protocol returns the network.protocol.name and .version of r as the
// proxy received it: "" (HTTP, which the HTTP conventions leave implied)
// and HTTP's version, or socks and 5 for a SOCKS5 client's request.
func protocol(r *http.Request) (name, version string) {
	if r.Proto == SOCKS5Proto {
		return "socks", "5"
	}
	return "", versionString(r.ProtoMajor, r.ProtoMinor)
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

// headerCarrier is propagation.HeaderCarrier with the canonical forms of
// the W3C Trace Context and Baggage keys written out, so that Get and Set
// of those keys do not allocate a canonicalized key. Every other key goes
// through http.Header as before.
type headerCarrier http.Header

// canonicalKey returns the canonical header key of the propagators' usual
// lower-case keys, and "" for any other.
func canonicalKey(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return ""
}

// Get returns the first value of key.
func (hc headerCarrier) Get(key string) string {
	if ck := canonicalKey(key); ck != "" {
		if v := hc[ck]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return http.Header(hc).Get(key)
}

// Values returns all values of key.
func (hc headerCarrier) Values(key string) []string {
	if ck := canonicalKey(key); ck != "" {
		return hc[ck]
	}
	return http.Header(hc).Values(key)
}

// Set replaces the values of key by value.
func (hc headerCarrier) Set(key, value string) {
	if ck := canonicalKey(key); ck != "" {
		hc[ck] = []string{value}
		return
	}
	http.Header(hc).Set(key, value)
}

// Keys lists the keys in the carrier.
func (hc headerCarrier) Keys() []string {
	keys := make([]string, 0, len(hc))
	for k := range hc {
		keys = append(keys, k)
	}
	return keys
}
