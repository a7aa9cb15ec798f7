package oteltest

import (
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestReloadMetrics: fwdproxy.config.generation follows Stats.Config's
// generation, and fwdproxy.config.reloads counts the reloads by result; a
// Reload that gives the MeterProvider New was given again is no change.
func TestReloadMetrics(t *testing.T) {
	opt, rd := metering(t)
	tp := startProxy(t, opt)
	gauge := func() int64 {
		t.Helper()
		m, ok := collect(t, rd)["fwdproxy.config.generation"]
		if !ok {
			t.Fatal("no fwdproxy.config.generation")
		}
		g, ok := m.Data.(metricdata.Gauge[int64])
		if !ok || len(g.DataPoints) != 1 {
			t.Fatalf("fwdproxy.config.generation is %T %+v, want one int64 gauge point", m.Data, m.Data)
		}
		return g.DataPoints[0].Value
	}
	if g := gauge(); g != 1 {
		t.Errorf("generation %d after New, want 1", g)
	}
	for range 2 {
		if err := tp.Reload(fwdproxy.WithLogger(proxytest.Logger(t)), fwdproxy.WithAllowPrivate(), opt); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.Reload(fwdproxy.WithLogger(proxytest.Logger(t)), fwdproxy.WithMaxConns(-1)); err == nil {
		t.Fatal("Reload with WithMaxConns(-1) succeeded")
	}
	if g, s := gauge(), tp.Stats().Config; g != 3 || s.Generation != 3 {
		t.Errorf("generation %d (Stats %d), want 3", g, s.Generation)
	}
	reloads := collect(t, rd)["fwdproxy.config.reloads"]
	for _, tc := range []struct {
		result string
		want   int64
	}{{"ok", 2}, {"error", 1}} {
		if got := sumOf(t, reloads, attribute.String("result", tc.result)); got != tc.want {
			t.Errorf("fwdproxy.config.reloads{result=%s} = %d, want %d", tc.result, got, tc.want)
		}
	}
}
