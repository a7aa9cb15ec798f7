package fwdproxy

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	"github.com/fwdproxy/fwdproxy/internal/telemetry"
)

// ErrShutDown is Reload's error once Shutdown has begun.
var ErrShutDown = errors.New("fwdproxy: the Proxy is shut down")

// Reload replaces the Proxy's configuration with the one opts make, without
// closing a connection. opts are the options New takes, applied, as New
// applies them, to the same defaults (with the Via pseudonym New chose,
// unless WithVia is among them): the configuration is made whole from opts,
// not from the one in force, so an option left out returns to its default.
// It is validated whole, and put in force with one atomic store.
//
// Requests and tunnels that started before keep the configuration they
// started with to their end; every one that starts after Reload returns
// gets the new one. Open tunnels are not cut, unless
// WithReloadClosesDeniedTunnels is among opts.
//
// What changes live, for the next request or tunnel: the access rules
// (WithDenyHosts, WithAllowHosts, WithAllowPorts, WithAllowPrivate,
// WithAllowedCIDRs, WithReportOnly), authentication (WithBasicAuth,
// WithAuthenticator), the hooks, the limits (WithMaxConns, WithMaxTunnels,
// counted against what is already open; WithMaxRequestBodyBytes,
// WithRateLimit, whose per-client state is kept when the rate and burst
// stay the same), the timeouts, WithVia, WithFallback, WithCapture,
// WithLogger (records already queued go to the logger they were logged
// for), interception (on, off, its bypass list and function; the minted
// certificates are kept when the CA and the certificate store stay the
// same), the upstream settings, the routes through upstream proxies
// (WithUpstreams, WithPAC, WithUpstreamResolvesNames, WithUpstreamProbe: an
// upstream whose URL is the same keeps its health and pooled connections, a
// PAC file that is the same its cache; the probes of the configuration
// replaced stop), the resolver (its options, or WithResolver), and the front
// ends' settings (options_front.go: the TLS certificate and client CAs for
// the next handshake, the PROXY protocol's trusted ranges and SOCKS5 on the
// HTTP listener for the next connection, the HTTP/2 settings for the next
// HTTP/2 connection). The client-side settings (WithReadHeaderTimeout,
// WithClientIdleTimeout, WithMaxHeaderBytes) apply to the next request or
// keep-alive wait of a connection Serve's own loop serves, and to the
// connections handed to net/http or intercepted from then on; one that
// net/http already serves keeps the values it started with, as a tunnel
// does.
//
// The upstream transports and their pools are kept while their settings,
// the resolver's and the rules that vet upstream addresses stay the same.
// When one of those changes, new requests get new transports (and, when the
// resolver's settings changed, a new Resolver, which reads its resolv.conf
// file anew), so that no pooled connection made under the old settings, or
// to an address that the old rules or servers gave, serves them. Requests
// already running finish on the old ones, whose connections are closed as
// they come back; the Proxy's own old Resolver is closed once no dial can
// still be using it (after the dial timeout).
//
// What cannot change while the Proxy runs, and is refused: WithTracerProvider,
// WithMeterProvider and WithPropagator (the instruments and the tracer are
// made from them once), and WithLogQueueSize (the log queue is made once).
// Giving the values New was given again is no change. Nor can a
// configuration leave out WithTLS while ServeTLS runs, or bring in
// WithProxyProtocol while a listener runs that was started without it.
//
// An invalid configuration, or one that changes what cannot change, makes
// Reload return an error naming the option at fault; the configuration in
// force stays and nothing of the new one is applied. Reloads and failed
// reloads are counted (Stats.Config). A reload that succeeds logs one line
// naming what changed (option names and, but for secrets, old and new
// values); one that fails logs nothing, as its error goes to the caller,
// who knows where the options came from (the example server logs it with
// the configuration file's line at fault). Concurrent calls are
// serialised. After Shutdown has begun, Reload returns ErrShutDown.
func (p *Proxy) Reload(opts ...Option) error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	old := p.cfg.Load()
	c, err := p.reload(old, opts)
	if err != nil {
		p.reloads.failed.Add(1)
		return fmt.Errorf("fwdproxy.Reload: %w", err)
	}
	p.reloads.ok.Add(1)
	msg := "configuration reloaded"
	changed := changes(old.meta.desc, c.meta.desc)
	if len(changed) == 0 {
		msg = "configuration reloaded, unchanged"
	}
	p.log.LogAttrs(context.Background(), slog.LevelInfo, msg,
		slog.Uint64("generation", c.meta.gen), slog.String("hash", c.meta.hash),
		slog.String("changed", strings.Join(changed, "; ")))
	if c.reloadClosesDenied {
		p.closeDeniedTunnels(old, c)
	}
	return nil
}

