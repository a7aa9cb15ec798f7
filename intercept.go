package fwdproxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/mitm"
	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
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

// newInterceptServer makes the internal server that serves decrypted
// connections (server.go's newHTTPServer), with the timeouts and limits of
// configuration c. New and Reload make it with the hand-off server
// (netServers, reload.go), whether or not interception is on, so that a
// configuration that turns it on needs nothing more; it costs nothing until
// a connection is intercepted.
func (p *Proxy) newInterceptServer(c *config) *http.Server {
	return p.newHTTPServer(c, http.HandlerFunc(p.serveIntercepted), interceptedConnContext)
}

// interceptedConnContext is the context of an intercepted connection
// (interceptedConn, or TLS over one) in the internal server: the
// connection itself, and the CONNECT request's context behind it.
func interceptedConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if conn, ok := c.(*interceptedConn); ok {
		return &mergedContext{Context: context.WithValue(ctx, interceptedKey{}, conn), outer: conn.outer}
	}
	return ctx
}

// intercepts reports whether the CONNECT r to target is to be intercepted
// under c, as the request's policy m (nil: none) or else c says.
func (p *Proxy) intercepts(ctx context.Context, c *config, target string, r *http.Request, m *policyMatch) bool {
	if decided, on := m.interceptOverride(); decided {
		if !on || c.intercept == nil {
			return false
		}
		host, _, err := httpx.ParseTarget(target)
		return err == nil && !c.intercept.bypassed(host)
	}
	return c.intercept.intercepts(ctx, target, r)
}

// intercepts reports whether the CONNECT r to target is to be
// intercepted; a nil interceptor (interception off) intercepts nothing.
func (ic *interceptor) intercepts(ctx context.Context, target string, r *http.Request) bool {
	if ic == nil {
		return false
	}
	host, _, err := httpx.ParseTarget(target)
	if err != nil || ic.bypassed(host) {
		return false
	}
	return ic.decide == nil || ic.decide(ctx, target, r)
}

// bypassed reports whether the CONNECT host matches a WithInterceptBypass
// pattern.
func (ic *interceptor) bypassed(host string) bool {
	if ic.bypass.Empty() {
		return false
	}
	ip, _ := policy.ParseHost(host) // the zero Addr for a name
	return ic.bypass.Match(host, ip)
}

// clientFirstWait bounds how long an intercepted CONNECT waits for the
// client's first bytes before tunnelling it untouched. Clients of TLS and
// HTTP speak first, and at once: they sent the CONNECT to send those bytes
// and write them as soon as the 200 arrives, so their first bytes follow
// within a scheduling delay (well under 100 ms on a loaded host; a late
// ClientHello is not lost, only tunnelled to the origin instead of
// intercepted). Clients of server-speaks-first protocols (SMTP, MySQL, FTP,
// POP3, IMAP) send nothing until the server's greeting, and each waits one
// clientFirstWait longer for it, once per connection; their greeting
// timeouts are 10 s (MySQL's connect_timeout) to 5 minutes (SMTP, RFC 5321
// §4.5.3.2), far above one second.
const clientFirstWait = time.Second

