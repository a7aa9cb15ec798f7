package fwdproxy

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/socks5"
	"github.com/fwdproxy/fwdproxy/internal/telemetry"
)

// The SOCKS5 front end (RFC 1928, with RFC 1929 username/password). It
// speaks the handshake (internal/socks5) and turns the client's CONNECT
// into a CONNECT request to ServeHTTP: the one pipeline decides it, as it
// decides an HTTP CONNECT, with the same record, counters, telemetry and
// Stats. The request's ResponseWriter (socksWriter) answers in SOCKS: a
// refusal or failure with the reply code of its status and cause
// (socks5.ReplyForStatus), the accepted tunnel with a success reply
// (acceptConnect). Only CONNECT is served: BIND and UDP ASSOCIATE are
// answered "command not supported".
//
// Credentials are the pipeline's to check: the handshake takes the
// username and password as given (the RFC 1929 status is success) and the
// request carries them as Basic credentials in Proxy-Authorization, for the
// Authenticator in force, after the rate limit, as for HTTP; one that
// refuses them is answered with reply 0x02 (not allowed), and logged and
// counted as a 407.

// ServeSOCKS accepts SOCKS5 clients on l and serves their CONNECT requests
// through the proxy, until Shutdown, when it returns http.ErrServerClosed.
// A target given as a name is resolved by the proxy's resolver and every
// address vetted like an HTTP CONNECT's; WithMaxConns counts the
// connections until they become tunnels, and WithMaxTunnels the tunnels.
// WithSOCKSOnHTTPListener serves SOCKS5 on Serve's listener as well.
func (p *Proxy) ServeSOCKS(l net.Listener) error {
	l, done, err := p.openListener(l, false)
	if err != nil {
		return err
	}
	defer done()
	sl := &socksListener{ln: l}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	p.socksLns[sl] = struct{}{}
	p.mu.Unlock()
	err = p.serveAccepted(l, sl.closing.Load, func(c net.Conn) {
		if p.conns.Add(1) > int64(p.cfg.Load().maxConns) {
			p.conns.Add(-1)
			p.refuseSOCKSOverLimit(c)
			return
		}
		sc := &socksConn{conn: c}
		if !p.socks.add(sc) {
			p.conns.Add(-1)
			c.Close()
			return
		}
		go p.serveSOCKS(sc)
	})
	if errors.Is(err, http.ErrServerClosed) {
		p.mu.Lock()
		delete(p.socksLns, sl)
		p.mu.Unlock()
	}
	return err
}

// socksListener is a ServeSOCKS listener, for Shutdown to close.
type socksListener struct {
	ln      net.Listener
	closing atomic.Bool
}

func (l *socksListener) close() {
	l.closing.Store(true)
	l.ln.Close()
}

// serveSOCKSFromLoop is ServerSettings.SOCKS (WithSOCKSOnHTTPListener): it
// serves a connection whose first byte Serve's loop read as SOCKS5, on
// the loop's goroutine. The loop counted it in p.conns.
func (p *Proxy) serveSOCKSFromLoop(c net.Conn) {
	sc := &socksConn{conn: c}
	if !p.socks.add(sc) {
		p.conns.Add(-1)
		c.Close()
		return
	}
	p.serveSOCKS(sc)
}

// socksConn is a SOCKS client connection being served.
type socksConn struct {
	conn      net.Conn
	shaking   atomic.Bool // in the handshake: Shutdown closes it at once
	uncounted atomic.Bool // taken out of p.conns
	cancel    context.CancelFunc
}

// socksConns are the SOCKS connections being served, for Shutdown.
type socksConns struct {
	mu      sync.Mutex
	closing bool
	conns   map[*socksConn]struct{}
	wg      sync.WaitGroup
}

// add registers sc, unless Shutdown has begun.
func (s *socksConns) add(sc *socksConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*socksConn]struct{})
	}
	sc.shaking.Store(true)
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *socksConns) remove(sc *socksConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
	s.wg.Done()
}

