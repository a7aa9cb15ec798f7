package fwdproxy

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/netx"
)

var connectEstablished = []byte("HTTP/1.1 200 Connection established\r\n\r\n")

// serveConnect opens a tunnel (RFC 9110 §9.3.6): it dials the target and
// answers 200 only once the upstream connection is up, then relays bytes
// both ways until either side is done. The tunnel keeps c, the
// configuration it started with, to its end. A tunnel between two TCP
// connections is parked (tunnelpark_linux.go; not one under a policy's byte
// quota or tunnel limit, which runTunnel relays) and outlives the handler:
// serveConnect then returns at once with the request's end, which comes
// with the tunnel's (observe, telemetry.go).
func (p *Proxy) serveConnect(c *config, w http.ResponseWriter, r *http.Request) *requestEnd {
	target := r.Host
	host, port, err := httpx.ParseTarget(target)
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "bad CONNECT target "+strconv.Quote(target)+": "+err.Error(), err))
		return nil
	}
	if p.isClosing() {
		p.fail(c, w, r, newError(ErrUnavailable, target, "proxy is shutting down", nil))
		return nil
	}
	ctx, ok := p.admit(c, w, r, target, host, port, true)
	if !ok {
		return nil
	}
	if !p.openTunnel(c) {
		p.fail(c, w, r, newError(ErrUnavailable, target, tunnelsReason, nil))
		return nil
	}
	held := true // the slot, unless a tunnel that outlives the handler took it
	defer func() {
		if held {
			p.closeTunnel()
		}
	}()
	match := policyIf(ctx, c)
	if match != nil && match.pol.MaxTunnels > 0 {
		release, ok := p.holdTunnel(ctx, match) // userpolicy.go
		if !ok {
			w.Header()["Retry-After"] = []string{"1"}
			p.fail(c, w, r, denied(ErrRateLimited, "quota_tunnels", target, "too many open tunnels: policy "+
				strconv.Quote(match.pol.Name)+" allows "+strconv.Itoa(match.pol.MaxTunnels)+" per user"))
			return nil
		}
		defer release()
	}
	if e := runConnectHooks(ctx, c.connectHooks, target, r); e != nil { // hooks.go
		p.fail(c, w, r, e)
		return nil
	}
	if p.intercepts(ctx, c, target, r, match) { // TLS interception (intercept.go), as the policy says
		p.serveIntercept(c, w, r.WithContext(ctx), target) // ctx carries the authenticated user and c
		return nil
	}
	upstream, err := p.dial(ctx, "tcp", target) // transport.go
	if err != nil {
		if ctx.Err() != nil {
			p.logClientGone(r, err)
			return nil
		}
		p.fail(c, w, r, asError(target, err))
		return nil
	}
	client, ok := p.acceptConnect(c, w, r, target, upstream)
	if !ok {
		upstream.Close()
		return nil
	}
	sw := socksWriterOf(w)                                            // before runTunnel, which may detach w (telemetry.go)
	end := p.runTunnel(c, r.WithContext(ctx), client, upstream, true) // ctx: the user, for Reload
	held = end == nil
	if sw != nil && end != nil {
		sw.handedOver = true // the parked tunnel has the SOCKS client's connection
	}
	return end
}

// acceptConnect answers an admitted CONNECT to target with 200 and takes
// the client's side of it, which it returns: over HTTP/1.1 the hijacked
// connection, with the server's deadlines cleared (the tunnel watches
// idleness itself) and the bytes the server had read ahead of it (a TLS
// ClientHello sent right behind the CONNECT, say) read first; over
// HTTP/2 (RFC 9113 §8.5) the stream itself, a netx.StreamConn; from a
// SOCKS client (socks.go) its connection, after a success reply that gives
// upstream's local address (nil: none). A plain tunnel and an intercepted
// CONNECT both take their client here. It reports false when the client
// cannot be taken; the client has then been answered, or is gone.
func (p *Proxy) acceptConnect(c *config, w http.ResponseWriter, r *http.Request, target string, upstream net.Conn) (net.Conn, bool) {
	if sw := socksWriterOf(w); sw != nil {
		return p.acceptSOCKS(sw, r, upstream)
	}
	if r.ProtoMajor >= 2 {
		w.WriteHeader(http.StatusOK)
		if err := http.NewResponseController(w).Flush(); err != nil {
			return nil, false
		}
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		return netx.NewStreamConn(r.Body, w, local, r.RemoteAddr), true
	}
	client, err := hijackConn(w)
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "CONNECT is not supported on this connection", err))
		return nil, false
	}
	// The server's read and write deadlines no longer apply: the tunnel
	// watches idleness itself.
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write(connectEstablished); err != nil {
		client.Close()
		return nil, false
	}
	if rs := reqStateFrom(r.Context()); rs != nil {
		rs.status = http.StatusOK // written on the hijacked connection
	}
	return client, true
}