// reload makes the configuration opts describe, after old, and puts it in
// force. Called with reloadMu held.
func (p *Proxy) reload(old *config, opts []Option) (*config, error) {
	if p.isClosing() {
		return nil, ErrShutDown
	}
	c, err := buildConfig(p.base, opts) // options.go
	if err != nil {
		return nil, err
	}
	if err := p.prepare(old, c); err != nil {
		return nil, err
	}
	if p.logq != nil && c.logger != old.logger {
		p.logq.setNext(loggerOf(c).Handler()) // accesslog.go
	}
	p.swap(c)
	p.retireUpstream(old.up, c.up, old.dialTimeout) // upstream.go
	old.routing.stopProbing()                       // route.go
	c.routing.startProbing(c)
	return c, nil
}

// prepare completes c, built by buildConfig to follow old: it refuses what
// cannot change, hands on what old has that c can keep (the rate limiter's
// state, the minted certificates, the upstream), builds what changed, and
// describes c. Nothing is in force yet: on error, what it built is
// released.
func (p *Proxy) prepare(old, c *config) error {
	if err := unchangeable(old, c); err != nil {
		return err
	}
	if err := p.frontChangeAllowed(old, c); err != nil { // front.go
		return err
	}
	if c.limiter != nil && old.limiter != nil && c.rate == old.rate && c.burst == old.burst {
		c.limiter = old.limiter // the clients' buckets go on
	}
	if c.intercept != nil && old.intercept != nil && sameIssuer(old.interception, c.interception) {
		c.intercept.issuer, c.intercept.tlsConf = old.intercept.issuer, old.intercept.tlsConf
	}
	if err := p.netServers(old, c); err != nil {
		return err
	}
	up, err := p.planUpstream(old, c) // upstream.go
	if err != nil {
		return err
	}
	c.up = up
	if err := p.attachRouting(old, c); err != nil { // route.go
		if up != old.up {
			up.closeUnused(old.up)
		}
		return err
	}
	p.describe(c, old)
	return nil
}

// netServers gives c its net/http servers, which read their timeouts and
// limits (and HTTP/2 settings) from their fields (the hand-off server, newHandOffServer, and the
// interception server, newInterceptServer): old's when c keeps the
// settings they read (old is nil for New's configuration), new ones
// otherwise. Connections those of old serve keep them. New servers are
// registered for Shutdown; once Shutdown has begun, netServers fails (a
// server registered after Shutdown collected them would outlive it). It
// also gives Serve's loops the SOCKS5 front end when c asks for it
// (WithSOCKSOnHTTPListener).
func (p *Proxy) netServers(old, c *config) error {
	if c.socksOnHTTP {
		c.h1srv.SOCKS = p.serveSOCKSFromLoop // socks.go
	}
	if old != nil && old.readHeaderTimeout == c.readHeaderTimeout &&
		old.clientIdleTimeout == c.clientIdleTimeout && old.maxHeaderBytes == c.maxHeaderBytes &&
		old.h2MaxStreams == c.h2MaxStreams && old.h2c == c.h2c {
		c.h1srv.HandOff, c.isrv = old.h1srv.HandOff, old.isrv
		return nil
	}
	handOff, isrv := p.newHandOffServer(c), p.newInterceptServer(c) // server.go, intercept.go
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrShutDown
	}
	p.servers[handOff] = struct{}{}
	p.servers[isrv] = struct{}{}
	c.h1srv.HandOff, c.isrv = handOff, isrv
	return nil
}

