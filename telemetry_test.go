package fwdproxy

import (
	"context"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// The tests of spans and metrics as the OpenTelemetry SDK records them, and
// of what the SDK costs a request, are in internal/oteltest: a module of its
// own, so that the SDK stays out of this one's go.mod.

// TestNoopAllocations: with no-op providers the request path allocates
// exactly as much as with telemetry switched off. That the measurement sees
// what SDK tracing allocates is its other half, TestNoopAllocationsSeeSDK in
// internal/oteltest.
func TestNoopAllocations(t *testing.T) {
	allocs := func(opts ...Option) float64 {
		p, err := New(append([]Option{WithRequestHook(proxytest.NoContent), WithLogger(testLogger(t))}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		return proxytest.ServeHTTPAllocs(p)
	}
	off := allocs(optionFunc(func(s *settings) error { s.telemetryOff = true; return nil }))
	noop := allocs(WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider()))
	if noop != off {
		t.Errorf("allocations per request: %v with no-op providers, %v with telemetry off", noop, off)
	}
}
