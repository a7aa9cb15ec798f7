package fwdproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// Sending through upstream proxies, once a route decision (route.go) has
// named them. A plain request (roundTripRouted) and a tunnel (dialRouted,
// which dial calls for every CONNECT-like dial, so that every front end's
// tunnels follow the routes) try the upstreams in order, by the failover
// rule; each attempt through a proxy is counted in its health. Before the
// first attempt through a proxy, the destination is vetted (vetVia): the
// guard is about where the request finally goes, not about the proxy.
//
// The ways a request goes through an HTTP or HTTPS proxy: a bodyless
// request to an http:// URL by the own HTTP/1.1 transport in absolute-form
// (SendVia, its connections to the proxy pooled per upstream), anything
// else by the shared http.Transport, which proxies.ConfigureTransport
// taught to send a request through the upstream in its context
// (absolute-form, CONNECT for https, SOCKS5).

// hop is the way one attempt sends a request: the own HTTP/1.1 transport
// (fast) or http.Transport, directly to addr, or through via.
type hop struct {
	addr string            // fast and direct: the host:port dialed
	fast bool              // the own HTTP/1.1 transport
	via  *proxies.Upstream // the upstream proxy; nil: direct
}

// viaOwnTransport lets bodyless http:// requests through an HTTP or HTTPS
// proxy take the own HTTP/1.1 transport (SendVia); BenchmarkChain turns
// it off to compare with http.Transport.
var viaOwnTransport = func() *atomic.Bool { var b atomic.Bool; b.Store(true); return &b }()

// roundTripRouted is roundTrip under a configuration with routes: the
// decision, then the attempts. A request the routes send directly takes
// the usual path.
func (p *Proxy) roundTripRouted(c *config, out *http.Request) (*http.Response, error) {
	host, port, err := httpx.CheckURL(out.URL)
	if err != nil {
		return p.roundTripHop(c, out, p.route(c, out)) // http.Transport reports it
	}
	ctx := out.Context()
	d := destination{host: host, port: port, https: out.URL.Scheme == "https", user: authUser(ctx), pol: policyIndex(ctx, c)}
	if c.routing.pac != nil {
		d.rawURL = out.URL.String()
	}
	var buf [8]*proxies.Upstream
	order, err := p.pick(ctx, c, &d, buf[:0])
	if err != nil {
		return nil, pacFailed(out.URL.Host, err)
	}
	if order == nil {
		return p.roundTripHop(c, out, p.route(c, out))
	}
	return p.viaUpstreams(c, out, &d, order)
}

// viaUpstreams sends out through the upstreams of order, by the failover
// rule (proxies.MayRetry): the next is tried when nothing of the request
// was sent, or it is idempotent and no byte of a response came; a body that
// was read is never sent again. At most maxRouteAttempts are tried.
func (p *Proxy) viaUpstreams(c *config, out *http.Request, d *destination, order []*proxies.Upstream) (*http.Response, error) {
	ctx := out.Context()
	if err := p.vetVia(ctx, c, d, false, order); err != nil {
		return nil, err
	}
	n := min(len(order), maxRouteAttempts)
	var body *replayBody
	if n > 1 && out.Body != nil && out.Body != http.NoBody {
		body = &replayBody{rc: out.Body}
		out.Body = body
	}
	var last error
	for i, u := range order[:n] {
		resp, err, started := p.attempt(c, out, u, i+1 < n)
		if err == nil {
			return resp, nil
		}
		last = err
		if i+1 == n || ctx.Err() != nil || !retryable(out, err, started) {
			break
		}
		if body != nil {
			if !body.seal() {
				break // the body went out, at least in part
			}
			body = &replayBody{rc: body.rc}
			out.Body = body
		}
	}
	return nil, last
}

