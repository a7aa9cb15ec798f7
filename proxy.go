package fwdproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// Proxy is a forward proxy. It implements http.Handler: absolute-form
// requests ("GET http://host/path") are forwarded through one shared,
// pooled upstream transport, CONNECT requests open tunnels, and other
// requests go to the fallback handler, if any. Create one with New; it is
// safe for concurrent use. Call Shutdown when done with it, also when it is
// only mounted as a handler: Shutdown flushes the asynchronous log, whose
// writer goroutine runs from the first record on, and closes pooled
// connections and the Proxy's own Resolver.
type Proxy struct {
	// cfg is the configuration in force (config.go): loaded once by each
	// request and tunnel as it starts, replaced whole by swap.
	cfg  atomic.Pointer[config]
	base settings // the defaults New started from, its Via pseudonym chosen

	dialer      net.Dialer   // keep-alive only: each dial's timeout is its request's (dial)
	conns       atomic.Int64 // client connections open in Serve, against the snapshot's maxConns
	tunnelsOpen atomic.Int64 // tunnels admitted, against the snapshot's maxTunnels (connect.go)
	log         *slog.Logger

	// Reload (reload.go, upstream.go): reloadMu serialises reloads, and
	// guards retired, the upstreams that reloads replaced and whose last
	// dials may still run.
	reloadMu   sync.Mutex
	retired    map[*retired]struct{}
	dnsRetired dnsCounters // what replaced Resolvers had counted
	reloads    reloadCounters
	hashKey    []byte // keys the digests of secrets in descriptions (configdesc.go)

	mu       sync.Mutex
	closing  bool
	servers  map[*http.Server]struct{}
	loops    map[*h1.Server]struct{} // Serve's own loops (internal/h1)
	tunnels  map[*tunnel]struct{}
	tunnelWG sync.WaitGroup
	// closedDenied is the last reload that closed the tunnels its
	// configuration refuses (WithReloadClosesDeniedTunnels, reload.go).
	closedDenied *deniedCheck

	// Telemetry (telemetry.go, accesslog.go, stats.go).
	tel   telemetry
	stats proxyStats
	logq  *lazyAsync
}

