package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// newLogger returns the logger for -log-format, writing to w, at level
// (which a reload may change). Sensitive header values are redacted by
// attribute name as a safety net; the proxy redacts what it logs in any
// case.
func newLogger(format string, w io.Writer, level slog.Leveler) (*slog.Logger, error) {
	ho := &slog.HandlerOptions{Level: level, ReplaceAttr: redact.ReplaceAttr}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is neither text nor json", format)
}

// telemetry is what -metrics-listen and -trace-file set up.
type telemetry struct {
	opts    []fwdproxy.Option
	closers []func(context.Context) error
	mux     *http.ServeMux // the metrics listener's, nil without one
}

// setupTelemetry starts the metrics listener (Prometheus text at /metrics,
// pprof under /debug/pprof/) and the trace file, as the flags ask.
func setupTelemetry(l *loaded, logger *slog.Logger) (*telemetry, error) {
	t := &telemetry{}
	f := l.s
	if f.traceFile != "" {
		file, err := os.OpenFile(f.traceFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, l.problem("trace-file", err.Error())
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(file)) // compact: one JSON object a line
		if err != nil {
			file.Close()
			return nil, l.problem("trace-file", err.Error())
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
		t.opts = append(t.opts, fwdproxy.WithTracerProvider(tp))
		t.closers = append(t.closers, func(ctx context.Context) error {
			return errors.Join(tp.Shutdown(ctx), file.Close())
		})
	}
	if f.metricsListen != "" {
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			t.close(context.Background())
			return nil, l.problem("metrics-listen", err.Error())
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
		ml, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			_ = mp.Shutdown(context.Background())
			t.close(context.Background())
			return nil, l.problem("metrics-listen", err.Error())
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		t.mux = mux // serve also registers /proxy.pac (upstreams.go)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: fwdproxy.DefaultReadHeaderTimeout}
		go func() { _ = srv.Serve(ml) }()
		logger.Info("metrics listening", "addr", ml.Addr().String())
		t.opts = append(t.opts, fwdproxy.WithMeterProvider(mp))
		t.closers = append(t.closers, func(ctx context.Context) error {
			return errors.Join(srv.Shutdown(ctx), mp.Shutdown(ctx))
		})
	}
	return t, nil
}

// close flushes the trace file and stops the metrics listener.
func (t *telemetry) close(ctx context.Context) error {
	var errs []error
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i](ctx))
	}
	t.closers = nil
	return errors.Join(errs...)
}
