package fwdproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// The upstream chain. roundTrip is the router: it decides once per request
// (route) whether the own HTTP/1.1 transport (internal/h1, built in pool.go)
// or the shared http.Transport sends it, and send does; when telemetry
// follows the request, its client-side wrapper (observeRoundTrip,
// telemetry.go) goes around send. Both transports dial through the one
// Dialer, dial: resolver → address guard → Happy Eyeballs dial.

// Buffer sizes for the upstream connections. Larger buffers than Go's 4 KiB
// default cut the number of read and write system calls on large bodies.
const (
	upstreamReadBufferSize  = 32 << 10
	upstreamWriteBufferSize = 32 << 10
)

// newTransport builds the upstream transport that requests share, with the
// settings of c: it serves every configuration that leaves those settings
// unchanged, with its pool (upstream.go). Every connection it opens goes through
// p.dial, so the resolver, the address guard and loop detection apply to
// all of them, under the dialing request's configuration.
func (p *Proxy) newTransport(c *config) *http.Transport {
	t := &http.Transport{
		DialContext:            p.dial,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           c.maxIdleConns,
		MaxIdleConnsPerHost:    c.maxIdleConnsPerHost,
		IdleConnTimeout:        c.idleConnTimeout,
		TLSHandshakeTimeout:    c.tlsHandshakeTimeout,
		ResponseHeaderTimeout:  c.responseHeaderTimeout,
		MaxResponseHeaderBytes: int64(c.maxResponseHeader),
		ExpectContinueTimeout:  c.expectContinueTimeout,
		DisableCompression:     true, // a proxy passes bodies through untouched
		ReadBufferSize:         upstreamReadBufferSize,
		WriteBufferSize:        upstreamWriteBufferSize,
		TLSClientConfig:        upstreamTLSConfig(c.upstreamRoots),
	}
	if c.proxyFromEnvironment {
		t.Proxy = http.ProxyFromEnvironment
	} else {
		proxies.ConfigureTransport(t) // a request whose context names an upstream proxy goes through it (via.go)
	}
	return t
}

// roundTrip sends out upstream and returns the response. It is the router
// of the upstream chain: it decides once (route) whether the own
// HTTP/1.1 transport (pool.go) or the shared http.Transport takes out, and
// when telemetry follows the request it hands that decision to the
// client-side measurement (observeRoundTrip, telemetry.go), which sends out
// through send. c is the request's configuration.
func (p *Proxy) roundTrip(c *config, out *http.Request) (*http.Response, error) {
	p.stats.upRequests.Add(1)
	if c.routing != nil {
		return p.roundTripRouted(c, out) // via.go: the routes (WithUpstreams, WithPAC)
	}
	h := p.route(c, out)
	if rs := reqStateFrom(out.Context()); rs != nil {
		return p.observeRoundTrip(c, rs, out, h)
	}
	return p.send(c, out, h, nil)
}

// route reports whether out, sent directly, takes the fast path (the own
// HTTP/1.1 transport, pool.go) and, if so, the "host:port" to dial. A
// request hook may have broken what the server checked; such a request is
// left to http.Transport, which reports it.
func (p *Proxy) route(c *config, out *http.Request) hop {
	if c.proxyFromEnvironment {
		return hop{}
	}
	key, ok := h1.CanSend(out)
	if !ok || (len(c.requestHooks) > 0 && !h1.ValidRequest(out)) {
		return hop{}
	}
	return hop{addr: key, fast: true}
}

// send sends out on the hop the router chose (via.go): the own transport
// when fast, to addr or through the HTTP proxy h.via, which reports the
// upstream connection to obs (when not nil), or the shared transport,
// directly or through h.via.
func (p *Proxy) send(c *config, out *http.Request, h hop, obs h1.ConnObserver) (resp *http.Response, err error) {
	switch {
	case h.fast && h.via == nil:
		resp, err = c.up.h1.Send(out, h.addr, obs) // upstream.go: the configuration's transports
	case h.fast:
		resp, err = c.up.h1.SendVia(out, h.via.Attached().(*h1.Via), obs)
	default:
		if h.via != nil {
			out = out.WithContext(proxies.NewContext(out.Context(), h.via)) // see proxies.ConfigureTransport
		}
		noDefaultUserAgent(out)
		resp, err = c.up.transport.RoundTrip(out)
	}
	if err != nil {
		if over, h2 := responseHeadTooLarge(err); over || h2 {
			target := out.URL.Host
			limit := strconv.Itoa(c.maxResponseHeader) + " bytes (the WithMaxResponseHeaderBytes limit)"
			reason := "upstream " + target + " sent a response header over " + limit
			if h2 {
				reason = "upstream " + target + " broke the HTTP/2 protocol, or sent a response header over " + limit
			}
			err = newError(ErrUpstream, target, reason, err)
		}
	}
	return resp, err
}