// describe records c's generation (one more than old's; 1 without old),
// description and hash (configdesc.go).
func (p *Proxy) describe(c, old *config) {
	if p.hashKey == nil {
		p.hashKey = make([]byte, 32)
		_, _ = rand.Read(p.hashKey)
	}
	c.meta.gen = 1
	if old != nil {
		c.meta.gen = old.meta.gen + 1
	}
	c.meta.desc = describe(&c.settings, p.hashKey)
	c.meta.hash = hashOf(c.meta.desc)
	c.meta.loadedAt = time.Now()
}

// unchangeable returns an error naming the first option that c sets
// otherwise than old and that cannot change while the Proxy runs.
func unchangeable(old, c *config) error {
	const restart = ": cannot change while the Proxy runs (give Reload what New was given, or restart the Proxy to change it)"
	switch {
	case !sameValue(old.tracerProvider, c.tracerProvider):
		return errors.New("WithTracerProvider" + restart + "; the tracer is made once, by New")
	case !sameValue(old.meterProvider, c.meterProvider):
		return errors.New("WithMeterProvider" + restart + "; the instruments are made once, by New")
	case !sameValue(old.propagator, c.propagator):
		return errors.New("WithPropagator" + restart)
	case old.logQueueSize != c.logQueueSize:
		return fmt.Errorf("WithLogQueueSize%s; the log queue is made once, by New (%d → %d)", restart, old.logQueueSize, c.logQueueSize)
	case old.telemetryOff != c.telemetryOff:
		return errors.New("telemetry cannot be switched on or off while the Proxy runs")
	}
	return nil
}

// sameValue reports whether a and b are the same value: equal when they
// can be compared, deeply equal otherwise (a provider with a slice in it).
func sameValue(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	if va.Comparable() && vb.Comparable() {
		return a == b
	}
	return reflect.DeepEqual(a, b)
}

// sameIssuer reports whether an interceptor made from b may keep the
// certificate issuer (and the certificates it minted) of one made from a:
// the same CA, and the same store or cache size.
func sameIssuer(a, b *interceptSettings) bool {
	return sameCA(a.ca, b.ca) && a.cacheSize == b.cacheSize && sameValue(a.store, b.store)
}

// sameCA reports whether a and b are the same CA: the same chain and key.
func sameCA(a, b tls.Certificate) bool {
	if !slices.EqualFunc(a.Certificate, b.Certificate, func(x, y []byte) bool { return string(x) == string(y) }) {
		return false
	}
	k, ok := a.PrivateKey.(interface{ Equal(crypto.PrivateKey) bool })
	return ok && k.Equal(b.PrivateKey)
}

// loggerOf returns the logger of c: WithLogger's, or slog.Default().
func loggerOf(c *config) *slog.Logger {
	if c.logger != nil {
		return c.logger
	}
	return slog.Default()
}

// WithReloadClosesDeniedTunnels, given to Reload, closes the tunnels open
// at the time (CONNECT tunnels, upgraded connections and intercepted
// connections) that the new configuration would refuse: their target host
// and port by the access rules and by the host and port rules of their
// user's policy (WithPolicies), the address they were dialed to by the
// private-address guard and the CIDR rules, and, when authentication
// changed, their client's credentials by the new authenticator (its
// Authenticate is called again with the request that opened the tunnel: an
// upgraded request as it was; a CONNECT as the tunnel keeps it, its target,
// header fields and client address, with a context that carries only the
// authenticated user, and of a CONNECT opened without authentication, its
// Proxy-Authorization field alone).
// Access hooks are not run again, and limits do not close what is open.
// Each tunnel closed is logged. Without it (the default) open tunnels keep
// the configuration they started with to their end. Given to New, it does
// nothing.
func WithReloadClosesDeniedTunnels() Option {
	return optionFunc(func(s *settings) error {
		s.reloadClosesDenied = true
		return nil
	})
}

