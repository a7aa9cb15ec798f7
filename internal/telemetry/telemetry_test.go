package telemetry

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// TestHeaderCarrier: headerCarrier answers and writes exactly as
// propagation.HeaderCarrier does, for the keys it shortcuts and for others.
func TestHeaderCarrier(t *testing.T) {
	base := func() http.Header {
		return http.Header{
			"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "second"},
			"Tracestate":  {"a=1"},
			"Baggage":     {"k=v", "k2=v2"},
			"X-Custom":    {"c"},
		}
	}
	keys := []string{"traceparent", "tracestate", "baggage", "x-custom", "Traceparent", "X-Custom", "missing", ""}
	for _, key := range keys {
		t.Run("get "+key, func(t *testing.T) {
			h := base()
			if got, want := headerCarrier(h).Get(key), propagation.HeaderCarrier(h).Get(key); got != want {
				t.Errorf("Get(%q) = %q, want %q", key, got, want)
			}
			if got, want := headerCarrier(h).Values(key), propagation.HeaderCarrier(h).Values(key); !slices.Equal(got, want) {
				t.Errorf("Values(%q) = %q, want %q", key, got, want)
			}
			if got, want := headerCarrier(http.Header{}).Get(key), propagation.HeaderCarrier(http.Header{}).Get(key); got != want {
				t.Errorf("Get(%q) on an empty header = %q, want %q", key, got, want)
			}
		})
		t.Run("set "+key, func(t *testing.T) {
			got, want := base(), base()
			headerCarrier(got).Set(key, "new")
			propagation.HeaderCarrier(want).Set(key, "new")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("after Set(%q): %v, want %v", key, got, want)
			}
		})
	}
	h := base()
	gotKeys, wantKeys := headerCarrier(h).Keys(), propagation.HeaderCarrier(h).Keys()
	slices.Sort(gotKeys)
	slices.Sort(wantKeys)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("Keys() = %q, want %q", gotKeys, wantKeys)
	}

	// Through real propagators, both ways.
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	m, err := baggage.NewMember("user", "alice")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(m)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := trace.ParseTraceState("vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled, TraceState: ts,
	})
	ctx := baggage.ContextWithBaggage(trace.ContextWithSpanContext(context.Background(), sc), bag)
	got, want := http.Header{}, http.Header{}
	prop.Inject(ctx, headerCarrier(got))
	prop.Inject(ctx, propagation.HeaderCarrier(want))
	if !reflect.DeepEqual(got, want) || len(got) != 3 {
		t.Fatalf("injected %v, want %v", got, want)
	}
	back := prop.Extract(context.Background(), headerCarrier(got))
	if bsc := trace.SpanContextFromContext(back); !bsc.Equal(sc.WithRemote(true)) {
		t.Errorf("extracted span context %v, want %v", bsc, sc)
	}
	if b := baggage.FromContext(back); b.Member("user").Value() != "alice" {
		t.Errorf("extracted baggage %v", b)
	}
}

// recordSet is the attribute set that opts carry.
func recordSet(opts []metric.RecordOption) attribute.Set {
	return metric.NewRecordConfig(opts).Attributes()
}

