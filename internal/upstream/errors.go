package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Kinds of upstream failure, for errors.Is. The proxy maps ErrTimeout to
// 504 and the others to 502.
var (
	// ErrUnreachable: the upstream proxy could not be connected to
	// (refused, unreachable, its name did not resolve, reset).
	ErrUnreachable = errors.New("upstream proxy unreachable")
	// ErrTimeout: connecting to the upstream proxy, or its answer to
	// CONNECT or the SOCKS handshake, took longer than allowed.
	ErrTimeout = errors.New("upstream proxy timed out")
	// ErrRefused: the upstream proxy answered but would not open the
	// tunnel: a non-2xx answer to CONNECT other than 401/407 (Status), or a
	// SOCKS5 reply code 1–6 (Reply). The upstream itself is healthy.
	ErrRefused = errors.New("upstream proxy refused the target")
	// ErrAuth: the upstream proxy rejected our credentials, or wants some
	// and we have none: 407 (or 401, which tinyproxy sends for wrong
	// credentials) to CONNECT, or a failed SOCKS5 authentication.
	ErrAuth = errors.New("upstream proxy rejected our credentials")
	// ErrProtocol: the upstream proxy answered something that is not the
	// protocol: a malformed or missing CONNECT response, a failed TLS
	// handshake (including an untrusted certificate), a broken SOCKS reply.
	ErrProtocol = errors.New("upstream proxy protocol error")
)

