package fwdproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/acl"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/mitm"
	"github.com/fwdproxy/fwdproxy/internal/netguard"
)

// CertStore caches the leaf certificates minted for intercepted hosts, so
// that several proxies can share them. Hosts are normalised: lower case, no
// trailing dot, IP addresses in canonical form. Proxies sharing a CertStore
// must share the CA. A CertStore must be safe for concurrent use; Get must
// return certificates with Leaf set (others count as misses) and report
// failures as misses; certificates are shared and must not be modified.
type CertStore interface {
	Get(ctx context.Context, host string) (*tls.Certificate, bool)
	Put(ctx context.Context, host string, cert *tls.Certificate)
}

// NewMemoryCertStore returns an in-memory CertStore that keeps the size most
// recently used certificates (size at least 1). It is the default store,
// with 1024 entries; create one to share it between proxies.
func NewMemoryCertStore(size int) (CertStore, error) {
	return mitm.NewMemoryStore(size)
}

// InterceptFunc decides whether a CONNECT to target ("host:port") that is
// not bypassed is intercepted (true) or tunnelled (false).
type InterceptFunc func(ctx context.Context, target string, r *http.Request) bool

// An InterceptOption configures TLS interception (see WithInterception).
type InterceptOption func(*interceptSettings) error

type interceptSettings struct {
	bypassHosts []string       // host patterns, from BypassHosts
	bypassCIDRs []netip.Prefix // ranges and addresses, from BypassHosts
	bypass      *acl.Matcher   // both, compiled by WithInterception
	decide      InterceptFunc
	cacheSize   int
	store       CertStore
}

// BypassHosts tunnels CONNECTs to destinations matching any of patterns
// instead of intercepting them. Patterns are written as for WithDenyHosts and
// parsed by the same code: "example.com" matches that host, "*.example.com"
// any host below it, "10.0.0.0/8" and "127.0.0.1" CONNECT targets that are IP
// addresses in that range or equal to that address (names are not resolved
// for this decision; use an InterceptFunc for that).
func BypassHosts(patterns ...string) InterceptOption {
	return func(s *interceptSettings) error {
		hosts, cidrs, err := parseHostRules("BypassHosts", patterns) // options.go: the access rules' grammar
		if err != nil {
			return err
		}
		s.bypassHosts = append(s.bypassHosts, hosts...)
		s.bypassCIDRs = append(s.bypassCIDRs, cidrs...)
		return nil
	}
}

// InterceptIf sets a hook that decides, for CONNECTs not bypassed, which are
// intercepted. Without it every such CONNECT is intercepted.
func InterceptIf(f InterceptFunc) InterceptOption {
	return func(s *interceptSettings) error {
		if f == nil {
			return errors.New("InterceptIf: nil func")
		}
		s.decide = f
		return nil
	}
}

// CertCacheSize sets how many leaf certificates the default in-memory store
// keeps (default 1024). It has no effect with ShareCertStore.
func CertCacheSize(n int) InterceptOption {
	return func(s *interceptSettings) error {
		if n < 1 {
			return fmt.Errorf("CertCacheSize: need at least 1, got %d", n)
		}
		s.cacheSize = n
		return nil
	}
}

// ShareCertStore makes the proxy keep its leaf certificates in cs, which
// may be shared with other proxies using the same CA.
func ShareCertStore(cs CertStore) InterceptOption {
	return func(s *interceptSettings) error {
		if cs == nil {
			return errors.New("ShareCertStore: nil store")
		}
		s.store = cs
		return nil
	}
}

// WithInterception turns on TLS interception, off by default. A CONNECT
// that passes the connect hooks and is not bypassed (see BypassHosts,
// InterceptIf) is not tunnelled: the proxy answers 200, completes the
// client's TLS handshake with a certificate it mints for the SNI (or the
// CONNECT host when there is none) signed by ca, and serves the decrypted
// HTTP/1.1 or HTTP/2 requests like plain proxy requests, hooks included,
// sending them over verified TLS to the CONNECT target. ca must be a CA
// certificate with its private key, e.g. from LoadCA or LoadOrCreateCA;
// clients must trust it.
func WithInterception(ca tls.Certificate, opts ...InterceptOption) Option {
	return func(c *config) error {
		s := &interceptSettings{cacheSize: mitm.DefaultCacheSize}
		for _, o := range opts {
			if o == nil {
				return errors.New("WithInterception: nil InterceptOption")
			}
			if err := o(s); err != nil {
				return fmt.Errorf("WithInterception: %w", err)
			}
		}
		bypass, err := acl.NewMatcher(s.bypassHosts, s.bypassCIDRs)
		if err != nil {
			return fmt.Errorf("WithInterception: BypassHosts: %w", err)
		}
		s.bypass = bypass
		store := s.store
		if store == nil {
			ms, err := mitm.NewMemoryStore(s.cacheSize)
			if err != nil {
				return fmt.Errorf("WithInterception: %w", err)
			}
			store = ms
		}
		iss, err := mitm.NewIssuer(ca, mitm.WithStore(store))
		if err != nil {
			return fmt.Errorf("WithInterception: %w", err)
		}
		c.intercept = &interceptor{settings: s, issuer: iss, tlsConf: iss.TLSConfig("h2", "http/1.1")}
		return nil
	}
}