// TestDurationSets: the cached attribute sets are those the semantic
// conventions ask for, the same each time, and the cache stays bounded.
func TestDurationSets(t *testing.T) {
	method := semconv.HTTPRequestMethodKey.String
	tel := &Telemetry{}
	for _, tc := range []struct {
		name string
		opts []metric.RecordOption
		want []attribute.KeyValue
	}{
		{"server ok", tel.serverDurationOpts(serverSetKey{method: "GET", proto: "1.1", status: 200}),
			[]attribute.KeyValue{method("GET"), semconv.NetworkProtocolVersionKey.String("1.1"), semconv.HTTPResponseStatusCodeKey.Int(200)}},
		{"server 502", tel.serverDurationOpts(serverSetKey{method: "POST", proto: "2", status: 502, errType: "upstream"}),
			[]attribute.KeyValue{method("POST"), semconv.NetworkProtocolVersionKey.String("2"), semconv.HTTPResponseStatusCodeKey.Int(502), semconv.ErrorTypeKey.String("upstream")}},
		{"server aborted", tel.serverDurationOpts(serverSetKey{method: "GET", proto: "1.1", errType: "aborted"}),
			[]attribute.KeyValue{method("GET"), semconv.NetworkProtocolVersionKey.String("1.1"), semconv.ErrorTypeKey.String("aborted")}},
		{"server SOCKS5", tel.serverDurationOpts(serverSetKey{method: "CONNECT", protoName: "socks", proto: "5", status: 200}),
			[]attribute.KeyValue{method("CONNECT"), semconv.NetworkProtocolNameKey.String("socks"), semconv.NetworkProtocolVersionKey.String("5"), semconv.HTTPResponseStatusCodeKey.Int(200)}},
		{"client ok", tel.clientDurationOpts(clientSetKey{method: "GET", host: "example.com", port: 80, status: 200, proto: "1.1"}),
			[]attribute.KeyValue{method("GET"), semconv.ServerAddressKey.String("example.com"), semconv.ServerPortKey.Int(80),
				semconv.HTTPResponseStatusCodeKey.Int(200), semconv.NetworkProtocolVersionKey.String("1.1")}},
		{"client 503", tel.clientDurationOpts(clientSetKey{method: "PUT", host: "10.0.0.1", port: 8080, status: 503, proto: "2", errType: "503"}),
			[]attribute.KeyValue{method("PUT"), semconv.ServerAddressKey.String("10.0.0.1"), semconv.ServerPortKey.Int(8080),
				semconv.HTTPResponseStatusCodeKey.Int(503), semconv.NetworkProtocolVersionKey.String("2"), semconv.ErrorTypeKey.String("503")}},
		{"client failed", tel.clientDurationOpts(clientSetKey{method: "GET", host: "example.com", port: 443, errType: "upstream_timeout"}),
			[]attribute.KeyValue{method("GET"), semconv.ServerAddressKey.String("example.com"), semconv.ServerPortKey.Int(443),
				semconv.ErrorTypeKey.String("upstream_timeout")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := recordSet(tc.opts), attribute.NewSet(tc.want...)
			if !got.Equals(&want) {
				t.Errorf("attributes %v, want %v", got.ToSlice(), want.ToSlice())
			}
		})
	}

	var c setCache[int]
	made := 0
	mk := func(k int) []attribute.KeyValue {
		made++
		return []attribute.KeyValue{attribute.Int("k", k)}
	}
	for round := 0; round < 2; round++ {
		for k := 0; k < 3*maxCachedSets; k++ {
			s := recordSet(c.get(k, mk))
			if v, _ := s.Value("k"); s.Len() != 1 || v.AsInt64() != int64(k) {
				t.Fatalf("key %d: set %v", k, s.ToSlice())
			}
			if len(c.m) > maxCachedSets {
				t.Fatalf("cache holds %d sets, more than %d", len(c.m), maxCachedSets)
			}
		}
	}
	before := made
	for k := 0; k < 10; k++ {
		c.get(3*maxCachedSets-1, mk)
	}
	if made != before {
		t.Errorf("a cached key was made %d more times", made-before)
	}
}

// TestSetsPerTelemetry: the attribute-set caches are each Telemetry's own,
// so two Proxies share no mutable state through them.
func TestSetsPerTelemetry(t *testing.T) {
	a, b := &Telemetry{}, &Telemetry{}
	a.serverDurationOpts(serverSetKey{method: "GET", proto: "1.1", status: 200})
	a.clientDurationOpts(clientSetKey{method: "GET", host: "example.com", port: 80})
	if len(a.serverSets.m) != 1 || len(a.clientSets.m) != 1 {
		t.Fatalf("a caches %d and %d sets, want 1 and 1", len(a.serverSets.m), len(a.clientSets.m))
	}
	if b.serverSets.m != nil || b.clientSets.m != nil {
		t.Errorf("b's caches hold %d and %d sets made for a", len(b.serverSets.m), len(b.clientSets.m))
	}
}