// responseHeadTooLarge reports whether err is a response head over
// WithMaxResponseHeaderBytes (over): the own transport's error, or one of
// http.Transport's, which has no error value for it, so its messages are
// matched (TestResponseHeaderLimit checks them). Over HTTP/2 a head that
// passes the limit by more than a frame ends the connection with a
// PROTOCOL_ERROR that tells nothing more; h2 reports such an error.
func responseHeadTooLarge(err error) (over, h2 bool) {
	if errors.Is(err, h1.ErrResponseHeadTooLarge) {
		return true, false
	}
	s := err.Error()
	if strings.Contains(s, "server response headers exceeded") || // HTTP/1
		strings.Contains(s, "response header list larger than advertised limit") { // HTTP/2, within a frame
		return true, false
	}
	return false, strings.Contains(s, "connection error: PROTOCOL_ERROR")
}

// noDefaultUserAgent keeps http.Transport from adding its own User-Agent
// ("Go-http-client/1.1") to a request that has none: a proxy passes what
// came. Its HTTP/1 and HTTP/2 writers both send no User-Agent for a key
// present with no value. (The fast path's writeRequest adds none anyway.)
func noDefaultUserAgent(out *http.Request) {
	if _, ok := out.Header["User-Agent"]; ok {
		return
	}
	if out.Header == nil {
		out.Header = make(http.Header, 1)
	}
	out.Header["User-Agent"] = nil
}

// dial is the one function through which every upstream connection is made:
// the shared transport's, CONNECT tunnels' and intercepted connections'. It
// dials under the configuration of the request it dials for, which admit
// put in ctx (dialPolicy).
//
// A tunnel's dial (the dialing request is a CONNECT, whichever front end
// took it) follows the routes of its configuration, when it has any
// (dialRouted, via.go); every other dial, and DIRECT, is dialDirect.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if pol := p.dialPolicyFrom(ctx); pol.connect && pol.cfg.routing != nil {
		return p.dialRouted(ctx, pol, network, addr)
	}
	return p.dialDirect(ctx, network, addr)
}

// dialDirect dials addr itself: resolver → address guard → Happy Eyeballs.
func (p *Proxy) dialDirect(ctx context.Context, network, addr string) (net.Conn, error) {
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
	start := time.Now()
	if ip, isIP := policy.ParseHost(host); isIP {
		ips = []netip.Addr{ip.WithZone("")}
	} else if ips, err = p.lookup(ctx, res, host); err != nil { // reload.go
		return nil, err
	}
	looked := time.Now()
	if ips, err = p.vet(ctx, pol, addr, host, port, ips); err != nil {
		return nil, err
	}
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	for _, ip := range ips {
		if isSelf(local, ip.Unmap(), port) {
			return nil, newError(ErrLoop, addr, "request loop: "+addr+" is this proxy's own address", nil)
		}
	}
	conn, err := res.dialAddrs(ctx, &p.dialer, network, ips, port)
	p.dialed(ctx, pol, start, looked, err) // telemetry.go: Stats, the flow's phases
	return conn, err
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

// upstreamTLSConfig verifies upstream certificates against the system roots
// and, when given, the extra roots: crypto/tls checks one pool only, so the
// extra pool is tried in VerifyConnection when the system roots fail.
func upstreamTLSConfig(extra *x509.CertPool) *tls.Config {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if extra == nil {
		return conf
	}
	// Verification moves from the handshake's built-in check into
	// VerifyConnection, which fails the handshake unless a pool accepts the
	// chain for the server name; it is not skipped.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("upstream sent no certificate")
		}
		opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		_, sysErr := leaf.Verify(opts) // nil Roots: the system pool
		if sysErr == nil {
			return nil
		}
		opts.Roots = extra
		if _, err := leaf.Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	return conf
}