// tunnelInfo is what the tunnel registry knows of a tunnel, for
// WithReloadClosesDeniedTunnels. Of a CONNECT it keeps what it needs, not
// the request, which would keep its context and the rest alive for as long
// as the tunnel lives (request rebuilds it for the authenticator).
type tunnelInfo struct {
	gen    uint64 // the generation of the configuration that admitted it
	target string // host:port
	host   string
	dialed netip.Addr // the upstream address, when known
	user   string     // the authenticated user, "" without
	client string     // the client's address
	// more is what only some tunnels have, nil when none of it is set: a
	// parked tunnel keeps its tunnelInfo for as long as it lives.
	more *tunnelInfoMore
	// Of a CONNECT: its protocol (HTTP/1.1, HTTP/2.0, SOCKS5) and version.
	proto        string
	port         uint16
	connect      bool
	major, minor uint8
}

// tunnelInfoMore is the part of a tunnelInfo that only some tunnels have.
type tunnelInfoMore struct {
	// certUser is the user the client's verified certificate names
	// (clientCertUser, front.go), "" without one: a reload that keeps
	// client certificates authenticating keeps the tunnel.
	certUser string
	// header is what the authenticator is given again of a CONNECT's
	// header: all of it when the admitting configuration authenticated,
	// else its Proxy-Authorization field alone (nil without one).
	header http.Header
	req    *http.Request // the request upgraded (not a CONNECT), which its handler keeps anyway
}

// newTunnelInfo describes the tunnel r opened to upstream (nil for an
// intercepted connection, which has none of its own) under configuration
// c. r's context carries the authenticated user.
func newTunnelInfo(c *config, r *http.Request, upstream io.ReadWriteCloser) *tunnelInfo {
	ti := &tunnelInfo{gen: c.meta.gen, connect: r.Method == http.MethodConnect, user: authUser(r.Context()), client: r.RemoteAddr}
	var more tunnelInfoMore
	more.certUser = clientCertUser(r.Context())
	var err error
	if ti.connect {
		// Copies, not the strings of the request, which are parts of
		// larger ones (its request line, its URL) that a tunnel would
		// otherwise keep for as long as it lives.
		ti.target = strings.Clone(r.Host)
		ti.host, ti.port, err = httpx.ParseTarget(ti.target)
		ti.proto, ti.major, ti.minor = protoName(r.Proto), uint8(r.ProtoMajor), uint8(r.ProtoMinor)
		if c.auth != nil {
			more.header = r.Header
		} else if v := r.Header["Proxy-Authorization"]; len(v) > 0 {
			more.header = http.Header{"Proxy-Authorization": v}
		}
	} else {
		more.req = r
		ti.target = r.URL.Host
		ti.host, ti.port, err = httpx.CheckURL(r.URL)
	}
	if err != nil {
		ti.host = "" // checked when the tunnel opened; nothing to check again
	}
	if more.certUser != "" || more.header != nil || more.req != nil {
		ti.more = &more
	}
	if _, proxied := upstream.(*viaConn); proxied {
		return ti // dialed to an upstream proxy (via.go), not to the target
	}
	if c, ok := upstream.(net.Conn); ok {
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ti.dialed = ta.AddrPort().Addr().Unmap()
		} else if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			ti.dialed = ap.Addr().Unmap()
		}
	}
	return ti
}

// moreOf returns ti.more, or an empty one (not to be changed).
func (ti *tunnelInfo) moreOf() *tunnelInfoMore {
	if ti.more != nil {
		return ti.more
	}
	return &noMore
}

var noMore tunnelInfoMore

// protoName returns proto, a request's protocol, as a constant when it is
// a usual one, else a copy.
func protoName(proto string) string {
	for _, p := range [...]string{"HTTP/1.1", "HTTP/2.0", "HTTP/1.0", telemetry.SOCKS5Proto} {
		if proto == p {
			return p
		}
	}
	return strings.Clone(proto)
}

// request returns the request that opened the tunnel, as the
// authenticator sees it again: an upgraded request as it was; a CONNECT
// rebuilt, with its target, protocol version, header (as kept) and client
// address, and the authenticated user in its context.
func (ti *tunnelInfo) request() *http.Request {
	more := ti.moreOf()
	if more.req != nil {
		return more.req
	}
	h := more.header
	if h == nil {
		h = http.Header{}
	}
	r := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: ti.target}, Host: ti.target, Header: h,
		Proto: ti.proto, ProtoMajor: int(ti.major), ProtoMinor: int(ti.minor),
		RemoteAddr: ti.client, Body: http.NoBody}
	if ti.user != "" {
		r = r.WithContext(withAuthUser(context.Background(), ti.user))
	}
	return r
}

