package fwdproxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// Options for routing through upstream proxies (route.go, via.go). Without
// them every request and tunnel goes directly to its destination.

// Route sends the requests and tunnels it matches through upstream proxies.
// WithUpstreams takes a list of them, tried in order: the first whose every
// non-empty match field matches a request decides where it goes. A route
// with no match field matches everything: it is the default route, and
// must be the last. A request that no route matches goes directly (DIRECT).
//
// Every kind of traffic follows the routes: plain requests, CONNECT
// tunnels, requests inside intercepted CONNECTs and WebSocket (and other)
// upgrades.
type Route struct {
	// Hosts matches the destination host: names ("example.com"), domains
	// ("*.example.com": every name below it, not the name itself), and
	// CIDR ranges or addresses ("10.0.0.0/8", "2001:db8::1"). A range
	// matches a destination given as an address, and a name that resolves
	// (through the Proxy's Resolver) to an address in it. Empty: any host.
	Hosts []string
	// Ports matches the destination port. Empty: any port.
	Ports []uint16
	// Schemes matches the kind of traffic: "http" for plain requests
	// (and their upgrades), "https" for CONNECT tunnels (whatever their
	// port) and the requests inside intercepted ones. Empty: both.
	Schemes []string
	// Users matches the authenticated user (WithBasicAuth,
	// WithAuthenticator); a request without one matches no Users. Empty:
	// anyone.
	Users []string
	// Upstreams are where the matched traffic goes, as URLs:
	//
	//	http://[user:password@]host:port    an HTTP proxy: absolute-form for plain requests, CONNECT for tunnels and https
	//	https://[user:password@]host:port   the same, over TLS to the proxy (verified as WithUpstreamRootCAs says)
	//	socks5://[user:password@]host:port  a SOCKS5 proxy (RFC 1928, with RFC 1929 user name and password)
	//	DIRECT                              no proxy: the destination itself
	//
	// The credentials are the upstream's, sent to it alone; they never
	// appear in logs, spans, errors, metrics, Stats or the description
	// of a reload. At least one, at most 64, none twice.
	Upstreams []string
	// Policy orders Upstreams for each request: "failover" (the default:
	// in the order given), "round-robin", "least-outstanding" (the one
	// with the fewest requests waiting for a response head and tunnels
	// open through it) or "consistent-hash" (on the destination host, so
	// that each host keeps one exit while the upstreams' health stays the
	// same). Upstreams that are down (see WithUpstreams) go after those
	// that are up, whatever the policy.
	Policy string
}

// WithUpstreams routes requests and tunnels through upstream proxies, by
// routes tried in order (see Route). Each Upstreams list is a pool: a
// request goes to the first upstream its Policy orders, and to the next
// when that one fails before anything of the request was sent, or, for an
// idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or one with
// an Idempotency-Key), before a byte of the response came back; a CONNECT
// goes to the next until a tunnel is established. A request body that went
// out is never sent again. At most three upstreams are tried per request.
//
// Health is kept per upstream: one that fails to connect, times out or
// breaks the protocol is down for a back-off (1 s, doubling with each
// further failure up to 1 min, ±20 %), during which the others go first;
// once it has passed, one request tries it again, and a success brings it
// back at once. WithUpstreamProbe adds active checks. The health is in
// Stats.Upstreams and in the fwdproxy.upstream.proxy.* metrics.
//
// The private-address guard and the CIDR rules still apply to the final
// destination: by default a name sent to an upstream proxy is resolved
// here too, and the request is refused when any of its addresses is
// refused (WithUpstreamResolvesNames lets the upstream resolve alone);
// an address is always checked. The client's Proxy-Authorization, meant
// for this proxy, is never passed on; each upstream gets its own
// credentials from its URL.
//
// Routes change live with Reload; an upstream whose URL is the same in
// the new routes keeps its health and its pooled connections. It cannot
// be combined with WithPAC or WithProxyFromEnvironment. Without routes
// (the default, or WithUpstreams()) every request goes directly.
func WithUpstreams(routes ...Route) Option {
	return optionFunc(func(s *settings) error {
		rs := make([]Route, len(routes))
		for i, r := range routes {
			rs[i] = Route{Hosts: clone(r.Hosts), Ports: clone(r.Ports), Schemes: clone(r.Schemes), Users: clone(r.Users),
				Upstreams: clone(r.Upstreams), Policy: r.Policy}
		}
		s.routes = rs
		return nil
	})
}

func clone[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append([]T(nil), s...)
}

