package fwdproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/proxyproto"
)

// The front ends and how each reaches the one pipeline (ServeHTTP):
//
//	Serve       plain TCP: internal/h1's loop, or net/http (bodies, HTTP/2
//	            with prior knowledge) for what it hands off; SOCKS5 by the
//	            first byte with WithSOCKSOnHTTPListener (socks.go)
//	ServeTLS    TLS (WithTLS): net/http, HTTP/1.1 or HTTP/2 by ALPN, with
//	            the client certificate as the user (clientCertUser)
//	ServeSOCKS  SOCKS5 (socks.go): each CONNECT a CONNECT request
//	any         the PROXY protocol under it (WithProxyProtocol)
//
// HTTP/2's CONNECT, extended CONNECT and absolute-form requests are
// dispatched in h2.go. Every one of them is a request to ServeHTTP: the same
// rules, authentication, limits, hooks, telemetry and access log.

// ServeTLS is Serve for an HTTPS proxy: it accepts connections on l,
// completes a TLS handshake on each with the certificate and settings of
// WithTLS, and serves HTTP/1.1 or HTTP/2, as the client chose by ALPN,
// until Shutdown, when it returns http.ErrServerClosed. l is a plain TCP
// listener (ServeTLS adds the TLS). Each handshake reads the configuration
// in force, so that Reload can change the certificate and the client CAs.
// Over HTTP/2 a client may open many CONNECT tunnels on one connection
// (WithHTTP2MaxStreams). It fails at once without WithTLS.
func (p *Proxy) ServeTLS(l net.Listener) error {
	if p.cfg.Load().front.tls == nil {
		l.Close()
		return errors.New("fwdproxy: ServeTLS needs WithTLS (the proxy's certificate)")
	}
	l, done, err := p.openListener(l, true)
	if err != nil {
		return err
	}
	defer done()
	// Handed to net/http as they are accepted (internal/h1), which runs the
	// handshake on the connection's goroutine.
	return p.serveLoop(tls.NewListener(l, &tls.Config{GetConfigForClient: p.tlsConfigForClient}))
}

// errTLSOff fails the handshakes of ServeTLS's listener when the
// configuration in force has no WithTLS (Reload refuses to remove it while
// ServeTLS runs, but a ServeTLS may start during a Reload that does).
var errTLSOff = errors.New("fwdproxy: TLS is not configured (WithTLS)")

// tlsConfigForClient is the GetConfigForClient of ServeTLS's listeners:
// WithTLS's configuration in force.
func (p *Proxy) tlsConfigForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	if conf := p.cfg.Load().front.tls; conf != nil {
		return conf, nil
	}
	return nil, errTLSOff
}

// listeners counts what Serve, ServeTLS and ServeSOCKS run, for what
// Reload must refuse (frontChangeAllowed). Guarded by Proxy.mu.
type listeners struct {
	unwrapped int // listeners without the PROXY protocol
	tls       int // ServeTLS listeners
}

// openListener prepares l for a front end: under the PROXY protocol when
// the configuration in force has WithProxyProtocol, whose trusted ranges
// each connection then reads from the configuration in force. It counts
// the listener (isTLS for ServeTLS) until done is called. After Shutdown
// it closes l and fails with http.ErrServerClosed.
func (p *Proxy) openListener(l net.Listener, isTLS bool) (net.Listener, func(), error) {
	wrap := p.cfg.Load().front.proxyTrust != nil
	if wrap {
		pl, err := proxyproto.NewListener(l, proxyproto.Config{Trust: p.trustsProxyHeader, Logger: p.log,
			Refused: func() { p.stats.refusedProxyHeader.Add(1) }})
		if err != nil {
			l.Close()
			return nil, nil, err
		}
		l = pl
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		l.Close()
		return nil, nil, http.ErrServerClosed
	}
	count := func(d int) {
		if !wrap {
			p.listening.unwrapped += d
		}
		if isTLS {
			p.listening.tls += d
		}
	}
	count(1)
	return l, func() {
		p.mu.Lock()
		count(-1)
		p.mu.Unlock()
	}, nil
}

// trustsProxyHeader reports whether the peer at ip must open with a PROXY
// protocol header, by the configuration in force.
func (p *Proxy) trustsProxyHeader(ip netip.Addr) bool {
	ps := p.cfg.Load().front.proxyTrust
	if ps == nil {
		return false
	}
	_, ok := ps.Lookup(ip)
	return ok
}

// frontChangeAllowed refuses a configuration c that the running listeners
// cannot follow: one without WithTLS while ServeTLS runs, one with
// WithProxyProtocol while a listener runs that was started without it (and
// so reads no header).
func (p *Proxy) frontChangeAllowed(old, c *config) error {
	p.mu.Lock()
	l := p.listening
	p.mu.Unlock()
	switch {
	case c.front.tls == nil && l.tls > 0:
		return errors.New("WithTLS: cannot be removed while ServeTLS runs (change the certificate instead, or stop the TLS listener first)")
	case c.front.proxyTrust != nil && old.front.proxyTrust == nil && l.unwrapped > 0:
		return errors.New("WithProxyProtocol: cannot be turned on while a listener started without it runs (it reads no header): restart the listener; its trusted ranges can change live once it has them")
	}
	return nil
}