// hijackConn takes the client connection of w, with the bytes its server
// had read ahead of it read first (withReadAhead): from Serve's loop
// without a bufio pair (h1.ConnHijacker), from any other server through
// http.ResponseController.
func hijackConn(w http.ResponseWriter) (net.Conn, error) {
	for rw := w; ; {
		if h, ok := rw.(h1.ConnHijacker); ok {
			c, ahead, err := h.HijackConn()
			if err != nil || len(ahead) == 0 {
				return c, err
			}
			return netx.NewConn(c, ahead), nil
		}
		u, ok := rw.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		rw = u.Unwrap()
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	return withReadAhead(c, brw.Reader), nil
}

// openTunnel counts a tunnel (a CONNECT, or an upgraded connection) in,
// unless c's limit (WithMaxTunnels) is reached. The count is the Proxy's
// and the limit the configuration's, so a new limit applies at once to the
// tunnels already open. closeTunnel counts one out.
func (p *Proxy) openTunnel(c *config) bool {
	limit := int64(c.maxTunnels)
	for {
		n := p.tunnelsOpen.Load()
		if n >= limit {
			return false
		}
		if p.tunnelsOpen.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (p *Proxy) closeTunnel() { p.tunnelsOpen.Add(-1) }

// withReadAhead returns a hijacked client connection c with the bytes
// that br, the server's reader over it, had read ahead read first: c
// itself when there are none, else a netx.Conn, which keeps br until they
// are read.
func withReadAhead(c net.Conn, br *bufio.Reader) net.Conn {
	if br == nil || br.Buffered() == 0 {
		return c
	}
	return netx.NewBufferedConn(c, nil, br, nil)
}

// runTunnel relays between client and upstream, tracked so that Shutdown
// can close it, and logs it when done. Its idle timeout is c's. Between two
// TCP connections the tunnel is parked (tunnelpark_linux.go; Linux only):
// with detach, runTunnel then returns at once with the request's end, and
// the tunnel gives back the WithMaxTunnels slot when it ends; without, it
// returns when the tunnel has ended. Any other tunnel is relayed here
// (stream.go), and runTunnel returns nil when it has ended.
func (p *Proxy) runTunnel(c *config, r *http.Request, client, upstream io.ReadWriteCloser, detach bool) *requestEnd {
	m := policyIf(r.Context(), c)
	// A tunnel under a policy's byte quota is metered as it relays, and one
	// holding a policy's tunnel slot gives it back when its handler
	// returns (serveConnect): those are relayed here, not parked.
	if m == nil || m.meter == nil && m.pol.MaxTunnels <= 0 {
		if end, parked := p.parkTunnel(c, r, client, upstream, detach); parked {
			return end
		}
	}
	t := newTunnel(client, upstream, c.tunnelIdleTimeout)
	if m != nil && m.meter != nil {
		t.meter = m.meter
		t.onCut = func() {
			p.logCut(r.Context(), m, r.Host, r.RemoteAddr)
			// The tunnel's record says why it ended, as a request cut at
			// the quota does (read once the relay is over).
			if rs := reqStateFrom(r.Context()); rs != nil {
				rs.errKind = "quota_bytes"
			}
		}
	}
	t.info = newTunnelInfo(c, r, upstream) // reload.go
	if !p.track(t) {
		client.Close()
		upstream.Close()
		return nil
	}
	start := time.Now()
	p.tunnelStarted(r) // telemetry.go
	up, down := t.run()
	p.tunnelEnded(r, upstream, up, down, time.Since(start)) // telemetry.go
	p.untrack(t)
	p.log.LogAttrs(r.Context(), slog.LevelDebug, "tunnel closed",
		slog.String("target", r.Host), slog.String("client", r.RemoteAddr),
		slog.Int64("bytes_up", up), slog.Int64("bytes_down", down),
		slog.Duration("duration", time.Since(start)))
	return nil
}
