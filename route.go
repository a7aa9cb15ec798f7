package fwdproxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/pac"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	proxies "github.com/fwdproxy/fwdproxy/internal/upstream"
)

// Routing through upstream proxies: the routes of WithUpstreams or the PAC
// file of WithPAC (options_route.go), compiled into a configuration's
// routing. A request's route decision (pick) gives the upstreams to try, in
// order; via.go sends the request or opens the tunnel through them.
//
// buildConfig compiles the rules (compileRouting), with their upstreams
// parsed but not yet made; New and Reload make them (attachRouting), reusing
// the *proxies.Upstream of the configuration before for every URL that is
// the same, so that its health and pooled connections carry on. Upstreams
// outlive configurations; the prober of the active checks is the
// configuration's, started once it is in force and stopped when it is
// replaced.

// routing is a configuration's routes, or its PAC file.
type routing struct {
	rules         []routeRule
	pac           *pacRouting // WithPAC; nil otherwise
	resolvesNames bool        // WithUpstreamResolvesNames
	needIP        bool        // a rule has CIDRs: names are resolved to match them

	// specs are the distinct upstream URLs of the rules, in order, as
	// buildConfig parsed them; attachRouting makes ups from them (ups[i]
	// for specs[i]).
	specs []string
	ups   []*proxies.Upstream
	keys  []string // the reuse key of each of ups

	probe  probeSettings
	prober *proxies.Prober // started by startProbing, once in force
}

// routeRule is one compiled Route.
type routeRule struct {
	hosts   *policy.Matcher // nil: any host
	cidrs   bool            // hosts has CIDR ranges
	ports   []uint16        // nil: any
	schemes uint8           // schemeHTTP|schemeHTTPS bits; 0: any
	users   []string        // nil: anyone
	pol     int             // 0: any request; else only those of the policy (WithPolicies) of this 1-based index
	policy  proxies.Policy
	specs   []int         // indexes into routing.specs
	pool    *proxies.Pool // made by attachRouting
	direct  bool          // the pool is DIRECT alone: the usual path
}

const (
	schemeHTTP  = 1
	schemeHTTPS = 2
)

// maxRouteAttempts bounds the upstreams tried for one request or tunnel.
const maxRouteAttempts = 3