// Error is a failure to open a tunnel through an upstream. Its message
// names the upstream by Name, never with credentials.
type Error struct {
	// Kind is one of ErrUnreachable, ErrTimeout, ErrRefused, ErrAuth,
	// ErrProtocol, or context.Canceled when the caller gave up first.
	Kind     error
	Upstream string // the upstream's Name
	Target   string // the tunnel's target, when known
	Status   int    // the HTTP status the upstream answered CONNECT with, or 0
	Reply    int    // the SOCKS5 reply code the upstream answered with, or 0
	Err      error  // the cause, if any

	detail   string      // what happened, for the message
	observed atomic.Bool // already counted in the upstream's health (see Observe)
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream ")
	b.WriteString(e.Upstream)
	b.WriteString(": ")
	b.WriteString(e.detail)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the kind and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Timeout reports whether the failure is a timeout (Kind ErrTimeout).
func (e *Error) Timeout() bool { return e.Kind == ErrTimeout }

// Fault reports whether the failure is the upstream's (unreachable, timed
// out, protocol error) and so marks it down. A refusal or a rejection of
// our credentials is an answer from a working upstream; a cancellation is
// the caller's.
func (e *Error) Fault() bool {
	return e.Kind == ErrUnreachable || e.Kind == ErrTimeout || e.Kind == ErrProtocol
}

func (u *Upstream) newError(kind error, target, detail string, cause error) *Error {
	return &Error{Kind: kind, Upstream: u.name, Target: target, detail: detail, Err: cause}
}

// dialError classifies a failure to connect to the upstream proxy itself.
// When ctx has ended, its reason decides: a deadline is a timeout, a
// cancellation is the caller's (the I/O error is then only a symptom).
func (u *Upstream) dialError(ctx context.Context, target string, err error) *Error {
	switch {
	case ctx.Err() == context.Canceled:
		return u.newError(context.Canceled, target, "connecting: canceled", err)
	case ctx.Err() == context.DeadlineExceeded, isTimeout(err):
		return u.newError(ErrTimeout, target, "connecting timed out", err)
	}
	return u.newError(ErrUnreachable, target, "unreachable", err)
}

// handshakeError classifies a failure after the connection was made: in
// TLS, or while exchanging CONNECT or the SOCKS handshake.
func (u *Upstream) handshakeError(ctx context.Context, target, step string, err error) *Error {
	switch {
	case ctx.Err() == context.Canceled:
		return u.newError(context.Canceled, target, step+": canceled", err)
	case ctx.Err() == context.DeadlineExceeded, isTimeout(err):
		return u.newError(ErrTimeout, target, step+": timed out", err)
	case isTLSVerify(err):
		return u.newError(ErrProtocol, target, step+": certificate not trusted", err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return u.newError(ErrUnreachable, target, step+": connection reset", err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return u.newError(ErrProtocol, target, step+": connection closed before an answer", err)
	}
	return u.newError(ErrProtocol, target, step+": failed", err)
}

// isTimeout reports whether err is a deadline: the context's, a
// connection's or one of net's.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isTLSVerify(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &invalid)
}

// statusError classifies a non-2xx answer to CONNECT.
func (u *Upstream) statusError(target string, code int, status string) *Error {
	return u.statusErrorFor("CONNECT "+target, target, code, status)
}

func (u *Upstream) statusErrorFor(what, target string, code int, status string) *Error {
	if status == "" {
		status = strconv.Itoa(code)
	}
	var e *Error
	if code == 407 || code == 401 {
		e = u.newError(ErrAuth, target, "rejected our credentials for "+what+": "+status, nil)
		if !u.hasAuth {
			e.detail = "wants credentials for " + what + ", and none are configured: " + status
		}
	} else {
		e = u.newError(ErrRefused, target, "refused "+what+": "+status, nil)
	}
	e.Status = code
	return e
}

// StatusError returns the error of u answering a request for target
// (what says which: "GET http://host/path", say) with code (407 or 401:
// ErrAuth; any other: ErrRefused), as DialTunnel reports a CONNECT it
// refused; status is the status line's text, if known. The proxy uses it
// for a 407 to a request sent in absolute-form, which Observe then counts
// as a refusal.
func (u *Upstream) StatusError(what, target string, code int, status string) *Error {
	return u.statusErrorFor(what, target, code, status)
}

// TransportError classifies an error that an http.Transport set up by
// ConfigureTransport returned for a request through u, when the failure
// is u's own and not yet an *Error: a failed SOCKS5 handshake, which
// net/http speaks itself (its messages are x/net's, as DialTunnel's). It
// returns nil for any other error.
func (u *Upstream) TransportError(target string, err error) *Error {
	if u.kind != SOCKS5 {
		return nil
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if oe, ok := e.(*net.OpError); ok && oe.Op == "socks connect" && oe.Err != nil {
			return u.socksError(context.Background(), target, oe.Err)
		}
	}
	return nil
}

// socksReplies are the texts x/net's SOCKS client gives reply codes
// ("unknown error " + text); it exposes no code, so DialTunnel maps its
// error text back to one. TestSOCKSReplies pins them.
var socksReplies = map[string]int{
	"general SOCKS server failure":      1,
	"connection not allowed by ruleset": 2,
	"network unreachable":               3,
	"host unreachable":                  4,
	"connection refused":                5,
	"TTL expired":                       6,
	"command not supported":             7,
	"address type not supported":        8,
}

// socksError classifies a failed SOCKS5 handshake, from x/net's errors.
func (u *Upstream) socksError(ctx context.Context, target string, err error) *Error {
	msg := err.Error()
	if i := strings.LastIndex(msg, "unknown error "); i >= 0 {
		text := msg[i+len("unknown error "):]
		code, known := socksReplies[text]
		if !known {
			if n, ok := strings.CutPrefix(text, "unknown code: "); ok {
				code, _ = strconv.Atoi(n)
			}
		}
		kind := ErrRefused
		if code == 7 || code == 8 || code == 0 || code > 8 {
			kind = ErrProtocol
		}
		e := u.newError(kind, target, "SOCKS5 connect to "+target+" failed: "+text+" (reply "+strconv.Itoa(code)+")", nil)
		e.Reply = code
		return e
	}
	switch {
	case strings.Contains(msg, "username/password authentication failed"):
		return u.newError(ErrAuth, target, "SOCKS5 authentication failed", nil)
	case strings.Contains(msg, "no acceptable authentication methods"):
		if u.hasAuth {
			return u.newError(ErrAuth, target, "SOCKS5 server accepts none of our authentication methods", nil)
		}
		return u.newError(ErrAuth, target, "SOCKS5 server wants credentials, and none are configured", nil)
	}
	return u.handshakeError(ctx, target, "SOCKS5 handshake", err)
}