// attempt sends out through u (DIRECT: by the usual path), counting it in
// u's health; more says whether another upstream may follow, which makes
// it watch for the first response byte. started reports that one came.
func (p *Proxy) attempt(c *config, out *http.Request, u *proxies.Upstream, more bool) (resp *http.Response, err error, started bool) {
	rs := reqStateFrom(out.Context())
	if u.IsDirect() {
		if rs != nil {
			rs.via = ""
		}
		h := p.route(c, out)
		resp, err = p.roundTripHop(c, out, h)
		var rse *h1.ResponseStartedError
		return resp, err, errors.As(err, &rse)
	}
	if rs != nil {
		rs.via = u.Name()
	}
	h := hop{via: u}
	if v, ok := u.Attached().(*h1.Via); ok && v != nil && viaOwnTransport.Load() {
		if _, fast := h1.CanSend(out); fast && (len(c.requestHooks) == 0 || h1.ValidRequest(out)) {
			h.fast = true
		}
	}
	send := out
	var first *atomic.Bool
	if more && !h.fast {
		// http.Transport tells of the first response byte only through
		// a client trace.
		first = new(atomic.Bool)
		trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { first.Store(true) }}
		send = out.WithContext(httptrace.WithClientTrace(out.Context(), trace))
	}
	u.Begin()
	resp, err = p.roundTripHop(c, send, h)
	u.End()
	if err == nil && resp.StatusCode == http.StatusProxyAuthRequired {
		// The proxy refused to forward it: its answer is for us, not for
		// the client, who would take it for ours.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		err = u.StatusError(out.Method+" "+out.URL.Redacted(), out.URL.Host, resp.StatusCode, resp.Status)
		resp = nil
	}
	if pe := u.TransportError(out.URL.Host, err); pe != nil {
		err = pe
	}
	u.Observe(err)
	var rse *h1.ResponseStartedError
	started = errors.As(err, &rse) || first != nil && first.Load()
	if err != nil {
		if errors.As(err, new(*proxies.Error)) {
			started = false // the proxy itself failed or refused, before the request went on
		} else {
			err = &viaError{via: u.Name(), err: err}
		}
	}
	return resp, err, started
}

// viaError is a request's failure through an upstream proxy that is not
// the proxy's own (those are *proxies.Error): asError names the proxy.
type viaError struct {
	via string
	err error
}

func (e *viaError) Error() string { return e.err.Error() }
func (e *viaError) Unwrap() error { return e.err }

// retryable reports whether out may go to the next upstream after err, by
// the failover rule: not after a refusal of the proxy's own (a *Error of
// the guard or the rules), and as proxies.MayRetry says. A failure of the
// upstream proxy itself (a *proxies.Error: it could not be reached, or
// refused the request, our credentials or the CONNECT) came before
// anything of the request went on; so did a failed dial of DIRECT.
func retryable(out *http.Request, err error, started bool) bool {
	var own *Error
	if errors.As(err, &own) && own.Kind != ErrUpstream && own.Kind != ErrUpstreamTimeout {
		return false
	}
	var pe *proxies.Error
	var oe *net.OpError
	sent := !errors.As(err, &pe) && !(errors.As(err, &oe) && oe.Op == "dial")
	return proxies.MayRetry(out.Method, out.Header, sent, started)
}

// roundTripHop sends out on hop h, inside the client-side telemetry when
// it follows the request.
func (p *Proxy) roundTripHop(c *config, out *http.Request, h hop) (*http.Response, error) {
	if rs := reqStateFrom(out.Context()); rs != nil {
		return p.observeRoundTrip(c, rs, out, h)
	}
	return p.send(c, out, h, nil)
}

// replayBody is a request body that may be handed to another upstream if
// none of it was read: Close does nothing (the server closes the client's
// body itself), so that a failed attempt's transport cannot close it, and
// seal, which succeeds only while nothing was read, keeps the failed
// attempt's transport from reading it later.
type replayBody struct {
	rc    io.ReadCloser
	state atomic.Int32 // 0 untouched, 1 read from, 2 sealed
}