// New returns a Proxy configured by opts. With no options it is a working,
// safe proxy with the defaults documented on each option. Reload replaces
// the configuration of a running Proxy.
func New(opts ...Option) (*Proxy, error) {
	p := &Proxy{base: defaultSettings(randomPseudonym())}
	c, err := buildConfig(p.base, opts) // options.go
	if err != nil {
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if p.log = c.logger; p.log == nil {
		p.log = slog.Default()
	}
	p.dialer = net.Dialer{KeepAlive: 30 * time.Second}
	if c.up, err = p.firstUpstream(c); err != nil { // upstream.go: the transports and the resolver
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	p.describe(c, nil) // reload.go: generation 1, its hash
	p.retired = make(map[*retired]struct{})
	p.servers = make(map[*http.Server]struct{})
	p.loops = make(map[*h1.Server]struct{})
	p.tunnels = make(map[*tunnel]struct{})
	if err := p.initTelemetry(c); err != nil { // telemetry.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if err := p.initReloadMetrics(c); err != nil { // reload.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	_ = p.netServers(nil, c) // reload.go: the hand-off and interception servers, which log through p.log as initTelemetry made it
	p.swap(c)                // config.go: the first configuration, complete
	return p, nil
}

// ServeHTTP dispatches a request: CONNECT to a tunnel, absolute-form
// requests upstream, anything else to the fallback handler (or 400). It
// loads the configuration in force once; the request keeps it to its end.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := p.cfg.Load()
	defer p.endRequest(p.beginRequest(c, &w, &r)) // telemetry.go: spans, metrics, access log, Stats
	if r.Context().Value(ctxKeyOverLimit{}) != nil {
		w.Header()["Connection"] = []string{"close"}
		p.fail(c, w, r, newError(ErrUnavailable, r.Host, tooManyConnsReason, nil))
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(c, w, r)
	case r.URL.IsAbs():
		p.forward(c, w, r)
	case c.fallback != nil:
		c.fallback.ServeHTTP(w, r)
	default:
		p.fail(c, w, r, newError(ErrMalformed, "",
			"this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port", nil))
	}
}

// forward is the one request path: plain HTTP requests, and (with
// interception) decrypted HTTPS requests, all pass through it, each under
// its configuration c.
func (p *Proxy) forward(c *config, w http.ResponseWriter, r *http.Request) {
	target := r.URL.Host
	host, port, err := httpx.CheckURL(r.URL)
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "bad request target "+strconv.Quote(r.URL.String())+": "+err.Error(), err))
		return
	}
	if e := checkLookAlikes(r.Header, target); e != nil {
		p.fail(c, w, r, e)
		return
	}
	ctx, ok := p.admit(c, w, r, target, host, port, false)
	if !ok {
		return
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// net/http drops a Content-Length sent along with Transfer-Encoding
		// before the handler runs, so such a request cannot be told from a
		// plain chunked one. RFC 9112 §6.1 requires closing the connection
		// after a CL+TE request; closing after every chunked request
		// guarantees that nothing pipelined behind one is forwarded.
		w.Header()["Connection"] = []string{"close"}
	}
	if seenBefore(c, r.Header["Via"]) {
		p.fail(c, w, r, newError(ErrLoop, target, "request loop: the request already passed through this proxy", nil))
		return
	}
	out := outboundRequest(ctx, c, r)
	lb, _ := out.Body.(*limitedBody)
	var body *clientBody // taken now: a hook may replace out.Body
	if out.Body != http.NoBody && out.Body != nil {
		body = watchRequestBody(c.bodyIdleTimeout, w, out.Body) // bodyidle.go
		defer body.w.Stop()
		out.Body = body
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodOptions {
		if answered := maxForwards(c, w, r, out); answered {
			return
		}
	}
	resp, e := runRequestHooks(ctx, c.requestHooks, target, out) // hooks.go
	if e != nil {
		p.fail(c, w, r, e)
		return
	}
	if resp == nil {
		if r.ProtoMajor == 1 && r.ContentLength != 0 {
			// Let the upstream stream its response while the request body
			// is still arriving (echo, bidirectional streaming).
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
		var err error
		resp, err = p.roundTrip(c, out) // transport.go: the router, then the client span (telemetry.go) around send
		if err != nil {
			if body != nil && body.w.hasFired() {
				// Checked first: the server cancels the request's context
				// when the interrupted read fails.
				w.Header()["Connection"] = []string{"close"} // the rest of the body is still unread
				p.fail(c, w, r, newError(ErrClientTimeout, target, "the request body stalled: no byte from the client for "+
					c.bodyIdleTimeout.String()+bodyIdleHint, nil))
				return
			}
			if lb != nil && lb.over.Load() {
				p.fail(c, w, r, newError(ErrTooLarge, target, "request body is over the limit of "+
					strconv.FormatInt(c.maxBodyBytes, 10)+" bytes", nil))
				return
			}
			if ctx.Err() != nil {
				p.logClientGone(r, err)
				return
			}
			if bodyErr := body.failed(); bodyErr != nil {
				// The client's fault, not the upstream's: a malformed
				// chunked body, or one cut short.
				p.fail(c, w, r, newError(ErrMalformed, target, "reading the request body failed: "+bodyErr.Error(), bodyErr))
				return
			}
			p.fail(c, w, r, asError(target, err))
			return
		}
	}
	if resp.Request == nil {
		resp.Request = out
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	if resp.Header == nil {
		resp.Header = make(http.Header)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		p.relayUpgrade(c, w, r, out, resp)
		return
	}
	if e := runResponseHooks(ctx, c.responseHooks, target, resp); e != nil { // hooks.go
		p.fail(c, w, r, e)
		return
	}
	p.writeResponse(c, w, r, resp)
}

// checkLookAlikes refuses a request carrying a look-alike of a framing or
// routing field (httpx.FramingLookAlike): "Transfer_Encoding: chunked"
// would be forwarded next to the proxy's own framing, and an origin that
// reads '_' as '-' would frame the body by it.
func checkLookAlikes(h http.Header, target string) *Error {
	for k := range h {
		if field, ok := httpx.FramingLookAlike(k); ok {
			return newError(ErrMalformed, target, "request field "+strconv.Quote(k)+
				" looks like "+field+" to servers that read '_' as '-'; refused", nil)
		}
	}
	return nil
}

// outboundRequest derives the request sent upstream from the client's. The
// copy is shallow: the body, trailer map and context are shared, so the
// upstream request is cancelled when the client goes away.
func outboundRequest(ctx context.Context, c *config, r *http.Request) *http.Request {
	out := r.WithContext(ctx)
	out.RequestURI = ""
	out.Close = false
	out.Header = outboundHeader(c, r)
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		out.Body = http.NoBody
		return out
	}
	if c.maxBodyBytes > 0 && r.ContentLength < 0 {
		out.Body = &limitedBody{ReadCloser: r.Body, left: c.maxBodyBytes}
	}
	return out
}

// maxForwards applies Max-Forwards to TRACE and OPTIONS (RFC 9110 §7.6.2):
// at 0 the proxy answers itself, otherwise the value is decremented.
func maxForwards(c *config, w http.ResponseWriter, r *http.Request, out *http.Request) (answered bool) {
	mf, ok := r.Header["Max-Forwards"]
	if !ok || len(mf) == 0 {
		return false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(mf[0]), 10, 31)
	if err != nil {
		return false // an invalid value is passed on untouched
	}
	if n > 0 {
		out.Header["Max-Forwards"] = []string{strconv.FormatUint(n-1, 10)}
		return false
	}
	h := w.Header()
	h["Via"] = []string{c.via.forProto(r.ProtoMajor, r.ProtoMinor)}
	if r.Method == http.MethodOptions {
		h["Allow"] = []string{"GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT"}
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
		return true
	}
	// TRACE: echo the request as received, minus credentials (RFC 9110 §9.3.8).
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
	echo := r.Header.Clone()
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
		delete(echo, k)
	}
	_ = echo.Write(&b)
	b.WriteString("\r\n")
	h["Content-Type"] = []string{"message/http"}
	h["Content-Length"] = []string{strconv.Itoa(b.Len())}
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, b.String())
	return true
}

