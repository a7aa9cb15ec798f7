// Package oteltest holds the library's tests that need the OpenTelemetry
// SDK: spans and metrics as a real TracerProvider and MeterProvider record
// them, and what the SDK costs a request. It is a module of its own, so the
// SDK stays out of the library's go.mod; its replace directive tests the
// library in this tree, through its public API (WithTracerProvider,
// WithMeterProvider, WithLogger, Stats, ...) and the shared test plumbing in
// internal/proxytest.
//
// The package has no code of its own; run its tests with
//
//	cd internal/oteltest && go test -race ./...
package oteltest
