package oteltest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkTelemetry is the SDK half of the library's BenchmarkTelemetry
// (which has the variants off, noop and access-log): a 100-byte GET through
// the proxy over loopback keep-alive connections, as BenchmarkSmallGET does,
// with SDK providers (every span sampled and exported in batches to an
// exporter that discards them, metrics aggregated for a manual reader), and
// with no-op providers as the baseline in this run (they cost what telemetry
// switched off costs; that switch is not public API). The access log is off
// in every variant (the test logger's handler is slog.DiscardHandler, whose
// Enabled is false, so no record is built or queued), so the differences are
// the cost of tracing and metrics.
func BenchmarkTelemetry(b *testing.B) {
	body := strings.Repeat("x", 100)
	o := proxytest.Origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})
	sdk := func(b *testing.B) []fwdproxy.Option {
		// A batch processor, as in production, over an exporter that drops
		// the spans: the proxy's cost, not an exporter's, is measured.
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardSpans{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		})
		return []fwdproxy.Option{fwdproxy.WithTracerProvider(tp), fwdproxy.WithMeterProvider(mp)}
	}
	for _, bc := range []struct {
		name string
		opts func(*testing.B) []fwdproxy.Option
	}{
		{"noop", func(*testing.B) []fwdproxy.Option {
			return []fwdproxy.Option{fwdproxy.WithTracerProvider(tracenoop.NewTracerProvider()), fwdproxy.WithMeterProvider(metricnoop.NewMeterProvider())}
		}},
		{"sdk", sdk},
		{"sdk-trace-only", func(b *testing.B) []fwdproxy.Option { return sdk(b)[:1] }},
		{"sdk-metrics-only", func(b *testing.B) []fwdproxy.Option { return sdk(b)[1:] }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := startProxy(b, bc.opts(b)...)
			proxytest.BenchGET(b, proxytest.Client(b, tp.URL, nil), o.URL+"/small")
		})
	}
}