// seenBefore reports whether a Via field lists this proxy's pseudonym (c's)
// as a recipient: the request has come around in a loop.
func seenBefore(c *config, via []string) bool {
	found := false
	httpx.Tokens(via, func(entry string) bool {
		// entry: received-protocol SP received-by [SP comment]
		if i := strings.IndexAny(entry, " \t"); i >= 0 {
			by := strings.TrimLeft(entry[i+1:], " \t")
			if j := strings.IndexAny(by, " \t"); j >= 0 {
				by = by[:j]
			}
			found = strings.EqualFold(by, c.pseudonym)
		}
		return !found
	})
	return found
}

// writeResponse sends an upstream (or hook-made) response to the client,
// streaming its body and passing trailers on.
func (p *Proxy) writeResponse(c *config, w http.ResponseWriter, r *http.Request, resp *http.Response) {
	var h http.Header
	via := c.via.forProto(resp.ProtoMajor, resp.ProtoMinor)
	if a, ok := w.(h1.HeaderAdopter); ok && a.AdoptHeader(resp.Header) {
		h = resp.Header // Serve's loop: the upstream's map becomes the client's
		filterHeaderInPlace(h, via)
	} else {
		h = w.Header()
		filterHeader(h, resp.Header, via)
	}
	if len(c.responseHooks) > 0 || len(c.requestHooks) > 0 {
		// A hook may have replaced the body; make the header agree.
		if resp.ContentLength >= 0 {
			h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
		} else {
			delete(h, "Content-Length")
		}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body == http.NoBody {
		return
	}
	stream := resp.ContentLength < 0 || isEventStream(resp.Header)
	if stream {
		// Headers go out at once: the first event may be a while coming.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	watch := watchResponseBody(c.bodyIdleTimeout, resp.Body) // bodyidle.go; nil when the body is all in memory
	_, readErr, writeErr := copyBody(w, resp.Body, stream, watch)
	watch.Stop()
	if writeErr != nil {
		p.logClientGone(r, writeErr)
		return
	}
	if readErr != nil {
		// The status line is gone; the only honest signal left is to cut the
		// connection so the client sees a truncated body, not a short one.
		if watch.hasFired() {
			target := r.URL.Host
			p.logFailure(r, newError(ErrUpstreamTimeout, target, "upstream "+target+" body stalled: no byte moved for "+
				c.bodyIdleTimeout.String()+"; client connection cut"+bodyIdleHint, readErr), "upstream body stalled mid-stream")
		} else {
			p.logFailure(r, asError(r.URL.Host, readErr), "upstream body failed mid-stream")
		}
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && len(ct[0]) >= 17 && strings.EqualFold(ct[0][:17], "text/event-stream")
}

// relayUpgrade completes a protocol switch (RFC 9110 §7.8): the 101 goes to
// the client, then bytes are relayed both ways as in a tunnel.
func (p *Proxy) relayUpgrade(c *config, w http.ResponseWriter, r *http.Request, out *http.Request, resp *http.Response) {
	target := r.URL.Host
	want, got := upgradeType(out.Header), upgradeType(resp.Header)
	if want == "" || !strings.EqualFold(want, got) {
		p.fail(c, w, r, newError(ErrUpstream, target, fmt.Sprintf("upstream %s switched to protocol %q, not the requested %q", target, got, want), nil))
		return
	}
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		p.fail(c, w, r, newError(ErrUpstream, target, "upstream "+target+" switched protocols on a connection that cannot be relayed", nil))
		return
	}
	if !p.openTunnel(c) { // connect.go
		p.fail(c, w, r, newError(ErrUnavailable, target, tunnelsReason, nil))
		return
	}
	defer p.closeTunnel()
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "protocol upgrade needs an HTTP/1.1 client connection", err))
		return
	}
	h := make(http.Header, len(resp.Header)+2)
	filterHeader(h, resp.Header, c.via.forProto(resp.ProtoMajor, resp.ProtoMinor))
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{got}
	_ = client.SetDeadline(time.Time{})
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		client.Close()
		return
	}
	p.runTunnel(c, r.WithContext(out.Context()), client, readAhead(brw), upConn) // the user, for Reload
}

