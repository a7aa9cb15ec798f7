package fwdproxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/park"
	"github.com/fwdproxy/fwdproxy/internal/telemetry"
	"github.com/fwdproxy/fwdproxy/internal/throttle"
)

// servedPerProc is how many keep-alive connections a processor serves at
// once, at least, when more are open: the floor of internal/park's limit,
// which grows while processors are left idle (requests waiting on their
// upstreams) and does not count requests that run long. At 1,000 busy
// connections it halved the proxy's peak memory and, with a processor of
// its own, served 39 % more requests a second than no limit
// (docs/benchmarks.md, "Issue 16").
const servedPerProc = 64

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

	dialer      net.Dialer    // keep-alive only: each dial's timeout is its request's (dial)
	viaSeq      atomic.Uint64 // numbers the upstream proxies' connection pools (route.go)
	conns       atomic.Int64  // client connections open in Serve, against the snapshot's maxConns
	tunnelsOpen atomic.Int64  // tunnels admitted, against the snapshot's maxTunnels (connect.go)
	quotas      *quotaState   // the policies' in-memory state, meters and counters (userpolicy.go)
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
	tunnels  map[trackedTunnel]struct{}
	tunnelWG sync.WaitGroup

	// Idle client connections and tunnel directions wait here without a
	// goroutine each (internal/park; Linux only): the loops' keep-alive
	// connections between requests, and the parked tunnels
	// (tunnelpark_linux.go), whose running directions splice through
	// pipes.
	parker *park.Parker
	pipes  pipePool
	// The other front ends (front.go, socks.go): what Serve, ServeTLS and
	// ServeSOCKS run, the ServeSOCKS listeners and the SOCKS connections
	// being served.
	listening listeners
	socksLns  map[*socksListener]struct{}
	socks     socksConns
	socksLog  throttle.Lines
	tlsLog    throttle.Lines // failed TLS handshakes of ServeTLS (front.go)
	// closedDenied is the last reload that closed the tunnels its
	// configuration refuses (WithReloadClosesDeniedTunnels, reload.go).
	closedDenied *deniedCheck

	// Telemetry (telemetry.go, accesslog.go, stats.go).
	tel       *telemetry.Telemetry
	stats     proxyStats
	logq      *lazyAsync
	upMetrics upstreamMetrics // routestats.go

	// The open Admin's recorder, nil when none is (admin.go, flowrec.go),
	// and Serve's listeners for its /readyz.
	rec        atomic.Pointer[recorder]
	serving    atomic.Int32 // Serve and ServeTLS calls running
	servedOnce atomic.Bool
}