var errBodySealed = errors.New("request body handed to another upstream")

func (b *replayBody) Read(p []byte) (int, error) {
	if b.state.Load() != 1 && !b.state.CompareAndSwap(0, 1) {
		return 0, errBodySealed
	}
	return b.rc.Read(p)
}

func (b *replayBody) Close() error { return nil }

// seal reports whether nothing was read, and if so keeps anything from
// being read through b from now on.
func (b *replayBody) seal() bool { return b.state.CompareAndSwap(0, 2) }

// failed reports the first read error of the client's body under b (see
// clientBody.failed), for the client-side telemetry.
func (b *replayBody) failed() error {
	if fb, ok := b.rc.(interface{ failed() error }); ok {
		return fb.failed()
	}
	return nil
}

// dialRouted is dial for a tunnel under a configuration with routes: the
// decision, then the attempts, each until a tunnel is established.
func (p *Proxy) dialRouted(ctx context.Context, pol dialPolicy, network, addr string) (net.Conn, error) {
	c := pol.cfg
	host, port, err := httpx.ParseTarget(addr)
	if err != nil {
		return p.dialDirect(ctx, network, addr) // which reports it
	}
	d := destination{host: host, port: port, https: true, user: authUser(ctx), pol: policyIndex(ctx, pol.cfg)}
	var buf [8]*proxies.Upstream
	order, err := p.pick(ctx, c, &d, buf[:0])
	if err != nil {
		return nil, pacFailed(addr, err)
	}
	if order == nil {
		return p.dialDirect(ctx, network, addr)
	}
	if err := p.vetVia(ctx, c, &d, true, order); err != nil {
		return nil, err
	}
	var last error
	for _, u := range order[:min(len(order), maxRouteAttempts)] {
		conn, err := p.tunnelVia(ctx, c, u, network, addr)
		if err == nil {
			return conn, nil
		}
		last = err
		var own *Error
		if ctx.Err() != nil || errors.As(err, &own) && own.Kind != ErrUpstream && own.Kind != ErrUpstreamTimeout {
			break
		}
	}
	return nil, last
}

// tunnelVia opens a tunnel to addr through u, within the dial timeout (and
// the TLS handshake timeout for an https:// proxy).
func (p *Proxy) tunnelVia(ctx context.Context, c *config, u *proxies.Upstream, network, addr string) (net.Conn, error) {
	rs := reqStateFrom(ctx)
	if u.IsDirect() {
		if rs != nil {
			rs.via = ""
		}
		return p.dialDirect(ctx, network, addr)
	}
	if rs != nil {
		rs.via = u.Name()
	}
	dctx, cancel := context.WithTimeout(ctx, proxyDialTimeout(c, u))
	defer cancel()
	// Outstanding from the attempt on, as a request is.
	u.Begin()
	conn, err := u.DialTunnel(dctx, addr) // observes u's health
	if err != nil {
		u.End()
		return nil, err
	}
	if early, ok := conn.(*proxies.Conn); ok {
		// Bytes the proxy sent right behind its answer: one read-ahead
		// wrapper, as the tunnel knows it (netx.Conn).
		conn = netx.NewConn(early.NetConn(), early.Buffered())
	}
	return &viaConn{Conn: conn, u: u}, nil
}

// proxyDialTimeout bounds connecting to u: c's dial timeout, plus its TLS
// handshake timeout for an https:// proxy.
func proxyDialTimeout(c *config, u *proxies.Upstream) time.Duration {
	if u.Kind() == proxies.HTTPS {
		return c.dialTimeout + c.tlsHandshakeTimeout
	}
	return c.dialTimeout
}

// viaConn is a tunnel through an upstream proxy: the connection to the
// proxy, which counts the tunnel among the upstream's outstanding ones
// until it is closed. It passes WriteTo, ReadFrom and CloseWrite on, and
// the tunnel sees the TCP connection under it (tcpOf), so splice applies.
type viaConn struct {
	net.Conn
	u    *proxies.Upstream
	once sync.Once
}

