package fwdproxy

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// This file holds what keeps the SDK's cost per request down: attribute
// sets made once per distinct combination rather than per measurement,
// span options made once, a header carrier that needs no key
// canonicalization for the trace-context keys, and the client trace kept in
// the request's state.

var (
	serverKindOpt = trace.WithSpanKind(trace.SpanKindServer)
	clientKindOpt = trace.WithSpanKind(trace.SpanKindClient)
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

// maxCachedSets bounds each cache of metric attribute sets. A client
// duration's set names the upstream host, which the clients choose, so the
// cache is emptied when it is full rather than grown without limit.
const maxCachedSets = 1024

// serverSetKey is what tells apart the attribute sets of
// http.server.request.duration.
type serverSetKey struct {
	method, proto, errType string
	status                 int
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

var (
	serverSets setCache[serverSetKey]
	clientSets setCache[clientSetKey]
)

// serverDurationOpts are the attribute set of a server request's duration:
// method, protocol version, status (when there is one) and error type
// (when there is one).
func serverDurationOpts(k serverSetKey) []metric.RecordOption {
	return serverSets.get(k, func(k serverSetKey) []attribute.KeyValue {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(k.method), semconv.NetworkProtocolVersionKey.String(k.proto))
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
func clientDurationOpts(k clientSetKey) []metric.RecordOption {
	return clientSets.get(k, func(k clientSetKey) []attribute.KeyValue {
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

// withClientTrace puts into ctx the client trace that reports the upstream
// connection of rs's round trip (its address, and whether it was reused),
// using the trace kept in rs the first time. ctx is also the context of
// the reuse measurement.
func (rs *reqState) withClientTrace(ctx context.Context, tel *telemetry) context.Context {
	rs.traceTel, rs.traceCtx = tel, ctx
	if !rs.traceUsed {
		rs.traceUsed = true
		rs.clientTrace = httptrace.ClientTrace{GotConn: rs.GotConn}
		return httptrace.WithClientTrace(ctx, &rs.clientTrace)
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: rs.GotConn})
}

// GotConn is the client trace's GotConn, and what the own HTTP/1.1
// transport reports to as an h1.ConnObserver.
func (rs *reqState) GotConn(info httptrace.GotConnInfo) {
	if info.Conn != nil {
		rs.upstream = info.Conn.RemoteAddr().String()
	}
	if rs.metrics {
		opts := newConnAddOpts
		if info.Reused {
			opts = reusedAddOpts
		}
		rs.traceTel.upstreamConns.Add(rs.traceCtx, 1, opts...)
	}
}