// shutdown closes the connections still in their handshake, then waits for
// the others to end; at ctx's end it closes them (cancelling their
// requests) and returns ctx's error once they have ended.
func (s *socksConns) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for sc := range s.conns {
		if sc.shaking.Load() {
			sc.conn.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sc := range s.conns {
		sc.conn.Close()
		if sc.cancel != nil {
			sc.cancel()
		}
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// uncount takes sc out of p.conns, once: when it becomes a tunnel, or ends.
func (p *Proxy) uncount(sc *socksConn) {
	if sc.uncounted.CompareAndSwap(false, true) {
		p.conns.Add(-1)
	}
}

// serveSOCKS serves the SOCKS client sc, registered and counted in
// p.conns, to its end: the handshake, then its CONNECT as a CONNECT request
// through ServeHTTP, answered in SOCKS by a socksWriter.
func (p *Proxy) serveSOCKS(sc *socksConn) {
	c := sc.conn
	kept := false // a parked tunnel has c
	defer func() {
		if !kept {
			c.Close()
		}
		p.uncount(sc)
		p.socks.remove(sc)
	}()
	cfg := p.cfg.Load()
	opts := socks5.Options{Deadline: time.Now().Add(cfg.readHeaderTimeout)}
	var pass string
	if cfg.auth != nil {
		// The pipeline checks the credentials (see above): the handshake
		// only collects them.
		opts.Auth = func(user, pw string) (string, bool) {
			pass = pw
			return user, true
		}
	}
	sr, err := socks5.Handshake(c, opts)
	if err != nil {
		p.socksRefused(c, cfg, err)
		return
	}
	sc.shaking.Store(false)
	r, cancel := socksRequest(sr, pass, c)
	defer cancel()
	p.socks.mu.Lock()
	sc.cancel = cancel // for shutdown, which reads it under the lock
	p.socks.mu.Unlock()
	w := &socksWriter{p: p, sc: sc, req: sr}
	p.ServeHTTP(w, r)
	kept = w.handedOver
	if !w.accepted {
		_ = sr.Reply(socks5.ReplyGeneralFailure, netip.AddrPort{}) // ErrReplied after a refusal
	}
}

// socksRequest is the CONNECT request of a SOCKS client's request sr on c:
// its target, the client's address (the PROXY protocol's, when c came with
// one), the credentials in Proxy-Authorization, and a context that cancel
// cancels. Its Proto says SOCKS5 (the access log shows it, and spans and
// metrics say network.protocol.name socks, version 5); its version is 1.1,
// as a CONNECT's, for the code that reads ProtoMajor.
func socksRequest(sr *socks5.Request, pass string, c net.Conn) (*http.Request, context.CancelFunc) {
	target := sr.Target()
	h := make(http.Header, 1)
	if sr.Method == socks5.MethodUserPass && sr.User != "" {
		h["Proxy-Authorization"] = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(sr.User+":"+pass))}
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, c.LocalAddr()))
	r := (&http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Host: target},
		Host:       target,
		RequestURI: target,
		Proto:      telemetry.SOCKS5Proto,
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		RemoteAddr: c.RemoteAddr().String(),
	}).WithContext(ctx)
	return r, cancel
}

// socksWriter is the ResponseWriter of a SOCKS client's CONNECT request:
// a refusal or failure (any status written) is answered with the reply
// code of its status and cause and ends the connection; the tunnel is
// accepted by acceptConnect (acceptSOCKS), with a success reply. The text
// of a refusal has no place in SOCKS: it goes to the log and the access
// record only.
type socksWriter struct {
	p        *Proxy
	sc       *socksConn
	req      *socks5.Request
	header   http.Header
	status   int
	failure  *Error // what fail answered, for the reply code
	accepted bool
	// handedOver: the connection is a parked tunnel's (tunnelpark_linux.go),
	// which closes it at its end; serveSOCKS leaves it open.
	handedOver bool
}

func (w *socksWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *socksWriter) WriteHeader(code int) {
	if w.status != 0 || w.accepted || code < 200 {
		return
	}
	w.status = code
	var cause error
	if w.failure != nil {
		cause = w.failure.Err
	}
	_ = w.req.Reply(socks5.ReplyForStatus(code, cause), netip.AddrPort{})
}