// compileRouting compiles the routing options of s, validated; nil when
// there are none. Errors name the option and the route or entry at fault,
// never credentials.
func compileRouting(s *settings) (*routing, error) {
	if err := validateRouting(s); err != nil {
		return nil, err
	}
	// The routes of the policies (WithPolicies) go first, each matching
	// only its policy's requests.
	type tagged struct {
		r   *Route
		pol int
		at  string
	}
	var all []tagged
	for i := range s.policies {
		for j := range s.policies[i].Routes {
			all = append(all, tagged{&s.policies[i].Routes[j], i + 1,
				"WithPolicies: policy " + strconv.Itoa(i+1) + " (" + strconv.Quote(s.policies[i].Name) + "): route " + strconv.Itoa(j+1) + ": "})
		}
	}
	for i := range s.routes {
		all = append(all, tagged{&s.routes[i], 0, "WithUpstreams: route " + strconv.Itoa(i+1) + ": "})
	}
	if len(all) == 0 && s.pacSrc == nil {
		return nil, nil
	}
	rt := &routing{resolvesNames: s.upstreamResolvesNames, probe: s.probe}
	if s.pacSrc != nil {
		pr, err := compilePAC(s)
		if err != nil {
			return nil, err
		}
		rt.pac = pr
		return rt, nil
	}
	index := map[string]int{}
	catchAll := -1
	polCatchAll := map[int]bool{}
	var errs []error
	for i := range all {
		r, at := all[i].r, all[i].at
		if all[i].pol != 0 && polCatchAll[all[i].pol] {
			errs = append(errs, fmt.Errorf("%sit is never used: a route of the policy before it matches all its requests (put the route without match fields last)", at))
			continue
		}
		if catchAll >= 0 {
			errs = append(errs, fmt.Errorf("%sit is never used: route %d before it matches every request (a route without Hosts, Ports, Schemes and Users is the default route; put it last)", at, catchAll+1))
			continue
		}
		rule, err := compileRule(r, at)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for j, spec := range r.Upstreams {
			if _, err := proxies.Parse(spec); err != nil {
				errs = append(errs, fmt.Errorf("%supstream %d: %w", at, j+1, err))
				continue
			}
			key := strings.TrimSpace(spec)
			k, ok := index[key]
			if !ok {
				k = len(rt.specs)
				index[key] = k
				rt.specs = append(rt.specs, key)
			}
			if slices.Contains(rule.specs, k) {
				errs = append(errs, fmt.Errorf("%supstream %d: %s is in the route twice", at, j+1, proxies.RedactSpec(key)))
				continue
			}
			rule.specs = append(rule.specs, k)
		}
		rule.cidrs = rule.hosts != nil && hasCIDR(r.Hosts)
		rt.needIP = rt.needIP || rule.cidrs
		rule.pol = all[i].pol
		if rule.hosts == nil && rule.ports == nil && rule.schemes == 0 && rule.users == nil {
			if rule.pol != 0 {
				polCatchAll[rule.pol] = true
			} else {
				catchAll = i - (len(all) - len(s.routes)) // the route's index in WithUpstreams
			}
		}
		rt.rules = append(rt.rules, rule)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rt, nil
}

// compileRule compiles a route's match and policy; at prefixes errors.
func compileRule(r *Route, at string) (routeRule, error) {
	var rule routeRule
	if len(r.Upstreams) == 0 {
		return rule, errors.New(at + "no Upstreams (give proxy URLs, or DIRECT)")
	}
	if len(r.Upstreams) > 64 {
		return rule, fmt.Errorf("%s%d Upstreams; at most 64", at, len(r.Upstreams))
	}
	var err error
	if rule.policy, err = proxies.ParsePolicy(r.Policy); err != nil {
		return rule, fmt.Errorf("%sPolicy %q: want failover, round-robin, least-outstanding or consistent-hash", at, r.Policy)
	}
	if len(r.Hosts) > 0 {
		hosts, cidrs, err := parseHostRules("Hosts", r.Hosts)
		if err != nil {
			return rule, errors.New(at + err.Error())
		}
		if rule.hosts, err = policy.NewMatcher(hosts, cidrs); err != nil {
			return rule, errors.New(at + "Hosts: " + err.Error())
		}
	}
	for _, p := range r.Ports {
		if p == 0 {
			return rule, errors.New(at + "Ports: 0 is not a port")
		}
	}
	rule.ports = clone(r.Ports)
	for _, sc := range r.Schemes {
		switch strings.ToLower(sc) {
		case "http":
			rule.schemes |= schemeHTTP
		case "https":
			rule.schemes |= schemeHTTPS
		default:
			return rule, fmt.Errorf("%sSchemes: %q: want http (plain requests) or https (CONNECT tunnels and intercepted requests)", at, sc)
		}
	}
	for _, u := range r.Users {
		if u == "" {
			return rule, errors.New(at + "Users: an empty user name")
		}
	}
	rule.users = clone(r.Users)
	return rule, nil
}

// hasCIDR reports whether host rules hold a CIDR range or an address.
func hasCIDR(hosts []string) bool {
	for _, h := range hosts {
		if _, err := parsePrefix(h); err == nil {
			return true
		}
	}
	return false
}

// attachRouting makes the upstreams of c's routing, reusing those of old
// (nil for New's configuration) whose key is the same, and the pools of
// its rules. A PAC file is compiled here, or old's kept when it is the
// same. Nothing is started.
func (p *Proxy) attachRouting(old, c *config) error {
	rt := c.routing
	if rt == nil {
		return nil
	}
	var prev *routing
	if old != nil {
		prev = old.routing
	}
	if rt.pac != nil {
		return p.attachPAC(prev, c)
	}
	rt.ups = make([]*proxies.Upstream, len(rt.specs))
	rt.keys = make([]string, len(rt.specs))
	for i, spec := range rt.specs {
		key := upstreamKey(spec, c)
		u := prev.find(key)
		if u == nil {
			var err error
			if u, err = p.newUpstreamProxy(spec, c); err != nil {
				return fmt.Errorf("WithUpstreams: %w", err) // cannot be: buildConfig parsed it
			}
		}
		rt.ups[i], rt.keys[i] = u, key
	}
	for i := range rt.rules {
		rule := &rt.rules[i]
		ups := make([]*proxies.Upstream, len(rule.specs))
		for j, k := range rule.specs {
			ups[j] = rt.ups[k]
		}
		var err error
		if rule.pool, err = proxies.NewPool(rule.policy, ups...); err != nil {
			return fmt.Errorf("WithUpstreams: route %d: %w", i+1, err)
		}
		rule.direct = len(ups) == 1 && ups[0].IsDirect()
	}
	return nil
}

// find returns rt's upstream with key, or nil (rt may be nil).
func (rt *routing) find(key string) *proxies.Upstream {
	if rt == nil {
		return nil
	}
	if rt.pac != nil {
		return rt.pac.find(key)
	}
	for i, k := range rt.keys {
		if k == key {
			return rt.ups[i]
		}
	}
	return nil
}

// upstreamKey identifies what an upstream is made from: its URL as given
// (credentials included) and, for https://, the roots it is verified
// against. Two configurations with the same key for an upstream share it.
func upstreamKey(spec string, c *config) string {
	if len(spec) >= 8 && strings.EqualFold(spec[:8], "https://") {
		return spec + "\x00" + identity(c.upstreamRoots)
	}
	return spec
}

// newUpstreamProxy makes the upstream of spec for configuration c: it dials
// the proxy's own address through dialUpstreamProxy, DIRECT through dial,
// and verifies an https:// proxy as c's upstream TLS settings say.
func (p *Proxy) newUpstreamProxy(spec string, c *config) (*proxies.Upstream, error) {
	u, err := proxies.Parse(spec,
		proxies.WithDial(p.dialUpstreamProxy),
		proxies.WithDirectDial(p.dialDirect),
		proxies.WithTLSConfig(upstreamTLSConfig(c.upstreamRoots)))
	if err != nil {
		return nil, err
	}
	if k := u.Kind(); k == proxies.HTTP || k == proxies.HTTPS {
		id := p.viaSeq.Add(1)
		u.Attach(&h1.Via{
			Key:           "via " + strconv.FormatUint(id, 10) + " " + u.Name(),
			Authorization: u.ProxyAuthorization(),
			Dial:          func(ctx context.Context) (net.Conn, error) { return p.dialProxy(ctx, u) },
		})
	}
	return u, nil
}

// startProbing starts the active checks of c's routing, if it has them:
// once c is in force.
func (rt *routing) startProbing(c *config) {
	if rt == nil || rt.probe.interval <= 0 {
		return
	}
	cfg := proxies.ProbeConfig{Interval: rt.probe.interval, Timeout: min(rt.probe.interval, c.dialTimeout), Target: rt.probe.target}
	rt.prober = proxies.StartProbingEach(rt.all, cfg)
}

// stopProbing stops them; rt may be nil.
func (rt *routing) stopProbing() {
	if rt != nil && rt.prober != nil {
		rt.prober.Stop()
	}
}

// all returns rt's upstreams, DIRECT included.
func (rt *routing) all() []*proxies.Upstream {
	if rt.pac != nil {
		return rt.pac.all()
	}
	return rt.ups
}

// destination is what a route decision looks at.
type destination struct {
	host   string // a name, or an address without brackets
	port   uint16
	https  bool   // a CONNECT tunnel, or a request inside an intercepted one
	user   string // the authenticated user, or ""
	pol    int    // the request's policy (policyIndex), 0 for none
	rawURL string // for PAC: the URL of a plain request ("" for tunnels)
}

// pick returns the upstreams to try for d, in order, from c's routing; nil
// means DIRECT, by the usual path. buf may hold the order (8 entries do
// for a PAC answer). A PAC file that fails gives an error.
func (p *Proxy) pick(ctx context.Context, c *config, d *destination, buf []*proxies.Upstream) ([]*proxies.Upstream, error) {
	rt := c.routing
	if rt.pac != nil {
		return p.pickPAC(ctx, c, d, buf)
	}
	ip, isIP := policy.ParseHost(d.host)
	resolved := false
	for i := range rt.rules {
		r := &rt.rules[i]
		if r.pol != 0 && r.pol != d.pol {
			continue
		}
		if r.schemes != 0 {
			want := uint8(schemeHTTP)
			if d.https {
				want = schemeHTTPS
			}
			if r.schemes&want == 0 {
				continue
			}
		}
		if r.ports != nil && !slices.Contains(r.ports, d.port) {
			continue
		}
		if r.users != nil && (d.user == "" || !slices.Contains(r.users, d.user)) {
			continue
		}
		if r.hosts != nil && !r.hosts.Match(d.host, ip) {
			if !r.cidrs || isIP {
				continue
			}
			if !resolved {
				resolved = true
				ip = p.firstAddr(ctx, c, d.host)
			}
			if !ip.IsValid() || !r.hosts.Match("", ip) {
				continue
			}
		}
		if r.direct {
			return nil, nil
		}
		return r.pool.AppendPick(buf[:0], d.host), nil // no allocation for pools of up to len(buf)
	}
	return nil, nil
}

// firstAddr resolves a name for a route's CIDR ranges: its first address,
// or none when it does not resolve.
func (p *Proxy) firstAddr(ctx context.Context, c *config, host string) netip.Addr {
	ips, err := p.lookup(ctx, c.up.resolver, host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}
	}
	return ips[0].Unmap()
}

// pacRouting is a configuration's PAC file and the upstreams its answers
// named so far.
type pacRouting struct {
	src   []byte
	log   *slog.Logger // where the file's alert() and skipped entries go
	eval  *pac.Evaluator
	creds map[pac.Entry]string // the credentials given with WithPAC: entry → URL with user info

	mu   sync.RWMutex
	ups  map[pac.Entry]*proxies.Upstream
	list []*proxies.Upstream // in the order made
	keys []string
}

// maxPACUpstreams bounds the upstreams a PAC file's answers may make; past
// it, an entry's upstream is made for the request alone (with no health
// kept).
const maxPACUpstreams = 1024

// compilePAC checks WithPAC's credentials; the file is compiled by
// attachPAC, which can keep the evaluator of the configuration before.
func compilePAC(s *settings) (*pacRouting, error) {
	pr := &pacRouting{src: s.pacSrc, creds: map[pac.Entry]string{}}
	for i, spec := range s.pacCredentials {
		at := "WithPAC: credentials " + strconv.Itoa(i+1) + ": "
		u, err := proxies.Parse(spec)
		if err != nil {
			return nil, errors.New(at + err.Error())
		}
		if !u.HasCredentials() {
			return nil, fmt.Errorf("%s%s has no user info (user:password@)", at, proxies.RedactSpec(spec))
		}
		e := pac.Entry{Addr: u.Addr()}
		switch u.Kind() {
		case proxies.HTTP:
			e.Kind = pac.HTTP
		case proxies.HTTPS:
			e.Kind = pac.HTTPS
		case proxies.SOCKS5:
			e.Kind = pac.SOCKS5
		}
		pr.creds[e] = strings.TrimSpace(spec)
	}
	return pr, nil
}