// NewCA creates an interception CA: an ECDSA P-256 key and a self-signed
// certificate valid for ten years. It returns the CA and both as PEM (the
// key as PKCS#8), for saving; keep the key private.
func NewCA() (ca tls.Certificate, certPEM, keyPEM []byte, err error) {
	return mitm.NewCA()
}

// LoadCA reads an interception CA from PEM files: the CA certificate
// (optionally followed by intermediates) and its private key, which group
// and others must not be able to read.
func LoadCA(certFile, keyFile string) (tls.Certificate, error) {
	return mitm.LoadCA(certFile, keyFile)
}

// LoadOrCreateCA loads the CA from dir/ca.pem and dir/ca-key.pem or, when
// neither exists, creates one with NewCA and writes it there (the key with
// mode 0600). created reports a new CA, whose ca.pem clients must trust.
func LoadOrCreateCA(dir string) (ca tls.Certificate, created bool, err error) {
	return mitm.LoadOrCreateCA(dir)
}

// interceptor is a Proxy's interception state: the certificate issuer and
// the one internal server that serves decrypted connections.
type interceptor struct {
	settings *interceptSettings
	issuer   *mitm.Issuer
	tlsConf  *tls.Config
	srv      *http.Server
}

// initInterception creates the internal server for decrypted connections
// and registers it so that Shutdown shuts it down. It runs at the end of New.
func (p *Proxy) initInterception() {
	ic := p.cfg.intercept
	if ic == nil {
		return
	}
	ic.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: p.cfg.readHeaderTimeout,
		IdleTimeout:       p.cfg.clientIdleTimeout,
		MaxHeaderBytes:    p.cfg.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				if conn, ok := tc.NetConn().(*interceptedConn); ok {
					return &mergedContext{Context: context.WithValue(ctx, interceptedKey{}, conn), outer: conn.outer}
				}
			}
			return ctx
		},
	}
	p.mu.Lock()
	p.servers[ic.srv] = struct{}{}
	p.mu.Unlock()
}

// intercepting reports whether the CONNECT r to target is to be intercepted.
func (p *Proxy) intercepting(ctx context.Context, target string, r *http.Request) bool {
	ic := p.cfg.intercept
	if ic == nil {
		return false
	}
	host, _, err := httpx.ParseTarget(target)
	if err != nil || ic.settings.bypassed(host) {
		return false
	}
	return ic.settings.decide == nil || ic.settings.decide(ctx, target, r)
}

// bypassed reports whether the CONNECT host matches a BypassHosts pattern.
func (s *interceptSettings) bypassed(host string) bool {
	if s.bypass.Empty() {
		return false
	}
	ip, _ := netguard.ParseHost(host) // the zero Addr for a name
	return s.bypass.Match(host, ip)
}