// fail answers the client with e's status and reason and logs it.
func (p *Proxy) fail(c *config, w http.ResponseWriter, r *http.Request, e *Error) {
	p.noteFailure(r, e) // telemetry.go: Stats, span error type, denials
	p.logFailure(r, e, "request refused")
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Via"] = []string{c.via.forProto(r.ProtoMajor, r.ProtoMinor)}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, e.Reason+"\n")
}

// logFailure gives a refusal or failure its one log record. With the access
// log on, that is the request's access record, which endRequest writes
// with e's reason (logAccess); otherwise it is a Warn line with message
// msg. The first failure of a request is the one reported.
func (p *Proxy) logFailure(r *http.Request, e *Error, msg string) {
	if rs := reqStateFrom(r.Context()); rs != nil && rs.logging {
		if rs.failure == nil {
			rs.failure = e
		}
		return
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

// dial is the one function through which every upstream connection is made:
// the shared transport's, CONNECT tunnels' and intercepted connections'. It
// dials under the configuration of the request it dials for, which admit
// put in ctx (dialPolicy).
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	pol := p.dialPolicyFrom(ctx) // access.go
	// The request's WithDialTimeout bounds the whole dial, DNS included,
	// as the context's deadline (p.dialer has no timeout of its own).
	ctx, cancel := context.WithTimeout(ctx, pol.cfg.dialTimeout)
	defer cancel()
	host, port, err := httpx.ParseTarget(addr)
	if err != nil {
		return nil, newError(ErrMalformed, addr, "bad upstream address "+strconv.Quote(addr)+": "+err.Error(), err)
	}
	res := pol.cfg.up.resolver // upstream.go
	var ips []netip.Addr
	if ip, isIP := policy.ParseHost(host); isIP {
		ips = []netip.Addr{ip.WithZone("")}
	} else if ips, err = p.lookup(ctx, res, host); err != nil { // reload.go
		return nil, err
	}
	if ips, err = p.vet(ctx, pol, addr, host, port, ips); err != nil {
		return nil, err
	}
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	for _, ip := range ips {
		if isSelf(local, ip.Unmap(), port) {
			return nil, newError(ErrLoop, addr, "request loop: "+addr+" is this proxy's own address", nil)
		}
	}
	return res.dialAddrs(ctx, &p.dialer, network, ips, port)
}

// isSelf reports whether dialing ip:port would reach the listener that
// accepted the client's connection (local).
func isSelf(local net.Addr, ip netip.Addr, port uint16) bool {
	ta, ok := local.(*net.TCPAddr)
	if !ok || ta.Port != int(port) {
		return false
	}
	if ip.IsUnspecified() {
		return true
	}
	la, ok := netip.AddrFromSlice(ta.IP)
	return ok && la.Unmap() == ip
}
