package fwdproxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkTelemetry measures a 100-byte GET through the proxy over
// loopback keep-alive connections, as BenchmarkSmallGET does, with
// telemetry switched off (the baseline), with no-op providers, and with SDK
// providers (every span sampled and exported in batches to an exporter that
// discards them, metrics aggregated for a manual reader). The access log is
// off in every variant (the test logger's handler is slog.DiscardHandler,
// whose Enabled is false, so no record is built or queued), so the
// differences are the cost of tracing and metrics, except in "access-log":
// no-op providers and an Info-level text logger writing to io.Discard, the
// cost of the access log (a record per request through the asynchronous
// queue, formatted by slog) without the cost of a disk.
func BenchmarkTelemetry(b *testing.B) {
	body := strings.Repeat("x", 100)
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})
	sdk := func(b *testing.B) []Option {
		// A batch processor, as in production, over an exporter that drops
		// the spans: the proxy's cost, not an exporter's, is measured.
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardSpans{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		})
		return []Option{WithTracerProvider(tp), WithMeterProvider(mp)}
	}
	for _, bc := range []struct {
		name string
		opts func(*testing.B) []Option
	}{
		{"off", func(*testing.B) []Option {
			return []Option{func(c *config) error { c.telemetryOff = true; return nil }}
		}},
		{"noop", func(*testing.B) []Option {
			return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider())}
		}},
		{"sdk", sdk},
		{"access-log", func(*testing.B) []Option {
			return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider()),
				WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}
		}},
		{"sdk-trace-only", func(b *testing.B) []Option { return sdk(b)[:1] }},
		{"sdk-metrics-only", func(b *testing.B) []Option { return sdk(b)[1:] }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := startProxy(b, bc.opts(b)...)
			proxytest.BenchGET(b, tp.client(b, nil), o.URL+"/small")
		})
	}
}

// discardSpans is a span exporter that drops what it is given.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }
