package fwdproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/fwdproxy/fwdproxy/internal/h1"
)

// Serve accepts client connections on l and serves them until Shutdown,
// when it returns http.ErrServerClosed. Timeouts and limits come from the
// options: header read timeout, maximum header size, keep-alive idle
// timeout, WithMaxConns; there are no whole-request or whole-response
// timeouts, which would cut long downloads and tunnels.
//
// Bodyless proxy requests and CONNECT are served by a loop of the proxy's
// own (internal/h1's Server); a connection that sends anything else is
// handed, with what was read of it, to an http.Server with the same
// settings. That server also takes HTTP/2 with prior knowledge
// (WithCleartextHTTP2). With WithProxyProtocol the listener reads the
// PROXY protocol header first; with WithSOCKSOnHTTPListener it serves
// SOCKS5 clients as ServeSOCKS does. ServeTLS serves TLS.
func (p *Proxy) Serve(l net.Listener) error {
	l, done, err := p.openListener(l, false) // front.go: the PROXY protocol
	if err != nil {
		return err
	}
	defer done()
	return p.serveLoop(l)
}

// serveLoop runs internal/h1's loop on l, for Serve and ServeTLS (whose
// TLS connections it hands to net/http as they are accepted).
func (p *Proxy) serveLoop(l net.Listener) error {
	p.servedOnce.Store(true)
	p.serving.Add(1) // for /readyz (admin.go)
	defer p.serving.Add(-1)
	s := h1.NewServer(l, h1.ServerConfig{
		Handler:  p,
		HandOff:  p.cfg.Load().h1srv.HandOff, // the configuration in force names its own (ServerSettings.HandOff)
		Settings: p.serverSettings,
		Logger:   p.log,
		Conns:    &p.conns,
		Refused:  &p.stats.refusedConns,
		Parker:   p.parker, // keep-alive connections wait there between requests
	})
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	p.loops[s] = struct{}{}
	p.mu.Unlock()
	err := s.Serve()
	if errors.Is(err, http.ErrServerClosed) {
		p.mu.Lock()
		delete(p.loops, s)
		p.mu.Unlock()
	}
	// Otherwise the listener failed: the connections still open stay
	// registered, for Shutdown to close.
	return err
}

// newHTTPServer makes a net/http server for the client side, serving h,
// with the timeouts and limits of configuration c (net/http reads them from
// the server's fields, so a later configuration does not change a server
// already made) and net/http's errors logged at Warn. Serve's hand-off
// server and the interception front end's server are both made here, by New
// and Reload (netServers, reload.go). connContext is the server's
// ConnContext: the hand-off server's counts the connections it did not get
// from the loop (countConn), the interception server's carries the
// CONNECT's context (interceptedConnContext).
func (p *Proxy) newHTTPServer(c *config, h http.Handler, connContext func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.readHeaderTimeout,
		IdleTimeout:       c.clientIdleTimeout,
		MaxHeaderBytes:    c.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnContext:       connContext,
		HTTP2: &http.HTTP2Config{ // options_front.go: windows sized for tunnels
			MaxConcurrentStreams:          c.h2MaxStreams,
			MaxReceiveBufferPerStream:     h2StreamWindow,
			MaxReceiveBufferPerConnection: h2ConnWindow,
		},
	}
}

// newHandOffServer makes the net/http server that takes the connections
// Serve's loops hand off, with the timeouts and limits of configuration c;
// the loops take it from the configuration in force
// (ServerSettings.HandOff). It serves HTTP/1.1 and, over TLS (ServeTLS),
// HTTP/2, and HTTP/2 with prior knowledge with WithCleartextHTTP2.
func (p *Proxy) newHandOffServer(c *config) *http.Server {
	srv := p.newHTTPServer(c, p, p.countConn)
	srv.ConnState = p.connState
	srv.ErrorLog = slog.NewLogLogger(handshakeLog{p.log.Handler(), p}, slog.LevelWarn) // front.go: ServeTLS's failed handshakes
	if c.h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	return srv
}

// tooManyConnsReason is the reason given to a connection past WithMaxConns.
const tooManyConnsReason = "too many client connections: retry later (the limit is WithMaxConns, -max-conns on the example server)"

// serverSettings returns the settings of Serve's loops (internal/h1) in
// force: those buildConfig made for the configuration in force. The loops
// read them once per connection and per request.
func (p *Proxy) serverSettings() *h1.ServerSettings { return &p.cfg.Load().h1srv }

// ctxKeyOverLimit marks a client connection accepted past WithMaxConns.
type ctxKeyOverLimit struct{}