// attachPAC compiles c's PAC file, or keeps prev's evaluator when the file
// is the same, and takes over prev's upstreams whose keys are the same.
func (p *Proxy) attachPAC(prev *routing, c *config) error {
	pr := c.routing.pac
	var old *pacRouting
	if prev != nil {
		old = prev.pac
	}
	pr.log = loggerOf(c)
	if old != nil && string(old.src) == string(pr.src) && old.log == pr.log {
		pr.eval = old.eval
	} else {
		ev, err := pac.New(pr.src, pac.WithResolver(pacResolver{p}), pac.WithLogger(pr.log))
		if err != nil {
			return fmt.Errorf("WithPAC: %w", err)
		}
		pr.eval = ev
	}
	pr.ups = map[pac.Entry]*proxies.Upstream{}
	if old != nil {
		old.mu.RLock()
		defer old.mu.RUnlock()
		for e, u := range old.ups {
			spec := pr.spec(e)
			key := upstreamKey(spec, c)
			if i := slices.Index(old.list, u); i >= 0 && old.keys[i] == key {
				pr.ups[e] = u
				pr.list = append(pr.list, u)
				pr.keys = append(pr.keys, key)
			}
		}
	}
	return nil
}

// spec returns the upstream URL of a PAC entry: with the credentials given
// for it, if any.
func (pr *pacRouting) spec(e pac.Entry) string {
	if s, ok := pr.creds[e]; ok {
		return s
	}
	return e.UpstreamSpec()
}

// find returns pr's upstream with key, or nil.
func (pr *pacRouting) find(key string) *proxies.Upstream {
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	for i, k := range pr.keys {
		if k == key {
			return pr.list[i]
		}
	}
	return nil
}

// all returns the upstreams made so far.
func (pr *pacRouting) all() []*proxies.Upstream {
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	return slices.Clone(pr.list)
}

