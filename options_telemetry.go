package fwdproxy

import (
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Options for logging, the access log and OpenTelemetry (telemetry.go,
// accesslog.go, capture.go).

// WithLogger sets the logger for error lines. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(s *settings) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		s.logger = l
		return nil
	})
}

// WithLogQueueSize sets how many log records may wait for the logger's
// handler. Records logged while the queue is full are dropped and counted
// (Stats.LogDropped): a slow log never makes a request wait. The default is
// 1024.
func WithLogQueueSize(n int) Option {
	return optionFunc(func(s *settings) error {
		if n < 1 {
			return errors.New("WithLogQueueSize: size must be at least 1")
		}
		s.logQueueSize = n
		return nil
	})
}

// defaultLogQueueSize is the log queue length without WithLogQueueSize.
const defaultLogQueueSize = 1024

// WithCapture adds to each access-log record the request and response
// headers and the first maxBodyBytes bytes of each body, for inspection.
// The values of Authorization, Proxy-Authorization, Cookie and Set-Cookie
// are replaced by "[REDACTED]". Captured bodies cost a copy of up to
// maxBodyBytes per direction and request; 0 captures headers only. Off by
// default. Bodies are captured as they pass, never read ahead: a body the
// client or upstream did not send is not captured.
func WithCapture(maxBodyBytes int) Option {
	return optionFunc(func(s *settings) error {
		if maxBodyBytes < 0 {
			return errors.New("WithCapture: negative maxBodyBytes")
		}
		s.capture = true
		s.captureBytes = maxBodyBytes
		return nil
	})
}

// WithTracerProvider sets the TracerProvider for the proxy's spans: a server
// span per client request or tunnel and a client span per upstream request.
// The default is otel.GetTracerProvider() as it is when New runs; a no-op
// provider, or the global one when no provider had been set before New,
// turns tracing off at no cost per request.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(s *settings) error {
		if tp == nil {
			return errors.New("WithTracerProvider: nil TracerProvider")
		}
		s.tracerProvider = tp
		return nil
	})
}

// WithMeterProvider sets the MeterProvider for the proxy's metrics. The
// default is otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(s *settings) error {
		if mp == nil {
			return errors.New("WithMeterProvider: nil MeterProvider")
		}
		s.meterProvider = mp
		return nil
	})
}

// WithPropagator sets how trace context is read from client requests and
// written into upstream requests. The default is
// otel.GetTextMapPropagator() as it is when New runs, or W3C Trace Context
// when that propagates nothing.
func WithPropagator(prop propagation.TextMapPropagator) Option {
	return optionFunc(func(s *settings) error {
		if prop == nil {
			return errors.New("WithPropagator: nil TextMapPropagator")
		}
		s.propagator = prop
		return nil
	})
}