// deniedCheck is a reload that closed the tunnels its configuration cfg
// refuses.
type deniedCheck struct {
	cfg         *config
	authChanged bool // the credentials are checked again
}

// closeDeniedTunnels closes the open tunnels that c, which follows old,
// refuses (WithReloadClosesDeniedTunnels), logging each. A tunnel admitted
// under an older configuration that registers only after this (track) is
// judged by c then.
func (p *Proxy) closeDeniedTunnels(old, c *config) {
	cd := &deniedCheck{cfg: c, authChanged: describeAuth(old.auth, p.hashKey) != describeAuth(c.auth, p.hashKey)}
	var open []trackedTunnel
	p.mu.Lock()
	p.closedDenied = cd
	for t := range p.tunnels {
		if ti := t.regInfo(); ti != nil && ti.gen < c.meta.gen {
			open = append(open, t)
		}
	}
	p.mu.Unlock()
	for _, t := range open {
		p.closeIfDenied(cd, t)
	}
}

// closeIfDenied closes t if cd's configuration refuses it, and logs it.
func (p *Proxy) closeIfDenied(cd *deniedCheck, t trackedTunnel) {
	ti := t.regInfo()
	reason := tunnelRefusal(cd.cfg, ti, cd.authChanged)
	if reason == "" {
		return
	}
	attrs := []slog.Attr{slog.String("target", ti.target), slog.String("client", ti.client),
		slog.String("user", ti.user), slog.String("reason", reason), slog.Uint64("generation", cd.cfg.meta.gen)}
	if ti.dialed.IsValid() {
		attrs = append(attrs, slog.String("upstream", ti.dialed.String()))
	}
	p.log.LogAttrs(context.Background(), slog.LevelWarn, "tunnel closed by reload: the new configuration refuses it", attrs...)
	t.close()
}

// tunnelRefusal returns why c refuses the tunnel ti, or "": the rules on its
// target, the guard and the CIDR rules on the address it was dialed to and,
// when authChanged, the authenticator on its request. Report-only mode
// spares what it spares a new tunnel.
func tunnelRefusal(c *config, ti *tunnelInfo, authChanged bool) string {
	if ti.host != "" {
		ip, _ := policy.ParseHost(ti.host)
		if ok, rule := c.rules.Check(ti.host, ip, ti.port, ti.connect); !ok && !c.reportOnly {
			return "access denied: " + rule
		}
		if a := ti.dialed; a.IsValid() {
			if !c.allowPrivate {
				if class := c.guard.Classify(a); class.Denied() {
					return "destination " + a.String() + " is " + class.String() + ": private addresses are not allowed"
				}
			}
			if ok, rule := c.rules.Check(ti.host, a, ti.port, ti.connect); !ok && !c.reportOnly {
				return "access denied: " + rule
			}
		}
		// The user's policy (WithPolicies), as admit would find it now.
		if c.users != nil {
			if up := c.users.match(ti.user, ti.client); up != nil && up.rules != nil {
				ip, _ := policy.ParseHost(ti.host)
				ok, rule := up.rules.Check(ti.host, ip, ti.port, ti.connect)
				if ok && ti.dialed.IsValid() {
					ok, rule = up.rules.Check(ti.host, ti.dialed, ti.port, ti.connect)
				}
				if !ok {
					return "access denied by policy " + strconv.Quote(up.Name) + ": " + rule
				}
			}
		}
	}
	if authChanged && c.auth != nil {
		if c.front.certAuth && ti.moreOf().certUser != "" {
			return "" // its client certificate authenticates it (front.go)
		}
		r := ti.request()
		if _, ok := c.auth.Authenticate(r.Context(), r); !ok {
			return "proxy credentials rejected"
		}
	}
	return ""
}