// pickPAC evaluates the PAC file for d and returns its answer as upstreams
// in failover order (those down last); nil for an answer of DIRECT alone.
func (p *Proxy) pickPAC(ctx context.Context, c *config, d *destination, buf []*proxies.Upstream) ([]*proxies.Upstream, error) {
	pr := c.routing.pac
	url := d.rawURL
	if url == "" {
		url = "https://" + joinHostPort(d.host, d.port) + "/"
	}
	entries, err := pr.eval.FindProxyForURL(ctx, url, d.host)
	if err != nil {
		return nil, err
	}
	if len(entries) == 1 && entries[0].Kind == pac.Direct {
		return nil, nil
	}
	var each [8]*proxies.Upstream
	ups := each[:0]
	for _, e := range entries {
		u, err := p.pacUpstream(c, e)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ups, u) {
			ups = append(ups, u)
		}
	}
	return proxies.AppendFailover(buf[:0], ups), nil
}

// pacUpstream returns the upstream of a PAC entry, made on first use.
func (p *Proxy) pacUpstream(c *config, e pac.Entry) (*proxies.Upstream, error) {
	pr := c.routing.pac
	pr.mu.RLock()
	u := pr.ups[e]
	pr.mu.RUnlock()
	if u != nil {
		return u, nil
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if u = pr.ups[e]; u != nil {
		return u, nil
	}
	u, err := p.newUpstreamProxy(pr.spec(e), c)
	if err != nil {
		return nil, fmt.Errorf("PAC entry %s: %w", e, err)
	}
	if len(pr.list) < maxPACUpstreams {
		pr.ups[e] = u
		pr.list = append(pr.list, u)
		pr.keys = append(pr.keys, upstreamKey(pr.spec(e), c))
	}
	return u, nil
}

// pacResolver is the Resolver of the PAC file's DNS functions: the one of
// the configuration in force.
type pacResolver struct{ p *Proxy }

func (r pacResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return r.p.cfg.Load().up.resolver.LookupNetIP(ctx, host)
}

// joinHostPort is net.JoinHostPort with a numeric port.
func joinHostPort(host string, port uint16) string {
	if strings.IndexByte(host, ':') >= 0 {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// describeRouting adds the routing options' lines to a description:
// routes and PAC file by what they are, credentials by a keyed digest.
func describeRouting(s *settings, key []byte, add func(setting)) {
	if len(s.routes) == 0 {
		add(setting{option: "WithUpstreams", value: "off"})
	} else {
		rs := make([]string, len(s.routes))
		for i := range s.routes {
			rs[i] = strconv.Itoa(i+1) + ": " + describeRoute(&s.routes[i])
		}
		add(setting{option: "WithUpstreams", value: strings.Join(rs, "; ")})
	}
	if s.pacSrc == nil {
		add(setting{option: "WithPAC", value: "off"})
	} else {
		sum := sha256.Sum256(s.pacSrc)
		add(setting{option: "WithPAC", value: "sha256:" + hex.EncodeToString(sum[:]) + " (" + strconv.Itoa(len(s.pacSrc)) + " bytes)"})
	}
	// Every credential of an upstream, as a keyed digest: a change shows
	// as "changed" only.
	mac := hmac.New(sha256.New, key)
	n := 0
	for i := range s.routes {
		for _, spec := range s.routes[i].Upstreams {
			if proxies.RedactSpec(spec) != spec { // it has user info
				n++
				fmt.Fprintf(mac, "route %d %q\n", i, spec)
			}
		}
	}
	for _, spec := range s.pacCredentials {
		n++
		fmt.Fprintf(mac, "pac %q\n", spec)
	}
	if n == 0 {
		add(setting{option: "upstream credentials", value: "none"})
	} else {
		add(setting{option: "upstream credentials", value: hex.EncodeToString(mac.Sum(nil)), secret: true})
	}
	onOff := "off"
	if s.upstreamResolvesNames {
		onOff = "on"
	}
	add(setting{option: "WithUpstreamResolvesNames", value: onOff})
	switch {
	case s.probe.interval <= 0 && s.probe.target == "":
		add(setting{option: "WithUpstreamProbe", value: "off"})
	case s.probe.target == "":
		add(setting{option: "WithUpstreamProbe", value: "every " + s.probe.interval.String() + ", a connection"})
	default:
		add(setting{option: "WithUpstreamProbe", value: "every " + s.probe.interval.String() + ", a tunnel to " + s.probe.target})
	}
}
