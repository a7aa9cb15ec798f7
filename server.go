package fwdproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
)

// Serve accepts client connections on l and serves them with an
// http.Server tuned for a proxy: header read timeout, maximum header size
// and keep-alive idle timeout from the options; no whole-request or
// whole-response timeouts, which would cut long downloads and tunnels. It
// returns http.ErrServerClosed after Shutdown.
func (p *Proxy) Serve(l net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.cfg.readHeaderTimeout,
		IdleTimeout:       p.cfg.clientIdleTimeout,
		MaxHeaderBytes:    p.cfg.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnContext:       p.countConn,
		ConnState:         p.connState,
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	p.servers[srv] = struct{}{}
	p.mu.Unlock()
	err := srv.Serve(l)
	p.mu.Lock()
	delete(p.servers, srv)
	p.mu.Unlock()
	return err
}

// ctxKeyOverLimit marks a client connection accepted past WithMaxConns.
type ctxKeyOverLimit struct{}

// countConn counts a new client connection; one past the limit is marked
// so that ServeHTTP answers its request with 503 and closes it.
func (p *Proxy) countConn(ctx context.Context, _ net.Conn) context.Context {
	if p.conns.Add(1) > int64(p.cfg.maxConns) {
		return context.WithValue(ctx, ctxKeyOverLimit{}, true)
	}
	return ctx
}

// connState uncounts connections that close or are hijacked (tunnels are
// limited by WithMaxTunnels instead).
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
// connections, requests in flight run to completion, and tunnels stay open
// until they end by themselves or ctx is done, when those still open are
// closed. New tunnels are refused from the start, and the Proxy's own
// Resolver (not one given with WithResolver) is closed at the end. Shutdown returns once
// every tunnel has ended, with ctx's error if it had to force them.
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
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Shutdown(ctx) != nil {
				s.Close()
			}
		}()
	}
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
		for t := range p.tunnels {
			t.close()
		}
		p.mu.Unlock()
		<-tunnelsDone
	}
	wg.Wait()
	p.transport.CloseIdleConnections()
	p.h1pool.closeIdle()
	if p.ownsResolver {
		p.resolver.Close()
	}
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

// track registers a tunnel for Shutdown; it fails once Shutdown has begun.
func (p *Proxy) track(t *tunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.tunnels[t] = struct{}{}
	p.tunnelWG.Add(1)
	return true
}

func (p *Proxy) untrack(t *tunnel) {
	p.mu.Lock()
	delete(p.tunnels, t)
	p.mu.Unlock()
	p.tunnelWG.Done()
}
