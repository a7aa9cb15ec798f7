package fwdproxy

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkTelemetry measures a 100-byte GET through the proxy over
// loopback keep-alive connections, as BenchmarkSmallGET does, with
// telemetry switched off (the baseline) and with no-op providers; the
// variants with SDK providers (sdk, sdk-trace-only, sdk-metrics-only) are
// the BenchmarkTelemetry of internal/oteltest, a module of its own so that
// the SDK stays out of this one's go.mod. The access log is off in every
// variant (the test logger's handler is slog.DiscardHandler, whose Enabled
// is false, so no record is built or queued), so the differences are the
// cost of tracing and metrics, except in "access-log": no-op providers and
// an Info-level text logger writing to io.Discard, the cost of the access
// log (a record per request through the asynchronous queue, formatted by
// slog) without the cost of a disk.
func BenchmarkTelemetry(b *testing.B) {
	body := strings.Repeat("x", 100)
	o := origin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	})
	for _, bc := range []struct {
		name string
		opts func(*testing.B) []Option
	}{
		{"off", func(*testing.B) []Option {
			return []Option{optionFunc(func(s *settings) error { s.telemetryOff = true; return nil })}
		}},
		{"noop", func(*testing.B) []Option {
			return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider())}
		}},
		{"access-log", func(*testing.B) []Option {
			return []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider()),
				WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := startProxy(b, bc.opts(b)...)
			proxytest.BenchGET(b, tp.client(b, nil), o.URL+"/small")
		})
	}
}
