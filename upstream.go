package fwdproxy

import (
	"net/http"
	"slices"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
)

// upstream is what a configuration's requests reach upstream through: the
// shared http.Transport and the own HTTP/1.1 transport (pool.go), with
// their pools, and the Resolver every dial asks. Both transports dial
// through p.dial, under the dialing request's configuration.
//
// New builds the first one. Reload hands it on to the new configuration
// when nothing it was built from changed (planUpstream): the transports'
// settings, the resolver's, and the rules that vetted the pooled
// connections' addresses. Otherwise Reload builds a new one (keeping the
// Resolver when only the transports changed) and retires the old
// (retireUpstream): its idle connections are closed at once, and those
// that requests still running on it hand back later are closed rather than
// pooled; its Resolver, when the Proxy made it and the new one does not
// share it, is closed once no dial can still be using it.
type upstream struct {
	transport *http.Transport
	h1        *h1.Transport
	h1st      h1.TransportSettings // the own transport's settings, fixed for its life
	resolver  *Resolver
	owned     bool // resolver is the Proxy's own (not WithResolver's): the Proxy closes it
}

// newUpstream builds the transports for configuration c, dialing through
// p.dial with resolver r (owned: the Proxy made it and closes it).
func (p *Proxy) newUpstream(c *config, r *Resolver, owned bool) *upstream {
	up := &upstream{resolver: r, owned: owned, h1st: c.h1tr}
	up.transport = p.newTransport(c)   // transport.go
	up.h1 = p.newH1Transport(&up.h1st) // pool.go
	return up
}

// firstUpstream builds New's upstream for c: WithResolver's Resolver, or
// one of the Proxy's own made from the resolver options.
func (p *Proxy) firstUpstream(c *config) (*upstream, error) {
	if c.resolver != nil {
		return p.newUpstream(c, c.resolver, false), nil
	}
	r, err := newResolver(c.dns) // dnscache.go
	if err != nil {
		return nil, err
	}
	return p.newUpstream(c, r, true), nil
}

// planUpstream returns the upstream configuration c is to use after old:
// old's own when nothing it depends on changed, else a new one. When it
// builds a Resolver and fails, it returns the error (naming the option).
func (p *Proxy) planUpstream(old, c *config) (*upstream, error) {
	prev := old.up
	r, owned := prev.resolver, prev.owned
	sameResolver := true
	switch {
	case c.resolver != nil:
		sameResolver = c.resolver == prev.resolver
		r, owned = c.resolver, false
	case !prev.owned || !sameResolverConfig(prev.resolver, c.dns):
		sameResolver = false
		nr, err := newResolver(c.dns)
		if err != nil {
			return nil, err
		}
		r, owned = nr, true
	}
	if sameResolver && sameTransports(&old.settings, &c.settings) && sameVetting(&old.settings, &c.settings) {
		return prev, nil
	}
	return p.newUpstream(c, r, owned), nil
}

// sameResolverConfig reports whether r, a Resolver the Proxy made, is what
// the resolver options of cfg would make now: the same options, and the
// same servers read from the resolv.conf file when no server is given (so
// that a reload picks up an edited resolv.conf).
func sameResolverConfig(r *Resolver, cfg resolverConfig) bool {
	a, b := &r.cfg, &cfg
	if !slices.Equal(a.servers, b.servers) ||
		a.resolvConf != b.resolvConf || a.resolvConfSet != b.resolvConfSet ||
		a.hostsFile != b.hostsFile || a.hostsSet != b.hostsSet ||
		a.cacheSize != b.cacheSize || a.minTTL != b.minTTL || a.maxTTL != b.maxTTL ||
		a.negTTL != b.negTTL || a.errTTL != b.errTTL || a.staleWindow != b.staleWindow ||
		a.timeout != b.timeout || a.prefetch != b.prefetch {
		return false
	}
	if len(cfg.servers) > 0 {
		return true
	}
	servers, err := serversFromResolvConf(cfg.resolvConf, cfg.resolvConfSet)
	return err == nil && slices.Equal(servers, r.servers)
}

// sameTransports reports whether the transports built for a serve b: the
// settings newTransport and the own transport read are equal.
func sameTransports(a, b *settings) bool {
	return a.tlsHandshakeTimeout == b.tlsHandshakeTimeout &&
		a.responseHeaderTimeout == b.responseHeaderTimeout &&
		a.expectContinueTimeout == b.expectContinueTimeout &&
		a.maxIdleConns == b.maxIdleConns &&
		a.maxIdleConnsPerHost == b.maxIdleConnsPerHost &&
		a.idleConnTimeout == b.idleConnTimeout &&
		a.proxyFromEnvironment == b.proxyFromEnvironment &&
		a.upstreamRoots == b.upstreamRoots &&
		a.maxResponseHeader == b.maxResponseHeader
}