// serveIntercept takes over the client side of an authorised CONNECT to
// target without dialing: it answers 200 (acceptConnect) and peeks at the
// client's first bytes (peekClient). A TLS ClientHello is terminated with a
// minted certificate and an HTTP/1.x request line served as plain HTTP, both
// by the internal server, whose handler sends each request through forward.
// Any other protocol, or a client silent for clientFirstWait, is tunnelled
// to target untouched. It returns when the connection has ended; Shutdown
// counts it as a tunnel, and so do Stats and the access log, with the
// bytes of the whole connection and the requests served inside. The
// interception itself (certificate issuer, first-bytes limit) is c's, the
// CONNECT's configuration; each request inside is served under the
// configuration in force when it starts (serveIntercepted).
func (p *Proxy) serveIntercept(c *config, w http.ResponseWriter, r *http.Request, target string) {
	raw, ok := p.acceptConnect(c, w, r, target, nil) // connect.go
	if !ok {
		return
	}
	handle := newTunnel(raw, nopConn{}, 0) // for Shutdown: never run, only closed
	handle.info = newTunnelInfo(c, r, nil) // and for Reload (reload.go)
	if !p.track(handle) {
		raw.Close()
		return
	}
	first, proto := peekClient(raw, clientFirstWait, c.maxHeaderBytes)
	client := netx.NewConn(raw, first) // the bytes peeked at are read again first
	switch proto {
	case httpx.SniffOther:
		p.untrack(handle)
		p.tunnelUntouched(c, r, target, client)
		return
	case httpx.SniffMore: // the client left before saying anything decisive
		raw.Close()
		p.untrack(handle)
		return
	}
	defer p.untrack(handle)
	conn := &interceptedConn{Conn: client, target: target, plain: proto == httpx.SniffHTTP1, outer: r.Context(), closed: make(chan struct{}), srv: c.isrv}
	start := time.Now()
	p.tunnelStarted(r) // telemetry.go
	var state tls.ConnectionState
	var err error
	if conn.plain {
		p.serveInner(conn, conn)
	} else {
		state, err = p.serveInterceptTLS(c, r, conn)
	}
	in, out, requests := conn.in.Load(), conn.out.Load(), conn.requests.Load()
	p.tunnelEnded(r, nil, in, out, time.Since(start)) // telemetry.go
	if rs := reqStateFrom(r.Context()); rs != nil {
		rs.intercepted, rs.requests = true, requests
		if err != nil {
			rs.errKind = "tls_handshake"
		}
	}
	if err != nil {
		// One record for the failure: the CONNECT's access record when the
		// access log is on, else a Warn line (logFailure).
		p.logFailure(r, newError(ErrMalformed, target, "the client's TLS handshake with the minted certificate failed: "+
			"clients must trust the interception CA (or bypass this host with WithInterceptBypass, -mitm-bypass on the example server)", err),
			"intercepted TLS handshake failed")
	}
	mode := "tls"
	if conn.plain {
		mode = "http"
	}
	p.log.LogAttrs(r.Context(), slog.LevelDebug, "intercepted connection closed",
		slog.String("target", target), slog.String("client", r.RemoteAddr), slog.String("mode", mode),
		slog.String("sni", state.ServerName), slog.String("alpn", state.NegotiatedProtocol),
		slog.Int64("requests", requests), slog.Int64("bytes_in", in), slog.Int64("bytes_out", out),
		slog.Duration("duration", time.Since(start)))
}

// serveInterceptTLS completes the client's TLS handshake on conn with a
// certificate minted by c's issuer and serves the decrypted connection until
// it ends.
func (p *Proxy) serveInterceptTLS(c *config, r *http.Request, conn *interceptedConn) (tls.ConnectionState, error) {
	host, _, _ := httpx.ParseTarget(conn.target)
	tc := tls.Server(conn, c.intercept.tlsConf)
	hctx, cancel := context.WithTimeout(mitm.WithConnectHost(r.Context(), host), c.readHeaderTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		tc.Close()
		return tls.ConnectionState{}, err // logged by serveIntercept
	}
	p.serveInner(tc, conn)
	return tc.ConnectionState(), nil
}

// serveInner serves c, the client's connection as HTTP (conn itself, or TLS
// over it), with the internal server until conn is closed.
func (p *Proxy) serveInner(c net.Conn, conn *interceptedConn) {
	l := &oneConnListener{conn: c, done: conn.closed, closed: make(chan struct{}), addr: c.LocalAddr()}
	_ = conn.srv.Serve(l)
	if l.conn != nil { // not accepted: the server was already shut down
		c.Close()
	}
	<-conn.closed
	// A handler may still be relaying on the connection it hijacked (an
	// upgrade); over an HTTP/2 CONNECT stream nothing may write once the
	// CONNECT's handler has returned.
	conn.drain()
}

// tunnelUntouched dials target and relays between it and client, whose
// bytes peeked at are read first.
func (p *Proxy) tunnelUntouched(c *config, r *http.Request, target string, client net.Conn) {
	upstream, err := p.dial(r.Context(), "tcp", target)
	if err != nil {
		client.Close()
		if r.Context().Err() != nil {
			p.logClientGone(r, err)
			return
		}
		e := asError(target, err)
		p.noteFailure(r, e)                 // telemetry.go: the 200 is gone, only the log can tell
		p.logFailure(r, e, "tunnel failed") // the access record, when it is on
		return
	}
	p.runTunnel(c, r, client, upstream, false)
}