// WithPAC routes requests and tunnels by a proxy auto-config file: src is
// JavaScript defining FindProxyForURL(url, host), evaluated for each
// destination with the standard helper functions (isPlainHostName,
// dnsDomainIs, shExpMatch, isInNet, dnsResolve, myIpAddress, weekdayRange,
// …; the DNS ones through the Proxy's Resolver). Its answer, such as
// "PROXY a:3128; SOCKS5 b:1080; DIRECT", is a pool in failover order, with
// the failover, health and guard rules of WithUpstreams. Answers are
// cached per scheme, host and port for five minutes. A plain request is
// evaluated with its URL reduced to "scheme://host:port/", a CONNECT
// tunnel as "https://host:port/".
//
// A file that does not compile is refused with the line and column of the
// error; one whose top level or FindProxyForURL runs longer than a second
// is stopped, and the request gets 502, as it does when the script throws
// or answers nothing usable. There is no fall back to DIRECT.
//
// PAC answers carry no credentials: give an upstream's in credentials,
// URLs as for Route.Upstreams ("http://user:password@proxy.example:3128"),
// each used whenever the file names that scheme, host and port. A PAC
// file changes live with Reload. It cannot be combined with WithUpstreams
// or WithProxyFromEnvironment.
func WithPAC(src []byte, credentials ...string) Option {
	return optionFunc(func(s *settings) error {
		if len(src) == 0 {
			return errors.New("WithPAC: empty PAC file")
		}
		s.pacSrc = append([]byte(nil), src...)
		s.pacCredentials = clone(credentials)
		return nil
	})
}

// WithUpstreamResolvesNames trusts the upstream proxies to resolve the
// names they are sent: a request or tunnel to a name that goes through an
// upstream proxy is checked against the host rules (WithDenyHosts,
// WithAllowHosts) but not resolved here, so neither the private-address
// guard nor the CIDR rules see its addresses. Use it when the upstream
// resolves names this proxy cannot (an internal zone), or when it enforces
// its own guard; a name that resolves to a private address behind the
// upstream is then reachable. Destinations given as addresses are always
// checked, and DIRECT is always guarded.
//
// By default names are resolved here and the request is refused when any
// of the addresses would be refused: the upstream may pick any of them.
func WithUpstreamResolvesNames() Option {
	return optionFunc(func(s *settings) error {
		s.upstreamResolvesNames = true
		return nil
	})
}

// WithUpstreamProbe checks the upstream proxies actively, every interval
// (varied by ±10 %), besides the passive health that requests report: a
// TCP connection to each (with the TLS handshake for https://), or, when
// target ("host:port") is given, a tunnel through each to target. A failed
// probe marks its upstream down as a failed request does, and a
// successful one brings it back at once. Each probe is bounded by the
// dial timeout, and by the interval when that is shorter. The probes stop
// when Reload replaces the configuration and at Shutdown.
func WithUpstreamProbe(interval time.Duration, target string) Option {
	return optionFunc(func(s *settings) error {
		if interval <= 0 {
			return fmt.Errorf("WithUpstreamProbe: interval must be positive, got %v", interval)
		}
		if target != "" {
			if _, _, err := httpx.ParseTarget(target); err != nil {
				return fmt.Errorf("WithUpstreamProbe: target %q is not host:port: %v", target, err)
			}
		}
		s.probe = probeSettings{interval: interval, target: target}
		return nil
	})
}

// probeSettings are WithUpstreamProbe's.
type probeSettings struct {
	interval time.Duration // 0: off
	target   string
}

// validateRouting checks the routing options of s as a whole, for
// buildConfig.
func validateRouting(s *settings) error {
	var errs []error
	switch {
	case len(s.routes) > 0 && s.pacSrc != nil:
		errs = append(errs, errors.New("WithUpstreams: cannot be combined with WithPAC: give the routes one way"))
	case (len(s.routes) > 0 || s.pacSrc != nil) && s.proxyFromEnvironment:
		opt := "WithUpstreams"
		if s.pacSrc != nil {
			opt = "WithPAC"
		}
		errs = append(errs, errors.New(opt+": cannot be combined with WithProxyFromEnvironment"))
	}
	if s.probe.interval > 0 && len(s.routes) == 0 && s.pacSrc == nil {
		errs = append(errs, errors.New("WithUpstreamProbe: no upstream to probe (give WithUpstreams or WithPAC)"))
	}
	return errors.Join(errs...)
}

// describeRoute describes route r for the configuration's description:
// its match and its upstreams by name, never with credentials.
func describeRoute(r *Route) string {
	var b strings.Builder
	match := false
	part := func(label string, items []string) {
		if len(items) == 0 {
			return
		}
		if match {
			b.WriteString("; ")
		}
		match = true
		b.WriteString(label)
		b.WriteString(strings.Join(items, ", "))
	}
	part("hosts ", r.Hosts)
	ports := make([]string, len(r.Ports))
	for i, p := range r.Ports {
		ports[i] = strconv.Itoa(int(p))
	}
	part("ports ", ports)
	part("schemes ", r.Schemes)
	part("users ", r.Users)
	if !match {
		b.WriteString("default")
	}
	b.WriteString(" → ")
	for i, spec := range r.Upstreams {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(proxies.RedactSpec(spec))
	}
	policy := r.Policy
	if policy == "" {
		policy = "failover"
	}
	b.WriteString(" (" + policy + ")")
	return b.String()
}