// serveIntercept takes over the client side of an authorised CONNECT to
// target without dialing: it answers 200, terminates TLS with a minted
// certificate and serves the decrypted connection with the internal server,
// whose handler sends each request through forward. It returns when the
// connection has ended; Shutdown counts it as a tunnel.
func (p *Proxy) serveIntercept(w http.ResponseWriter, r *http.Request, target string) {
	var raw net.Conn
	var early []byte
	if r.ProtoMajor >= 2 {
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		raw = &streamNetConn{streamConn: streamConn{body: r.Body, w: w}, rc: rc, local: local, remote: stringAddr(r.RemoteAddr)}
	} else {
		client, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			p.fail(w, r, newError(ErrMalformed, target, "CONNECT is not supported on this connection", err))
			return
		}
		_ = client.SetDeadline(time.Time{})
		if _, err := client.Write(connectEstablished); err != nil {
			client.Close()
			return
		}
		raw, early = client, readAhead(brw)
	}
	conn := &interceptedConn{Conn: raw, early: early, target: target, outer: r.Context(), closed: make(chan struct{})}
	handle := newTunnel(conn, nil, nopConn{}, 0) // for Shutdown: never run, only closed
	if !p.track(handle) {
		conn.Close()
		return
	}
	defer p.untrack(handle)
	start := time.Now()
	host, _, _ := httpx.ParseTarget(target)
	ic := p.cfg.intercept
	tc := tls.Server(conn, ic.tlsConf)
	hctx, cancel := context.WithTimeout(mitm.WithConnectHost(r.Context(), host), p.cfg.readHeaderTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		tc.Close()
		p.log.LogAttrs(r.Context(), slog.LevelInfo, "intercepted TLS handshake failed",
			slog.String("target", target), slog.String("client", r.RemoteAddr), slog.String("error", err.Error()))
		return
	}
	l := &oneConnListener{conn: tc, done: conn.closed, closed: make(chan struct{}), addr: tc.LocalAddr()}
	_ = ic.srv.Serve(l)
	if l.conn != nil { // not accepted: the server was already shut down
		tc.Close()
	}
	<-conn.closed
	p.log.LogAttrs(r.Context(), slog.LevelDebug, "intercepted connection closed",
		slog.String("target", target), slog.String("client", r.RemoteAddr),
		slog.String("sni", tc.ConnectionState().ServerName),
		slog.String("alpn", tc.ConnectionState().NegotiatedProtocol),
		slog.Duration("duration", time.Since(start)))
}

// serveIntercepted is the internal server's handler: every decrypted
// request goes to the CONNECT target that was authorised, over https,
// through the one request path.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	conn, _ := r.Context().Value(interceptedKey{}).(*interceptedConn)
	if conn == nil {
		p.fail(w, r, newError(ErrMalformed, "", "not an intercepted connection", nil))
		return
	}
	if r.Method == http.MethodConnect {
		p.fail(w, r, newError(ErrMalformed, conn.target, "CONNECT inside an intercepted connection is not supported", nil))
		return
	}
	r.URL.Scheme = "https"
	r.URL.Host = conn.target
	defer p.endRequest(p.beginRequest(&w, &r)) // telemetry.go: its own span, access-log record, Stats
	p.forward(w, r)
}

type interceptedKey struct{}

// mergedContext is the context of an intercepted connection: the internal
// server's (cancellation, server values) with the CONNECT request's
// authenticated user behind it.
type mergedContext struct {
	context.Context
	outer context.Context
}

func (m *mergedContext) Value(key any) any {
	if v := m.Context.Value(key); v != nil {
		return v
	}
	// Only what describes the client crosses over: the CONNECT's own
	// request state (telemetry, dial policy) must not be shared by the
	// requests inside, which run concurrently over HTTP/2.
	if _, ok := key.(ctxKeyUser); ok {
		return m.outer.Value(key)
	}
	return nil
}

// interceptedConn is the client's connection after the 200: bytes already
// read by the proxy's server come first, and closing it signals closed.
type interceptedConn struct {
	net.Conn
	early     []byte
	target    string
	outer     context.Context
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *interceptedConn) Read(b []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(b, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *interceptedConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		close(c.closed)
	})
	return err
}

// oneConnListener hands one connection to http.Server.Serve, then blocks
// until that connection is closed or the listener is, so that Serve
// returns once the connection is over.
type oneConnListener struct {
	conn      net.Conn // nil once accepted
	done      <-chan struct{}
	closeOnce sync.Once
	closed    chan struct{}
	addr      net.Addr
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	select {
	case <-l.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// streamNetConn is an HTTP/2 CONNECT stream as a net.Conn for crypto/tls.
type streamNetConn struct {
	streamConn
	rc            *http.ResponseController
	local, remote net.Addr
}

func (s *streamNetConn) LocalAddr() net.Addr {
	if s.local == nil {
		return stringAddr("")
	}
	return s.local
}

func (s *streamNetConn) RemoteAddr() net.Addr { return s.remote }

func (s *streamNetConn) SetDeadline(t time.Time) error {
	return errors.Join(s.rc.SetReadDeadline(t), s.rc.SetWriteDeadline(t))
}

func (s *streamNetConn) SetReadDeadline(t time.Time) error  { return s.rc.SetReadDeadline(t) }
func (s *streamNetConn) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// nopConn stands in for the upstream of an intercepted connection's
// tunnel handle, which has none.
type nopConn struct{}

func (nopConn) Read([]byte) (int, error)  { return 0, net.ErrClosed }
func (nopConn) Write([]byte) (int, error) { return 0, net.ErrClosed }
func (nopConn) Close() error              { return nil }
