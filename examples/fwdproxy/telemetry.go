package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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

// telemetry is what -trace-file and -admin-listen set up before the Proxy
// is made: the providers it is given, the metrics handler and the admin
// listener, bound, which startAdmin (admin.go) serves once the Proxy
// exists.
type telemetry struct {
	opts    []fwdproxy.Option
	closers []func(context.Context) error
	adminLn net.Listener // nil without -admin-listen
	metrics http.Handler // Prometheus text of the meter provider, with -admin-listen
}

// setupTelemetry opens the trace file and, with -admin-listen, makes the
// meter provider whose metrics /metrics serves and binds the admin
// listener.
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
	if f.adminListen != "" {
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			t.close(context.Background())
			return nil, l.problem("admin-listen", err.Error())
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
		ln, err := net.Listen("tcp", adminAddr(f.adminListen)) // admin.go
		if err != nil {
			_ = mp.Shutdown(context.Background())
			t.close(context.Background())
			return nil, l.problem("admin-listen", err.Error())
		}
		t.adminLn = ln
		t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		t.opts = append(t.opts, fwdproxy.WithMeterProvider(mp))
		t.closers = append(t.closers, func(ctx context.Context) error {
			ln.Close() // if startAdmin never served it
			return mp.Shutdown(ctx)
		})
	}
	return t, nil
}

// close flushes the trace file and the meter provider.
func (t *telemetry) close(ctx context.Context) error {
	var errs []error
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i](ctx))
	}
	t.closers = nil
	return errors.Join(errs...)
}
