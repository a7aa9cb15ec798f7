package telemetry

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// What keeps the SDK's cost per request down: attribute sets made once per
// distinct combination rather than per measurement (setCache), option
// slices made once (telemetry.go), span options made once and span
// attributes in buffers the caller keeps (span.go), a header carrier that
// needs no key canonicalization for the trace-context keys (span.go).

// MetricsOn reports whether the request metrics record anything in ctx
// (false for no-op meters).
func (t *Telemetry) MetricsOn(ctx context.Context) bool { return t.serverDuration.Enabled(ctx) }

// RequestStarted counts a server request with the given method as active.
func (t *Telemetry) RequestStarted(ctx context.Context, method string) {
	t.activeRequests.Add(ctx, 1, methodAddOpts[MethodAttr(method)]...)
}

// RequestEnded counts r out of the active requests and records its
// duration d, with its response status (0 for none) and error type (""
// for none).
func (t *Telemetry) RequestEnded(ctx context.Context, r *http.Request, status int, errType string, d time.Duration) {
	method := MethodAttr(r.Method)
	t.activeRequests.Add(ctx, -1, methodAddOpts[method]...)
	name, version := protocol(r)
	t.serverDuration.Record(ctx, d.Seconds(), t.serverDurationOpts(serverSetKey{
		method: method, protoName: name, proto: version, status: status, errType: errType})...)
}

// ClientRequestEnded records the duration d of out, an upstream request,
// until resp's header arrived (resp is nil and status 0 when it failed),
// with its error type ("" for none).
func (t *Telemetry) ClientRequestEnded(ctx context.Context, out *http.Request, resp *http.Response, status int, errType string, d time.Duration) {
	host, port := splitTarget(out.URL.Host, out.URL.Scheme)
	k := clientSetKey{method: MethodAttr(out.Method), host: host, port: port, status: status, errType: errType}
	if status > 0 {
		k.proto = versionString(resp.ProtoMajor, resp.ProtoMinor)
	}
	t.clientDuration.Record(ctx, d.Seconds(), t.clientDurationOpts(k)...)
}

// UpstreamConn counts an upstream connection taken for a request, by
// whether it was reused from a pool.
func (t *Telemetry) UpstreamConn(ctx context.Context, reused bool) {
	opts := newConnAddOpts
	if reused {
		opts = reusedAddOpts
	}
	t.upstreamConns.Add(ctx, 1, opts...)
}

// TunnelStarted counts a tunnel as active.
func (t *Telemetry) TunnelStarted(ctx context.Context) { t.activeTunnels.Add(ctx, 1) }

// TunnelEnded counts a tunnel out of the active ones and records the bytes
// it relayed (sent: client to upstream) and how long it was open.
func (t *Telemetry) TunnelEnded(ctx context.Context, sent, received int64, d time.Duration) {
	t.activeTunnels.Add(ctx, -1)
	t.tunnelBytes.Add(ctx, sent, transmitOpt)
	t.tunnelBytes.Add(ctx, received, receiveOpt)
	t.tunnelDuration.Record(ctx, d.Seconds())
}

// Denial counts a request refused by access control for reason (a short,
// low-cardinality word such as "forbidden" or "auth_required"), unless
// telemetry is off.
func (t *Telemetry) Denial(ctx context.Context, reason string) {
	if !t.Off && t.denials.Enabled(ctx) {
		t.denials.Add(ctx, 1, metric.WithAttributes(attribute.String("fwdproxy.denial.reason", reason)))
	}
}

// maxCachedSets bounds each cache of metric attribute sets. A client
// duration's set names the upstream host, which the clients choose, so the
// cache is emptied when it is full rather than grown without limit.
const maxCachedSets = 1024

// serverSetKey is what tells apart the attribute sets of
// http.server.request.duration.
type serverSetKey struct {
	method, protoName, proto, errType string // protoName: "" for HTTP
	status                            int
}

// clientSetKey is what tells apart the attribute sets of
// http.client.request.duration.
type clientSetKey struct {
	method, host, proto, errType string
	port, status                 int
}

// setCache maps keys to record options carrying a precomputed
// attribute.Set (hashed once, when first made), in the slice that a
// variadic Record takes.
type setCache[K comparable] struct {
	mu sync.RWMutex
	m  map[K][]metric.RecordOption
}

// get returns the options of k, making them with mk when k is new.
func (c *setCache[K]) get(k K, mk func(K) []attribute.KeyValue) []metric.RecordOption {
	c.mu.RLock()
	opt, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return opt
	}
	opt = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(mk(k)...))}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedSets {
		c.m = make(map[K][]metric.RecordOption)
	}
	c.m[k] = opt
	c.mu.Unlock()
	return opt
}

// serverDurationOpts are the attribute set of a server request's duration:
// method, protocol name (when not HTTP: socks for SOCKS5) and version,
// status (when there is one) and error type (when there is one).
func (t *Telemetry) serverDurationOpts(k serverSetKey) []metric.RecordOption {
	return t.serverSets.get(k, func(k serverSetKey) []attribute.KeyValue {
		attrs := make([]attribute.KeyValue, 0, 5)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(k.method))
		if k.protoName != "" {
			attrs = append(attrs, semconv.NetworkProtocolNameKey.String(k.protoName))
		}
		attrs = append(attrs, semconv.NetworkProtocolVersionKey.String(k.proto))
		if k.status > 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(k.status))
		}
		if k.errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
		}
		return attrs
	})
}

// clientDurationOpts are the attribute set of an upstream request's duration:
// method, server address and port, status and protocol version (when there
// is a response) and error type (when there is one).
func (t *Telemetry) clientDurationOpts(k clientSetKey) []metric.RecordOption {
	return t.clientSets.get(k, func(k clientSetKey) []attribute.KeyValue {
		attrs := make([]attribute.KeyValue, 0, 6)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(k.method),
			semconv.ServerAddressKey.String(k.host), semconv.ServerPortKey.Int(k.port))
		if k.status > 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(k.status),
				semconv.NetworkProtocolVersionKey.String(k.proto))
		}
		if k.errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
		}
		return attrs
	})
}