// lookup resolves host with r, the Resolver of the dialing request's
// configuration. A Resolver that a reload replaced is closed once the dials
// that started on it are over; a dial that starts on it later (its request
// began before the reload) asks the Resolver in force instead.
func (p *Proxy) lookup(ctx context.Context, r *Resolver, host string) ([]netip.Addr, error) {
	ips, err := r.LookupNetIP(ctx, host)
	if err != nil && errors.Is(err, net.ErrClosed) {
		if cur := p.cfg.Load().up.resolver; cur != r {
			return cur.LookupNetIP(ctx, host)
		}
	}
	return ips, err
}

// ConfigStats describes the configuration in force and the reloads.
type ConfigStats struct {
	// Generation is 1 for the configuration New made, and one more for
	// each successful Reload.
	Generation uint64
	// Hash is the hex SHA-256 of the configuration's canonical
	// description: each option's effective value, with functions and
	// other values that cannot be compared by their identity and secrets
	// by a digest. Equal configurations have equal hashes within a
	// Proxy; not across processes.
	Hash string
	// LoadedAt is when the configuration was put in force.
	LoadedAt time.Time
	// Reloads and FailedReloads count the calls of Reload that put a
	// configuration in force and those that returned an error.
	Reloads, FailedReloads uint64
}

// configStats returns Stats.Config.
func (p *Proxy) configStats() ConfigStats {
	m := &p.cfg.Load().meta
	return ConfigStats{
		Generation:    m.gen,
		Hash:          m.hash,
		LoadedAt:      m.loadedAt,
		Reloads:       p.reloads.ok.Load(),
		FailedReloads: p.reloads.failed.Load(),
	}
}

// reloadCounters count the reloads, for Stats and the metrics.
type reloadCounters struct {
	ok, failed atomic.Uint64
	reg        metric.Registration
}

// initReloadMetrics registers the configuration's metrics with the meter of
// c's MeterProvider (the one the other instruments use):
// fwdproxy.config.generation and fwdproxy.config.reloads, by result (ok
// or error). Both are observed from the Proxy's counters.
func (p *Proxy) initReloadMetrics(c *config) error {
	mp := c.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/fwdproxy/fwdproxy") // the scope of every instrument of the Proxy
	gen, err1 := m.Int64ObservableGauge("fwdproxy.config.generation",
		metric.WithUnit("{generation}"), metric.WithDescription("Generation of the configuration in force: 1 for the first, one more per reload."))
	reloads, err2 := m.Int64ObservableCounter("fwdproxy.config.reloads",
		metric.WithUnit("{reload}"), metric.WithDescription("Configuration reloads, by result (ok or error)."))
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	ok := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))
	failed := metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error")))
	var err error
	p.reloads.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if c := p.cfg.Load(); c != nil { // nil while New runs
			o.ObserveInt64(gen, int64(c.meta.gen))
		}
		o.ObserveInt64(reloads, int64(p.reloads.ok.Load()), ok)
		o.ObserveInt64(reloads, int64(p.reloads.failed.Load()), failed)
		return nil
	}, gen, reloads)
	return err
}

// closeReloadMetrics unregisters the callback of initReloadMetrics.
func (p *Proxy) closeReloadMetrics() {
	if p.reloads.reg != nil {
		_ = p.reloads.reg.Unregister()
	}
}

// dnsCounters are the DNS counters of the Resolvers that reloads replaced.
type dnsCounters struct {
	hits, misses, coalesced, stale, prefetches, evictions, errors atomic.Uint64
}

// add adds the counters s of a replaced Resolver.
func (d *dnsCounters) add(s ResolverStats) {
	d.hits.Add(s.Hits)
	d.misses.Add(s.Misses)
	d.coalesced.Add(s.Coalesced)
	d.stale.Add(s.Stale)
	d.prefetches.Add(s.Prefetches)
	d.evictions.Add(s.Evictions)
	d.errors.Add(s.Errors)
}

// sum returns s plus the replaced Resolvers' counters.
func (d *dnsCounters) sum(s ResolverStats) ResolverStats {
	s.Hits += d.hits.Load()
	s.Misses += d.misses.Load()
	s.Coalesced += d.coalesced.Load()
	s.Stale += d.stale.Load()
	s.Prefetches += d.prefetches.Load()
	s.Evictions += d.evictions.Load()
	s.Errors += d.errors.Load()
	return s
}