// New returns a Proxy configured by opts. With no options it is a working,
// safe proxy with the defaults documented on each option. Reload replaces
// the configuration of a running Proxy.
func New(opts ...Option) (*Proxy, error) {
	p := &Proxy{base: defaultSettings(randomPseudonym()), quotas: newQuotaState()}
	c, err := buildConfig(p.base, opts) // options.go
	if err != nil {
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if p.log = c.logger; p.log == nil {
		p.log = slog.Default()
	}
	p.dialer = net.Dialer{KeepAlive: 30 * time.Second}
	p.parker = park.New()
	// Keep-alive connections past the limit take turns (internal/park:
	// SetLimit), so a thousand busy clients hold goroutines, buffers and
	// upstream connections for the ones being served, not for all.
	p.parker.SetLimit(servedPerProc * runtime.GOMAXPROCS(0))
	if c.up, err = p.firstUpstream(c); err != nil { // upstream.go: the transports and the resolver
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if err := p.attachRouting(nil, c); err != nil { // route.go: the upstream proxies
		c.up.close()
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	p.describe(c, nil) // reload.go: generation 1, its hash
	p.retired = make(map[*retired]struct{})
	p.servers = make(map[*http.Server]struct{})
	p.loops = make(map[*h1.Server]struct{})
	p.socksLns = make(map[*socksListener]struct{})
	p.tunnels = make(map[trackedTunnel]struct{})
	if err := p.initTelemetry(c); err != nil { // telemetry.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if err := p.initReloadMetrics(c); err != nil { // reload.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	if err := p.initUpstreamMetrics(c); err != nil { // routestats.go
		return nil, fmt.Errorf("fwdproxy.New: %w", err)
	}
	_ = p.netServers(nil, c)  // reload.go: the hand-off and interception servers, which log through p.log as initTelemetry made it
	p.swap(c)                 // config.go: the first configuration, complete
	c.routing.startProbing(c) // route.go: WithUpstreamProbe
	return p, nil
}

// The pipeline, top to bottom. Every request the front ends (internal/h1's
// loop, net/http, the interception front end) take goes through
// ServeHTTP, or through serveIntercepted for requests inside an intercepted
// CONNECT, and from there through observe (telemetry.go: the one
// server-side middleware) to dispatch:
//
//	ServeHTTP → observe → dispatch ┬→ forward: admit → hooks → route → roundTrip → respond
//	                               └→ serveConnect (connect.go): admit → hooks → dial | intercept → accept → tunnel
//
// admit is access.go, hooks hooks.go, route and roundTrip transport.go
// (the router, the client-side telemetry wrapper, the upstream transports,
// the Dialer), respond respond.go, the header rules header.go.

// ServeHTTP serves a request: CONNECT opens a tunnel, an absolute-form
// request goes upstream, anything else to the fallback handler (or 400).
// It loads the configuration in force once; the request keeps it to its
// end. An HTTP/2 request for another host is made absolute-form first
// (h2.go), so that the access record, the span and the metrics name its
// target and URL as they do over HTTP/1.1.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor >= 2 && r.Method != http.MethodConnect && !r.URL.IsAbs() && proxiedOverH2(r) {
		r = absoluteH2(r)
	}
	p.observe(p.cfg.Load(), w, r, p.dispatch) // telemetry.go: spans, metrics, access log, Stats
}

// dispatch sends a request where it belongs: CONNECT to a tunnel (an
// extended CONNECT to a WebSocket), absolute-form requests (and HTTP/2
// requests for another host) upstream, anything else to the fallback
// handler (or 400). A request on a connection past WithMaxConns gets 503.
// A CONNECT tunnel that outlives its handler returns the request's end,
// for observe (telemetry.go) to end the request when the tunnel ends.
func (p *Proxy) dispatch(c *config, w http.ResponseWriter, r *http.Request) *requestEnd {
	if r.Context().Value(ctxKeyOverLimit{}) != nil {
		w.Header()["Connection"] = []string{"close"}
		p.fail(c, w, r, newError(ErrUnavailable, r.Host, tooManyConnsReason, nil))
		return nil
	}
	switch {
	case r.Method == http.MethodConnect:
		if extendedConnect(r) {
			p.serveExtendedConnect(c, w, r) // h2.go: a WebSocket over HTTP/2
			return nil
		}
		return p.serveConnect(c, w, r) // connect.go
	case r.URL.IsAbs(): // HTTP/2 requests for another host too (ServeHTTP)
		p.forward(c, w, r)
	case c.fallback != nil:
		c.fallback.ServeHTTP(w, r)
	default:
		p.fail(c, w, r, newError(ErrMalformed, "",
			"this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port", nil))
	}
	return nil
}

// forwardOnly is forward as observe's next: a forwarded request ends with
// its handler.
func (p *Proxy) forwardOnly(c *config, w http.ResponseWriter, r *http.Request) *requestEnd {
	p.forward(c, w, r)
	return nil
}

// forward is the one request path: plain HTTP requests, and (with
// interception) decrypted HTTPS requests, all pass through it, each under
// its configuration c.
func (p *Proxy) forward(c *config, w http.ResponseWriter, r *http.Request) {
	// Admit: a valid target, no framing look-alikes, access control, no loop.
	target := r.URL.Host
	host, port, err := httpx.CheckURL(r.URL)
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "bad request target "+strconv.Quote(r.URL.String())+": "+err.Error(), err))
		return
	}
	if e := checkLookAlikes(r.Header, target); e != nil { // header.go
		p.fail(c, w, r, e)
		return
	}
	ctx, ok := p.admit(c, w, r, target, host, port, false) // access.go
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

	// The request sent upstream, its body watched.
	out := outboundRequest(ctx, c, r) // header.go
	lb, _ := out.Body.(*limitedBody)
	var body *clientBody // taken now: a hook may replace out.Body
	match := policyIf(ctx, c)
	var metered *meteredBody // the request body against the byte quota (userpolicy.go)
	if out.Body != http.NoBody && out.Body != nil {
		if match != nil && match.meter != nil {
			metered = &meteredBody{ReadCloser: out.Body, m: match.meter}
			out.Body = metered
		}
		body = watchRequestBody(c.bodyIdleTimeout, w, out.Body) // bodyidle.go
		body.counted = &p.stats.reqBytes
		defer body.w.Stop()
		out.Body = body
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodOptions {
		if answered := maxForwards(c, w, r, out); answered {
			return
		}
	}

	// Hooks, then route and round trip, unless a hook answered.
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
			if metered != nil && metered.cut.Load() {
				p.logCut(ctx, match, target, r.RemoteAddr)
				p.fail(c, w, r, denied(ErrRateLimited, "quota_bytes", target, "byte quota reached during the request body: policy "+
					strconv.Quote(match.pol.Name)+" allows "+strconv.FormatInt(match.pol.BytesPerDay, 10)+" bytes a day per user"))
				return
			}
			p.roundTripFailed(c, w, r, body, lb, err) // respond.go
			return
		}
	}

	// Respond: a protocol switch becomes a tunnel; any other response goes
	// through the response hooks to the client.
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
		p.relayUpgrade(c, w, r, out, resp) // respond.go
		return
	}
	if e := runResponseHooks(ctx, c.responseHooks, target, resp); e != nil { // hooks.go
		p.fail(c, w, r, e)
		return
	}
	if match != nil && match.meter != nil && resp.Body != http.NoBody {
		resp.Body = &meteredBody{ReadCloser: resp.Body, m: match.meter} // userpolicy.go
	}
	p.writeResponse(c, w, r, resp) // respond.go
}