// countConn counts a client connection that net/http serves from the
// start (one that is not plain TCP, from a TLS listener of the caller's);
// one handed off by the loop was counted (and, past WithMaxConns, refused)
// when it was accepted. A TLS connection past WithMaxConns cannot be
// answered before its handshake, so it is marked for ServeHTTP to answer
// its request with 503 and close it. Only the hand-off server calls it,
// so h1.HandedOff, which knows a handed-off connection by its type
// (netx.Conn), sees no other: the netx.Conns that CONNECT and interception
// make (acceptConnect, serveIntercept) go to tunnels and to the
// interception server, whose connections are interceptedConns (or TLS
// over one) and are not counted.
func (p *Proxy) countConn(ctx context.Context, c net.Conn) context.Context {
	if h1.HandedOff(c) {
		return ctx
	}
	ctx = withTLSConn(ctx, c) // front.go: the client certificate
	if p.conns.Add(1) > int64(p.cfg.Load().maxConns) {
		return context.WithValue(ctx, ctxKeyOverLimit{}, true)
	}
	return ctx
}

// connState uncounts the connections net/http serves when they close or
// are hijacked (tunnels are limited by WithMaxTunnels instead).
func (p *Proxy) connState(_ net.Conn, s http.ConnState) {
	if s == http.StateClosed || s == http.StateHijacked {
		p.conns.Add(-1)
	}
}

// ListenAndServe listens on the TCP address addr and calls Serve.
func (p *Proxy) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return p.Serve(l)
}

// Shutdown stops the proxy gracefully: its servers stop accepting
// connections, idle connections are closed, requests in flight run to
// completion, and tunnels stay open until they end by themselves or ctx is
// done, when the connections and tunnels still open are closed (and their
// requests cancelled). New tunnels are refused from the start, and the
// Proxy's own Resolver (not one given with WithResolver) is closed at the
// end. Shutdown returns once every connection and tunnel has ended, with
// ctx's error if it had to force any.
//
// A Proxy mounted on a server of your own should be shut down after that
// server's own Shutdown: http.Server does not track hijacked connections.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	servers := make([]*http.Server, 0, len(p.servers))
	for s := range p.servers {
		servers = append(servers, s)
	}
	loops := make([]*h1.Server, 0, len(p.loops))
	for s := range p.loops {
		loops = append(loops, s)
	}
	for l := range p.socksLns {
		l.close() // socks.go; its connections are p.socks's
	}
	p.mu.Unlock()

	var wg sync.WaitGroup
	var forced atomic.Bool // a server had to close connections at ctx's end
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Shutdown(ctx) != nil {
				s.Close()
				forced.Store(true)
			}
		}()
	}
	for _, s := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Shutdown(ctx) != nil {
				forced.Store(true)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if p.socks.shutdown(ctx) != nil { // socks.go
			forced.Store(true)
		}
	}()
	tunnelsDone := make(chan struct{})
	go func() {
		p.tunnelWG.Wait()
		close(tunnelsDone)
	}()
	var err error
	select {
	case <-tunnelsDone:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		open := make([]trackedTunnel, 0, len(p.tunnels))
		for t := range p.tunnels {
			open = append(open, t)
		}
		p.mu.Unlock()
		for _, t := range open {
			t.close() // outside p.mu: a parked tunnel may end at once (untrack)
		}
		<-tunnelsDone
	}
	wg.Wait()
	if err == nil && forced.Load() {
		err = ctx.Err()
	}
	p.pipes.closeAll() // tunnelpark_linux.go: the free splice pipes
	p.closeUpstreams() // upstream.go: pooled connections, the Proxy's own Resolvers
	p.closeReloadMetrics()
	p.closeUpstreamMetrics()                       // routestats.go
	p.quotas.flush()                               // userpolicy.go: the bytes the meters counted go to the store
	if cerr := p.closeTelemetry(ctx); err == nil { // telemetry.go: flush the access log
		err = cerr
	}
	return err
}

func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// trackedTunnel is what the tunnel registry holds: a tunnel its handler
// relays (stream.go), a parked tunnel (tunnelpark_linux.go), an
// intercepted connection (intercept.go). Shutdown closes them, and a
// Reload that closes denied tunnels judges them by their tunnelInfo.
type trackedTunnel interface {
	close()
	regInfo() *tunnelInfo
}

// track registers a tunnel for Shutdown; it fails once Shutdown has begun.
func (p *Proxy) track(t trackedTunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.tunnels[t] = struct{}{}
	p.tunnelWG.Add(1)
	if cd, ti := p.closedDenied, t.regInfo(); cd != nil && ti != nil && ti.gen < cd.cfg.meta.gen {
		// Admitted before a reload that closed the tunnels its configuration
		// refuses, and registered only after: judged as those were (reload.go).
		go p.closeIfDenied(cd, t)
	}
	return true
}

func (p *Proxy) untrack(t trackedTunnel) {
	p.mu.Lock()
	delete(p.tunnels, t)
	p.mu.Unlock()
	p.tunnelWG.Done()
}