func (c *viaConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.u.End)
	return err
}

func (c *viaConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.Conn})
}

func (c *viaConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *viaConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// vetVia vets the destination d of a request or tunnel (connect) that may
// go through an upstream proxy of order, before the first attempt: the
// guard and the CIDR rules are about the final destination. An address is
// checked as dial checks it; a name is resolved here and refused when any
// of its addresses would be (the upstream may use any of them), unless
// WithUpstreamResolvesNames trusts the upstream to resolve it. DIRECT
// attempts are vetted by dial as always.
func (p *Proxy) vetVia(ctx context.Context, c *config, d *destination, connect bool, order []*proxies.Upstream) error {
	proxied := false
	for _, u := range order[:min(len(order), maxRouteAttempts)] {
		proxied = proxied || !u.IsDirect()
	}
	if !proxied {
		return nil
	}
	pol := p.dialPolicyFrom(ctx)
	pol.cfg, pol.connect = c, connect
	target := joinHostPort(d.host, d.port)
	var ips []netip.Addr
	ip, isIP := policy.ParseHost(d.host)
	if isIP {
		ips = []netip.Addr{ip.WithZone("")}
	} else if c.routing.resolvesNames {
		return nil
	} else {
		var err error
		if ips, err = p.lookup(ctx, c.up.resolver, d.host); err != nil {
			e := asError(target, err)
			e.Reason += " (resolved here to vet the destination before it goes to an upstream proxy; " +
				"let the upstream resolve names with WithUpstreamResolvesNames, -upstream-resolves-names on the example server)"
			return e
		}
	}
	for _, ip := range ips {
		if reason, why := p.addrRefusal(ctx, pol, target, d.host, d.port, ip.Unmap()); reason != "" {
			if !isIP {
				reason = d.host + ": " + reason + "; through an upstream proxy every address of a name must pass" +
					" (or let the upstream resolve names: WithUpstreamResolvesNames, -upstream-resolves-names on the example server)"
			}
			return denied(ErrForbidden, why, target, reason)
		}
	}
	return nil
}

// pacFailed is the error of a request whose PAC evaluation failed.
func pacFailed(target string, err error) *Error {
	return newError(ErrUpstream, target, "the PAC file gave no route to "+target+": "+err.Error(), err)
}

// dialUpstreamProxy connects to an upstream proxy's own address (not a
// destination: the private-address guard does not apply), resolving a
// name with the Resolver of the dialing request's configuration, within
// its dial timeout.
func (p *Proxy) dialUpstreamProxy(ctx context.Context, network, addr string) (net.Conn, error) {
	pol := p.dialPolicyFrom(ctx)
	ctx, cancel := context.WithTimeout(ctx, pol.cfg.dialTimeout)
	defer cancel()
	host, port, err := httpx.ParseTarget(addr)
	if err != nil {
		return nil, err
	}
	res := pol.cfg.up.resolver
	var ips []netip.Addr
	if ip, isIP := policy.ParseHost(host); isIP {
		ips = []netip.Addr{ip.WithZone("")}
	} else if ips, err = p.lookup(ctx, res, host); err != nil {
		return nil, err
	}
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	for _, ip := range ips {
		if isSelf(local, ip.Unmap(), port) {
			return nil, errors.New("upstream proxy " + addr + " is this proxy's own address: a loop")
		}
	}
	return res.dialAddrs(ctx, &p.dialer, network, ips, port)
}

// dialProxy connects to u, an HTTP or HTTPS proxy, for the own HTTP/1.1
// transport (h1.Via's Dial).
func (p *Proxy) dialProxy(ctx context.Context, u *proxies.Upstream) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, proxyDialTimeout(p.dialPolicyFrom(ctx).cfg, u))
	defer cancel()
	return u.DialProxy(ctx)
}
