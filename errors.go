package fwdproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// Kinds of failure. Every error the proxy reports to a client is an *Error
// whose Kind is one of these, so callers can test with errors.Is:
//
//	errors.Is(err, fwdproxy.ErrUpstreamTimeout)
//
// The status each kind maps to is fixed in one place (see Error.Status).
var (
	ErrMalformed       = errors.New("malformed request")             // 400
	ErrAuthRequired    = errors.New("proxy authentication required") // 407
	ErrForbidden       = errors.New("forbidden")                     // 403
	ErrUnavailable     = errors.New("proxy unavailable")             // 503 (shutting down, limits)
	ErrRateLimited     = errors.New("too many requests")             // 429
	ErrTooLarge        = errors.New("request body too large")        // 413
	ErrUpstream        = errors.New("upstream failed")               // 502
	ErrUpstreamTimeout = errors.New("upstream timed out")            // 504
	ErrClientTimeout   = errors.New("client timed out")              // 408 (a stalled request body)
	ErrLoop            = errors.New("request loop")                  // 508
)

// Error describes why the proxy could not serve a request. Its Reason is
// the short plain-text line sent to the client.
type Error struct {
	Kind   error  // one of the Err… kinds above
	Status int    // HTTP status sent to the client
	Target string // the requested host:port, when known
	Reason string // short plain-text reason, safe to show the client
	Err    error  // underlying cause, if any

	denial string // access-control reason for the denials metric, e.g. "rule"
}

// Error implements error.
func (e *Error) Error() string {
	s := "fwdproxy: " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// statusOf is the one place that maps a kind to an HTTP status.
func statusOf(kind error) int {
	switch kind {
	case ErrMalformed:
		return http.StatusBadRequest
	case ErrAuthRequired:
		return http.StatusProxyAuthRequired
	case ErrForbidden:
		return http.StatusForbidden
	case ErrUnavailable:
		return http.StatusServiceUnavailable
	case ErrRateLimited:
		return http.StatusTooManyRequests
	case ErrTooLarge:
		return http.StatusRequestEntityTooLarge
	case ErrUpstreamTimeout:
		return http.StatusGatewayTimeout
	case ErrClientTimeout:
		return http.StatusRequestTimeout
	case ErrLoop:
		return http.StatusLoopDetected
	default:
		return http.StatusBadGateway
	}
}

func newError(kind error, target, reason string, cause error) *Error {
	return &Error{Kind: kind, Status: statusOf(kind), Target: target, Reason: reason, Err: cause}
}

// Deny returns an error for a hook to refuse a request with the given status
// (403 when status is not a 4xx or 5xx code) and a short plain-text reason.
func Deny(status int, reason string) error {
	if status < 400 || status > 599 {
		status = http.StatusForbidden
	}
	if reason == "" {
		reason = http.StatusText(status)
	}
	return &Error{Kind: ErrForbidden, Status: status, Reason: reason}
}

// asError converts any failure on the way to target into an *Error with the
// right kind. Hooks' plain errors become 403s; an *Error passes through as a
// copy (see withTarget).
func asError(target string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e.withTarget(target)
	}
	var ve *viaError
	if errors.As(err, &ve) {
		e := asError(target, ve.err)
		e.Reason += " (through the upstream proxy " + ve.via + ")"
		e.Err = err
		return e
	}
	var pe *proxies.Error
	if errors.As(err, &pe) {
		// An upstream proxy failed or refused: its message names it
		// without credentials.
		kind := ErrUpstream
		if pe.Timeout() {
			kind = ErrUpstreamTimeout
		}
		return newError(kind, target, pe.Error(), err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		what := dnsErr.Err
		switch {
		case dnsErr.IsNotFound:
			what = "no such host"
		case dnsErr.IsTimeout:
			what = "DNS timeout"
		}
		return newError(ErrUpstream, target, "DNS lookup of "+dnsErr.Name+" failed: "+what, err)
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return newError(ErrUpstream, target, "TLS certificate of "+target+" failed verification", err)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), netx.IsTimeout(err):
		return newError(ErrUpstreamTimeout, target, "upstream "+target+" timed out", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return newError(ErrUpstream, target, "upstream "+target+" refused the connection", err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return newError(ErrUpstream, target, "upstream "+target+" reset the connection", err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return newError(ErrUpstream, target, "upstream "+target+" is unreachable", err)
	}
	return newError(ErrUpstream, target, "upstream "+target+" failed", err)
}

// withTarget returns a copy of e naming target when e names none. It never
// writes into e: an *Error may be shared, such as one Deny value that a hook
// returns for every request, and concurrent requests must neither race on it
// nor see each other's target.
func (e *Error) withTarget(target string) *Error {
	c := *e
	if c.Target == "" {
		c.Target = target
	}
	return &c
}

// denied returns a refusal by access control, counted in the denials
// metric under reason (a short, low-cardinality word).
func denied(kind error, reason, target, text string) *Error {
	e := newError(kind, target, text, nil)
	e.denial = reason
	return e
}

// kindName is the short name of an error kind, used as error.type, denial
// reason and Stats key.
func kindName(kind error) string {
	switch kind {
	case ErrMalformed:
		return "malformed"
	case ErrAuthRequired:
		return "auth_required"
	case ErrForbidden:
		return "forbidden"
	case ErrUnavailable:
		return "unavailable"
	case ErrUpstream:
		return "upstream"
	case ErrUpstreamTimeout:
		return "upstream_timeout"
	case ErrLoop:
		return "loop"
	case ErrClientTimeout:
		return "client_timeout"
	case ErrRateLimited:
		return "rate_limited"
	case ErrTooLarge:
		return "too_large"
	}
	return "_OTHER"
}

// logFailure gives a refusal or failure its one log record. With the access
// log on, that is the request's access record, which endRequest writes
// with e's reason (logAccess); otherwise it is a Warn line with message
// msg. The first failure of a request is the one reported.
func (p *Proxy) logFailure(r *http.Request, e *Error, msg string) {
	if rs := reqStateFrom(r.Context()); rs != nil && (rs.logging || rs.rec != nil) {
		if rs.failure == nil {
			rs.failure = e // for the access record and the flow record
		}
		if rs.logging {
			return
		}
	}
	p.logError(r, e, msg)
}

// logError writes the Warn line of a failure (see logFailure).
func (p *Proxy) logError(r *http.Request, e *Error, msg string) {
	ctx := r.Context()
	if !p.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	attrs := []slog.Attr{
		slog.Int("status", e.Status),
		slog.String("method", r.Method),
		slog.String("target", e.Target),
		slog.String("reason", e.Reason),
		slog.String("client", r.RemoteAddr),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	p.log.LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
}

func (p *Proxy) logClientGone(r *http.Request, err error) {
	p.log.LogAttrs(r.Context(), slog.LevelDebug, "client went away",
		slog.String("method", r.Method), slog.String("target", r.URL.Host),
		slog.String("client", r.RemoteAddr), slog.String("error", err.Error()))
}