func (w *socksWriter) Write(b []byte) (int, error) {
	if w.status == 0 && !w.accepted {
		w.WriteHeader(http.StatusInternalServerError) // no status: nothing accepted it
	}
	return len(b), nil
}

// socksWriterOf returns the socksWriter under w (a reqState wraps it when
// telemetry is on), or nil for any other writer.
func socksWriterOf(w http.ResponseWriter) *socksWriter {
	switch v := w.(type) {
	case *socksWriter:
		return v
	case *reqState:
		sw, _ := v.rw.(*socksWriter)
		return sw
	}
	return nil
}

// acceptSOCKS is acceptConnect for a SOCKS client: the success reply, with
// the address the proxy's upstream connection is bound to (none for an
// intercepted CONNECT, which has no upstream yet), and the client's
// connection, with the bytes it sent ahead of the reply read first. The
// connection leaves WithMaxConns's count for WithMaxTunnels's.
func (p *Proxy) acceptSOCKS(w *socksWriter, r *http.Request, upstream net.Conn) (net.Conn, bool) {
	var bound netip.AddrPort
	if upstream != nil {
		if ta, ok := upstream.LocalAddr().(*net.TCPAddr); ok {
			bound = ta.AddrPort()
		}
	}
	w.accepted = true
	if err := w.req.Reply(socks5.ReplySucceeded, bound); err != nil {
		return nil, false
	}
	if rs := reqStateFrom(r.Context()); rs != nil {
		rs.status = http.StatusOK // the success reply
	}
	p.uncount(w.sc)
	client := w.req.Conn()
	if early := w.req.Early(); len(early) > 0 {
		client = netx.NewConn(client, early)
	}
	return client, true
}

// socksRefused logs a handshake that failed, and so reached no decision of
// the pipeline's: Debug for a client that closed or stalled before its
// greeting (a port probe), else a Warn line that says what was refused,
// at most one a second.
func (p *Proxy) socksRefused(c net.Conn, cfg *config, err error) {
	ctx := context.Background()
	if errors.Is(err, io.EOF) {
		p.log.LogAttrs(ctx, slog.LevelDebug, "SOCKS client closed before its greeting",
			slog.String("client", c.RemoteAddr().String()))
		return
	}
	p.stats.refusedSOCKS.Add(1)
	n, ok := p.socksLog.Allow(time.Now())
	if !ok {
		return
	}
	hint := ""
	switch {
	case errors.Is(err, socks5.ErrNoAcceptableMethod) && cfg.auth != nil:
		hint = "the proxy requires a username and password (RFC 1929), e.g. curl --proxy-user"
	case errors.Is(err, socks5.ErrSOCKS4):
		hint = "only SOCKS5 is served"
	case errors.Is(err, socks5.ErrCommandNotSupported):
		hint = "only CONNECT is served: BIND and UDP ASSOCIATE are not"
	}
	attrs := []slog.Attr{slog.String("client", c.RemoteAddr().String()), slog.String("error", err.Error())}
	if hint != "" {
		attrs = append(attrs, slog.String("hint", hint))
	}
	attrs = append(attrs, slog.Int64("refused_since_last_line", n))
	p.log.LogAttrs(ctx, slog.LevelWarn, "SOCKS handshake failed; closed", attrs...)
}

// refuseSOCKSOverLimit answers a SOCKS connection accepted past
// WithMaxConns with "no acceptable methods", which a client reads as the
// answer to its greeting, and closes it, on the accept loop; counted as
// Serve's refusals are and logged at most once a second.
func (p *Proxy) refuseSOCKSOverLimit(c net.Conn) {
	p.stats.refusedConns.Add(1) // before the answer: a client that has it finds it counted
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte{socks5.Version, socks5.MethodNoAcceptable})
	c.Close()
	if n, ok := p.socksLog.Allow(time.Now()); ok {
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "SOCKS connection refused: "+tooManyConnsReason,
			slog.String("client", c.RemoteAddr().String()), slog.Int64("refused_since_last_line", n))
	}
}