// sameVetting reports whether a pooled upstream connection, whose address
// was vetted (vet, access.go) under a, may serve a request under b: the
// rules vet applies to addresses are the same. The rules on names are
// checked for every request anyway (admit).
func sameVetting(a, b *settings) bool {
	ra, rb := &a.accessRules, &b.accessRules
	return a.allowPrivate == b.allowPrivate &&
		a.reportOnly == b.reportOnly &&
		slices.Equal(a.allowedCIDRs, b.allowedCIDRs) &&
		slices.Equal(ra.AllowCIDRs, rb.AllowCIDRs) &&
		slices.Equal(ra.DenyCIDRs, rb.DenyCIDRs) &&
		slices.Equal(ra.AllowHosts, rb.AllowHosts) // a name outside them may pass by an allowed CIDR
}

// resolverGrace is added to the dial timeout before a retired Resolver is
// closed.
const resolverGrace = time.Second

// retireUpstream retires prev, which the configuration in force (next's)
// no longer uses. Called with reloadMu held.
func (p *Proxy) retireUpstream(prev, next *upstream, dialTimeout time.Duration) {
	if prev == next {
		return
	}
	// Idle connections go now; those handed back by requests still running
	// on prev are closed instead of pooled (both transports do that after
	// CloseIdleConnections, as long as no new request uses them).
	prev.transport.CloseIdleConnections()
	prev.h1.CloseIdleConnections()
	if prev.resolver != next.resolver {
		p.dnsRetired.add(prev.resolver.Stats()) // Stats.DNS stays cumulative
	}
	r := &retired{up: prev, closeResolver: prev.owned && prev.resolver != next.resolver}
	// A dial that started on prev's Resolver ends within its dial timeout
	// (the whole dial, DNS included, is bounded by it). One that starts on
	// it later (a request that began before the reload and dials only
	// afterwards, behind a slow hook) finds it closed and asks the
	// Resolver in force instead (dial, proxy.go).
	r.timer = time.AfterFunc(dialTimeout+resolverGrace, func() {
		p.reloadMu.Lock()
		defer p.reloadMu.Unlock()
		if _, ok := p.retired[r]; ok {
			delete(p.retired, r)
			r.close()
		}
	})
	p.retired[r] = struct{}{}
}

// retired is an upstream no configuration in force uses any more, waiting
// for its last dials.
type retired struct {
	up            *upstream
	closeResolver bool
	timer         *time.Timer
}

// close closes what is left of r: the idle connections that requests
// handed back since it was retired (if one started a new round trip on it
// after all) and its Resolver, when the Proxy owns it and nothing in force
// shares it.
func (r *retired) close() {
	r.up.transport.CloseIdleConnections()
	r.up.h1.CloseIdleConnections()
	if r.closeResolver {
		r.up.resolver.Close()
	}
}

// closeUpstreams closes the upstream in force and every retired one:
// Shutdown's end. It holds reloadMu, so that no Reload installs an
// upstream after it.
func (p *Proxy) closeUpstreams() {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	for r := range p.retired {
		r.timer.Stop()
		r.close()
		delete(p.retired, r)
	}
	c := p.cfg.Load()
	c.routing.stopProbing() // route.go
	c.up.close()
}

// close closes up's idle connections and, when the Proxy owns it, its
// Resolver.
func (up *upstream) close() {
	up.transport.CloseIdleConnections()
	up.h1.CloseIdleConnections()
	if up.owned {
		up.resolver.Close()
	}
}

// closeUnused closes up, which planUpstream made for a configuration that
// was then not put in force, but not what it shares with prev: its
// Resolver when it is prev's.
func (up *upstream) closeUnused(prev *upstream) {
	up.transport.CloseIdleConnections()
	up.h1.CloseIdleConnections()
	if up.owned && up.resolver != prev.resolver {
		up.resolver.Close()
	}
}

// dnsStats returns the DNS counters of Stats: those of the Resolver in
// force, plus those the Resolvers that reloads replaced had counted when
// they were replaced.
func (p *Proxy) dnsStats() ResolverStats {
	c := p.cfg.Load()
	if c == nil {
		return ResolverStats{} // a metric collected while New runs
	}
	return p.dnsRetired.sum(c.up.resolver.Stats())
}