// peekClient reads the client's first bytes from c until httpx.Sniff can
// tell what they are, for at most wait. A client still undecided then is
// SniffOther. A client that closes or fails first is SniffMore, unless it
// sent bytes before an EOF (those are tunnelled). It returns the bytes
// read, which must be read again first. Reads time out through c's read
// deadline, which c must let it read on after (net.Conn, tls.Conn and
// netx.StreamConn do); bytes the server had read ahead of c (netx.Conn)
// come at once.
func peekClient(c net.Conn, wait time.Duration, limit int) ([]byte, httpx.Protocol) {
	buf := make([]byte, 0, 4096)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if proto := httpx.Sniff(buf, limit); proto != httpx.SniffMore {
			return buf, proto
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() || err == io.EOF && len(buf) > 0 {
				return buf, httpx.SniffOther
			}
			return buf, httpx.SniffMore
		}
	}
}

// serveIntercepted is the internal server's handler: every request on an
// intercepted connection goes to the CONNECT target that was authorised
// (over https when the client spoke TLS, plain http when it spoke HTTP)
// through the one request path, under the configuration in force when it
// starts, like a request that ServeHTTP takes.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	c := p.cfg.Load() // the request's one snapshot
	conn, _ := r.Context().Value(interceptedKey{}).(*interceptedConn)
	if conn == nil {
		p.fail(c, w, r, newError(ErrMalformed, "", "not an intercepted connection", nil))
		return
	}
	if !conn.enter() {
		return // the connection is over
	}
	defer conn.leave()
	conn.requests.Add(1)
	scheme := "https"
	if conn.plain {
		scheme = "http"
	}
	if r.Method == http.MethodConnect {
		if !extendedConnect(r) {
			p.fail(c, w, r, newError(ErrMalformed, conn.target, "CONNECT inside an intercepted connection is not supported", nil))
			return
		}
		// A WebSocket over HTTP/2 (h2.go), which a browser opens when the
		// server offers extended CONNECT (GODEBUG=http2xconnect=1).
		up, e := webSocketUpgrade(r, scheme, conn.target)
		if e != nil {
			p.fail(c, w, r, e)
			return
		}
		p.observe(c, w, up, p.forwardOnly)
		return
	}
	r.URL.Scheme = scheme
	r.URL.Host = conn.target
	p.observe(c, w, r, p.forwardOnly) // telemetry.go: its own span, access-log record, Stats
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

// interceptedConn is the client's connection after the 200 (with the
// bytes already read by the proxy first: a netx.Conn), and closing it
// signals closed. It counts the bytes of the whole connection and the
// requests served on it.
type interceptedConn struct {
	net.Conn
	target    string
	plain     bool // HTTP without TLS
	outer     context.Context
	srv       *http.Server // the internal server of the CONNECT's configuration
	closeOnce sync.Once
	closed    chan struct{}

	in, out  atomic.Int64 // bytes from and to the client
	requests atomic.Int64

	mu       sync.Mutex // guards the handler count
	handlers int        // internal server handlers running for this connection
	drained  bool       // no handler may start
	idle     chan struct{}
}

// enter counts a handler in, unless the connection has been drained.
func (c *interceptedConn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained {
		return false
	}
	c.handlers++
	return true
}

func (c *interceptedConn) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handlers--; c.handlers == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// drain stops handlers from starting and waits for the running ones.
func (c *interceptedConn) drain() {
	c.mu.Lock()
	c.drained = true
	if c.handlers == 0 {
		c.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	c.idle = idle
	c.mu.Unlock()
	<-idle
}

func (c *interceptedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *interceptedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
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

// nopConn stands in for the upstream of an intercepted connection's
// tunnel handle, which has none.
type nopConn struct{}

func (nopConn) Read([]byte) (int, error)  { return 0, net.ErrClosed }
func (nopConn) Write([]byte) (int, error) { return 0, net.ErrClosed }
func (nopConn) Close() error              { return nil }
