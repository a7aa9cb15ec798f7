package fwdproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	"golang.org/x/sync/semaphore"
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
	cfg          config
	transport    *http.Transport
	h1           *h1.Transport // the own HTTP/1.1 transport and its pool (pool.go)
	h1tr         h1.TransportSettings
	h1srv        h1.ServerSettings // Serve's loops' (server.go)
	dialer       net.Dialer
	resolver     *Resolver
	ownsResolver bool
	guard        *policy.PrefixSet // ranges WithAllowedCIDRs opens
	rules        *policy.Rules
	limiter      *policy.RateLimiter // nil without WithRateLimit
	tunnelSem    *semaphore.Weighted
	conns        atomic.Int64 // client connections open in Serve
	via          viaValues
	log          *slog.Logger

	mu       sync.Mutex
	closing  bool
	servers  map[*http.Server]struct{}
	loops    map[*h1.Server]struct{} // Serve's own loops (internal/h1)
	tunnels  map[*tunnel]struct{}
	tunnelWG sync.WaitGroup

	// Telemetry (telemetry.go, accesslog.go, stats.go).
	tel   telemetry
	stats proxyStats
	logq  *lazyAsync
}

// New returns a Proxy configured by opts. With no options it is a working,
// safe proxy with the defaults documented on each option.
func New(opts ...Option) (*Proxy, error) {
	p := &Proxy{cfg: defaultConfig()}
	var errs []error
	for _, o := range opts {
		if o == nil {
			errs = append(errs, errors.New("nil Option"))
			continue
		}
		if err := o(&p.cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("fwdproxy.New: %w", errors.Join(errs...))
	}
	if p.cfg.pseudonym == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		p.cfg.pseudonym = "fwdproxy-" + hex.EncodeToString(b[:])
	}
	p.log = p.cfg.logger
	if p.log == nil {
		p.log = slog.Default()
	}
	p.via = newViaValues(p.cfg.pseudonym)
	if p.resolver = p.cfg.resolver; p.resolver == nil {
		var ropts []ResolverOption
		if len(p.cfg.dnsServers) > 0 {
			ropts = append(ropts, DNSServers(p.cfg.dnsServers...))
		}
		r, err := NewResolver(ropts...)
		if err != nil {
			return nil, fmt.Errorf("fwdproxy.New: %w", err)
		}
		p.resolver, p.ownsResolver = r, true
	}
	var err error
	if p.guard, err = policy.NewPrefixSet(p.cfg.allowedCIDRs...); err != nil {
		return nil, fmt.Errorf("fwdproxy.New: WithAllowedCIDRs: %w", err)
	}
	rules := p.cfg.rules
	rules.ConnectPortHint = connectPortHint
	if p.rules, err = policy.NewRules(rules); err != nil {
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if p.cfg.rate > 0 {
		if p.limiter, err = policy.NewRateLimiter(p.cfg.rate, p.cfg.burst, rateLimitClients); err != nil {
			return nil, fmt.Errorf("fwdproxy.New: WithRateLimit: %w", err)
		}
	}
	p.tunnelSem = semaphore.NewWeighted(int64(p.cfg.maxTunnels))
	p.dialer = net.Dialer{Timeout: p.cfg.dialTimeout, KeepAlive: 30 * time.Second}
	p.transport = p.newTransport()
	p.h1 = p.newH1Transport() // pool.go
	p.h1srv = newServerSettings(&p.cfg)
	p.servers = make(map[*http.Server]struct{})
	p.loops = make(map[*h1.Server]struct{})
	p.tunnels = make(map[*tunnel]struct{})
	if err := p.initTelemetry(); err != nil { // telemetry.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	p.initInterception() // TLS interception, if enabled (intercept.go)
	return p, nil
}

// ServeHTTP dispatches a request: CONNECT to a tunnel, absolute-form
// requests upstream, anything else to the fallback handler (or 400).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer p.endRequest(p.beginRequest(&w, &r)) // telemetry.go: spans, metrics, access log, Stats
	if r.Context().Value(ctxKeyOverLimit{}) != nil {
		w.Header()["Connection"] = []string{"close"}
		p.fail(w, r, newError(ErrUnavailable, r.Host, tooManyConnsReason, nil))
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(w, r)
	case r.URL.IsAbs():
		p.forward(w, r)
	case p.cfg.fallback != nil:
		p.cfg.fallback.ServeHTTP(w, r)
	default:
		p.fail(w, r, newError(ErrMalformed, "",
			"this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port", nil))
	}
}

// forward is the one request path: plain HTTP requests, and (with
// interception) decrypted HTTPS requests, all pass through it.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Host
	host, port, err := httpx.CheckURL(r.URL)
	if err != nil {
		p.fail(w, r, newError(ErrMalformed, target, "bad request target "+strconv.Quote(r.URL.String())+": "+err.Error(), err))
		return
	}
	if e := checkLookAlikes(r.Header, target); e != nil {
		p.fail(w, r, e)
		return
	}
	ctx, ok := p.admit(w, r, target, host, port, false)
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
	if p.seenBefore(r.Header["Via"]) {
		p.fail(w, r, newError(ErrLoop, target, "request loop: the request already passed through this proxy", nil))
		return
	}
	out := p.outboundRequest(ctx, r)
	lb, _ := out.Body.(*limitedBody)
	var body *clientBody // taken now: a hook may replace out.Body
	if out.Body != http.NoBody && out.Body != nil {
		body = p.watchRequestBody(w, out.Body) // bodyidle.go
		defer body.w.Stop()
		out.Body = body
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodOptions {
		if answered := p.maxForwards(w, r, out); answered {
			return
		}
	}
	resp, err := p.runRequestHooks(ctx, target, out)
	if err != nil {
		p.fail(w, r, asError(target, err))
		return
	}
	if resp == nil {
		if r.ProtoMajor == 1 && r.ContentLength != 0 {
			// Let the upstream stream its response while the request body
			// is still arriving (echo, bidirectional streaming).
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
		resp, err = p.roundTrip(out) // transport.go: the router, then the client span (telemetry.go) around send
		if err != nil {
			if body != nil && body.w.hasFired() {
				// Checked first: the server cancels the request's context
				// when the interrupted read fails.
				w.Header()["Connection"] = []string{"close"} // the rest of the body is still unread
				p.fail(w, r, newError(ErrClientTimeout, target, "the request body stalled: no byte from the client for "+
					p.cfg.bodyIdleTimeout.String()+bodyIdleHint, nil))
				return
			}
			if lb != nil && lb.over.Load() {
				p.fail(w, r, newError(ErrTooLarge, target, "request body is over the limit of "+
					strconv.FormatInt(p.cfg.maxBodyBytes, 10)+" bytes", nil))
				return
			}
			if ctx.Err() != nil {
				p.logClientGone(r, err)
				return
			}
			if bodyErr := body.failed(); bodyErr != nil {
				// The client's fault, not the upstream's: a malformed
				// chunked body, or one cut short.
				p.fail(w, r, newError(ErrMalformed, target, "reading the request body failed: "+bodyErr.Error(), bodyErr))
				return
			}
			p.fail(w, r, asError(target, err))
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
		p.relayUpgrade(w, r, out, resp)
		return
	}
	if err := p.runResponseHooks(ctx, target, resp); err != nil {
		p.fail(w, r, asError(target, err))
		return
	}
	p.writeResponse(w, r, resp)
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
func (p *Proxy) outboundRequest(ctx context.Context, r *http.Request) *http.Request {
	out := r.WithContext(ctx)
	out.RequestURI = ""
	out.Close = false
	out.Header = p.outboundHeader(r)
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		out.Body = http.NoBody
		return out
	}
	if p.cfg.maxBodyBytes > 0 && r.ContentLength < 0 {
		out.Body = &limitedBody{ReadCloser: r.Body, left: p.cfg.maxBodyBytes}
	}
	return out
}

// maxForwards applies Max-Forwards to TRACE and OPTIONS (RFC 9110 §7.6.2):
// at 0 the proxy answers itself, otherwise the value is decremented.
func (p *Proxy) maxForwards(w http.ResponseWriter, r *http.Request, out *http.Request) (answered bool) {
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
	h["Via"] = []string{p.via.forProto(r.ProtoMajor, r.ProtoMinor)}
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

// seenBefore reports whether a Via field lists this proxy's pseudonym as a
// recipient: the request has come around in a loop.
func (p *Proxy) seenBefore(via []string) bool {
	found := false
	httpx.Tokens(via, func(entry string) bool {
		// entry: received-protocol SP received-by [SP comment]
		if i := strings.IndexAny(entry, " \t"); i >= 0 {
			by := strings.TrimLeft(entry[i+1:], " \t")
			if j := strings.IndexAny(by, " \t"); j >= 0 {
				by = by[:j]
			}
			found = strings.EqualFold(by, p.cfg.pseudonym)
		}
		return !found
	})
	return found
}

// writeResponse sends an upstream (or hook-made) response to the client,
// streaming its body and passing trailers on.
func (p *Proxy) writeResponse(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	var h http.Header
	via := p.via.forProto(resp.ProtoMajor, resp.ProtoMinor)
	if a, ok := w.(h1.HeaderAdopter); ok && a.AdoptHeader(resp.Header) {
		h = resp.Header // Serve's loop: the upstream's map becomes the client's
		filterHeaderInPlace(h, via)
	} else {
		h = w.Header()
		filterHeader(h, resp.Header, via)
	}
	if len(p.cfg.responseHooks) > 0 || len(p.cfg.requestHooks) > 0 {
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
	watch := p.watchResponseBody(resp.Body) // bodyidle.go; nil when the body is all in memory
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
				p.cfg.bodyIdleTimeout.String()+"; client connection cut"+bodyIdleHint, readErr), "upstream body stalled mid-stream")
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
func (p *Proxy) relayUpgrade(w http.ResponseWriter, r *http.Request, out *http.Request, resp *http.Response) {
	target := r.URL.Host
	want, got := upgradeType(out.Header), upgradeType(resp.Header)
	if want == "" || !strings.EqualFold(want, got) {
		p.fail(w, r, newError(ErrUpstream, target, fmt.Sprintf("upstream %s switched to protocol %q, not the requested %q", target, got, want), nil))
		return
	}
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		p.fail(w, r, newError(ErrUpstream, target, "upstream "+target+" switched protocols on a connection that cannot be relayed", nil))
		return
	}
	if !p.tunnelSem.TryAcquire(1) {
		p.fail(w, r, newError(ErrUnavailable, target, tunnelsReason, nil))
		return
	}
	defer p.tunnelSem.Release(1)
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.fail(w, r, newError(ErrMalformed, target, "protocol upgrade needs an HTTP/1.1 client connection", err))
		return
	}
	h := make(http.Header, len(resp.Header)+2)
	filterHeader(h, resp.Header, p.via.forProto(resp.ProtoMajor, resp.ProtoMinor))
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
	p.runTunnel(r, client, readAhead(brw), upConn)
}

// fail answers the client with e's status and reason and logs it.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, e *Error) {
	p.noteFailure(r, e) // telemetry.go: Stats, span error type, denials
	p.logFailure(r, e, "request refused")
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Via"] = []string{p.via.forProto(r.ProtoMajor, r.ProtoMinor)}
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
// the shared transport's, CONNECT tunnels' and intercepted connections'.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.dialTimeout)
	defer cancel()
	host, port, err := httpx.ParseTarget(addr)
	if err != nil {
		return nil, newError(ErrMalformed, addr, "bad upstream address "+strconv.Quote(addr)+": "+err.Error(), err)
	}
	var ips []netip.Addr
	if ip, isIP := policy.ParseHost(host); isIP {
		ips = []netip.Addr{ip.WithZone("")}
	} else if ips, err = p.resolver.LookupNetIP(ctx, host); err != nil {
		return nil, err
	}
	if ips, err = p.vet(ctx, addr, host, port, ips); err != nil {
		return nil, err
	}
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	for _, ip := range ips {
		if isSelf(local, ip.Unmap(), port) {
			return nil, newError(ErrLoop, addr, "request loop: "+addr+" is this proxy's own address", nil)
		}
	}
	return p.resolver.dialAddrs(ctx, &p.dialer, network, ips, port)
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