// ctxKeyTLSConn is the context key of the client's TLS connection, which
// the hand-off server's ConnContext (countConn) puts in the context of the
// requests on it: the client certificate is read from it, since
// Request.TLS is nil on an HTTP/2 request whose :scheme is http.
type ctxKeyTLSConn struct{}

// withTLSConn returns ctx with c, when c is a TLS connection.
func withTLSConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		return context.WithValue(ctx, ctxKeyTLSConn{}, tc)
	}
	return ctx
}

// tlsConnFrom returns the client's TLS connection, or nil.
func tlsConnFrom(ctx context.Context) *tls.Conn {
	tc, _ := ctx.Value(ctxKeyTLSConn{}).(*tls.Conn)
	return tc
}

// clientCertUser returns the user the client's verified certificate names
// (certIdentity), or "" when the client has no verified certificate.
func clientCertUser(ctx context.Context) string {
	tc := tlsConnFrom(ctx)
	if tc == nil {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return ""
	}
	return certIdentity(st.VerifiedChains[0][0])
}

// certIdentity is the name a client certificate gives its holder: the
// subject's common name, else the first URI SAN (a SPIFFE ID), DNS SAN or
// e-mail address, in that order (WithTLS documents it).
func certIdentity(cert *x509.Certificate) string {
	switch {
	case cert.Subject.CommonName != "":
		return cert.Subject.CommonName
	case len(cert.URIs) > 0:
		return cert.URIs[0].String()
	case len(cert.DNSNames) > 0:
		return cert.DNSNames[0]
	case len(cert.EmailAddresses) > 0:
		return cert.EmailAddresses[0]
	}
	return ""
}

// serveAccepted runs accept's connections through serve, each on its own
// goroutine, until l fails; a failure that passes (out of descriptors) is
// retried after a pause, as net/http does. closing reports whether l was
// closed on purpose, when it returns http.ErrServerClosed.
func (p *Proxy) serveAccepted(l net.Listener, closing func() bool, serve func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if closing() {
				return http.ErrServerClosed
			}
			if !h1.RetryableAccept(err) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed; retrying", "error", err.Error(), "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		serve(c)
	}
}

// handshakeLog is the log handler of the hand-off server's errors, which
// takes the line net/http writes for each TLS handshake of ServeTLS that
// fails ("http: TLS handshake error from ADDR: REASON") and writes it as
// the other front ends' refusals are written: a client that closed before
// finishing (a TCP health check, a port probe) at Debug, anything else as
// a Warn line with the client, the error and a hint, at most one a second
// with the count of those held back, and counted in Stats.RefusedHandshakes.
// Other lines pass unchanged.
type handshakeLog struct {
	slog.Handler
	p *Proxy
}

const tlsHandshakeError = "http: TLS handshake error from "

// Enabled is true at every level, so that a failed handshake is counted
// (Stats.RefusedHandshakes) whatever the log's level; Handle asks the
// handler beneath before it writes.
func (h handshakeLog) Enabled(context.Context, slog.Level) bool { return true }

func (h handshakeLog) Handle(ctx context.Context, r slog.Record) error {
	rest, ok := strings.CutPrefix(r.Message, tlsHandshakeError)
	if !ok {
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
		return h.Handler.Handle(ctx, r)
	}
	client, reason, _ := strings.Cut(rest, ": ")
	if reason == "EOF" || strings.HasSuffix(reason, "connection reset by peer") {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		out := slog.NewRecord(r.Time, slog.LevelDebug, "TLS client closed before its handshake ended", r.PC)
		out.AddAttrs(slog.String("client", client))
		return h.Handler.Handle(ctx, out)
	}
	h.p.stats.refusedTLS.Add(1)
	if !h.Handler.Enabled(ctx, slog.LevelWarn) {
		return nil
	}
	n, ok := h.p.tlsLog.Allow(r.Time)
	if !ok {
		return nil
	}
	out := slog.NewRecord(r.Time, slog.LevelWarn, "TLS handshake failed; closed", r.PC)
	out.AddAttrs(slog.String("client", client), slog.String("error", reason))
	switch {
	case strings.Contains(reason, "HTTP request to an HTTPS server") || strings.Contains(reason, "does not look like a TLS handshake"):
		out.AddAttrs(slog.String("hint", "this listener is an HTTPS proxy: give the client an https:// proxy URL (curl -x https://…), or use the plain HTTP listener"))
	case strings.Contains(reason, "certificate"):
		out.AddAttrs(slog.String("hint", "the client and the proxy must trust each other's certificates: the client the proxy's CA (curl --proxy-cacert), the proxy the client's (WithTLS's ClientCAs, -tls-client-ca)"))
	case strings.Contains(reason, "version") || strings.Contains(reason, "cipher"):
		out.AddAttrs(slog.String("hint", "the HTTPS listener speaks TLS 1.2 and 1.3 with AEAD suites only"))
	}
	out.AddAttrs(slog.Int64("refused_since_last_line", n))
	return h.Handler.Handle(ctx, out)
}

func (h handshakeLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handshakeLog{h.Handler.WithAttrs(attrs), h.p}
}

func (h handshakeLog) WithGroup(name string) slog.Handler {
	return handshakeLog{h.Handler.WithGroup(name), h.p}
}
