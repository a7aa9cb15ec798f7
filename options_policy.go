package fwdproxy

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"
)

// Options for per-user policy and quotas (userpolicy.go) and the shared
// state that replicas use to enforce them together (shared.go).

// Policy is what one user, or a group of users or clients, may do, and how
// much. WithPolicies takes a list of them: the first that matches a request
// or tunnel applies to it, on top of the Proxy's own rules (a policy can
// narrow what they allow, never widen it). A request no policy matches has
// no policy: only the Proxy's rules and limits apply.
type Policy struct {
	// Name names the policy in logs, refusals and the description of a
	// reload. Required, unique.
	Name string
	// Users matches the authenticated user: the Basic user name (over
	// HTTP/1.1, HTTP/2, or SOCKS5's user name), an Authenticator's user, or
	// the identity of a verified client certificate (WithTLS).
	Users []string
	// Clients matches unauthenticated clients by address: CIDR ranges or
	// addresses ("10.0.0.0/8", "192.0.2.7"), as Serve sees them (the PROXY
	// protocol's client with WithProxyProtocol). An authenticated request
	// is matched by Users only.
	Clients []string
	// A policy without Users and Clients matches every request: it is the
	// default policy and must be the last.

	// AllowHosts, if set, is the only destinations the policy allows (host
	// patterns as in WithAllowHosts, or CIDR ranges); DenyHosts are
	// refused. Both are checked on the name asked for and on every address
	// that is dialed.
	AllowHosts, DenyHosts []string
	// Ports, if set, is the only destination ports the policy allows, for
	// plain requests and tunnels alike (a CONNECT still needs its port
	// opened by WithAllowPorts too).
	Ports []uint16
	// Intercept overrides TLS interception for the policy's tunnels:
	// "" follows the Proxy (WithInterception, WithInterceptFunc), "off"
	// never intercepts, "on" intercepts every tunnel not bypassed
	// (WithInterceptBypass) and needs WithInterception.
	Intercept string
	// Routes sends the policy's traffic through upstream proxies, as
	// WithUpstreams' routes do; they are tried before WithUpstreams' routes
	// (a route of the policy with no match field takes all its traffic).
	// They cannot be combined with WithPAC.
	Routes []Route

	// Rate limits the requests and tunnels of each user (or, for a policy
	// matched by Clients, each client address) of the policy: PerSecond on
	// average, bursts of Burst (at least 1). Zero: no limit. Over it: 429
	// with Retry-After. On a shared store with RateTaker (redisstore), each
	// replica takes the events of 100 ms at the rate at once and spends
	// them locally: the limit holds across replicas within one such batch
	// per replica (see RateTaker); rates under 20 a second (a batch of one
	// event) are decided one request at a time.
	Rate Rate
	// BytesPerDay is the quota of bytes each user (or client address) may
	// move per day (UTC), both directions, bodies and tunnels alike. A
	// request made after it is used up gets 429 with Retry-After saying
	// when the day ends; a transfer that reaches it is cut there. Zero: no
	// quota.
	BytesPerDay int64
	// MaxTunnels bounds the tunnels (CONNECT, upgrades aside) each user (or
	// client address) has open at once. Zero: no bound. Over it: 429.
	MaxTunnels int
}

// WithPolicies sets per-user policies (see Policy), tried in order. Their
// quotas are kept in memory, or in the store of WithSharedState, shared
// with the replicas using it. Policies change with Reload; usage and open
// tunnels are counted per user and carry over, so a new quota applies at
// once to what was used. WithPolicies() removes them.
func WithPolicies(ps ...Policy) Option {
	return optionFunc(func(s *settings) error {
		out := make([]Policy, len(ps))
		for i, p := range ps {
			p.Users, p.Clients = clone(p.Users), clone(p.Clients)
			p.AllowHosts, p.DenyHosts, p.Ports = clone(p.AllowHosts), clone(p.DenyHosts), clone(p.Ports)
			rs := make([]Route, len(p.Routes))
			for j, r := range p.Routes {
				rs[j] = Route{Hosts: clone(r.Hosts), Ports: clone(r.Ports), Schemes: clone(r.Schemes), Users: clone(r.Users),
					Upstreams: clone(r.Upstreams), Policy: r.Policy}
			}
			p.Routes = rs
			out[i] = p
		}
		s.policies = out
		return nil
	})
}

// WithSharedState keeps the policies' rate limits, byte quotas and tunnel
// counts in st, shared by every replica that uses it, such as a
// redisstore.Store (its certificates are given with WithCertStore). Each
// call waits at most DefaultStoreTimeout; a call that fails is decided by
// the Proxy's in-memory state instead, and counted in
// Stats.Quotas.StoreErrors. Without it (or with nil) everything is kept in
// memory. It can change with Reload; a tunnel keeps the store it started
// with. st must be comparable (a pointer, as redisstore's is): a reload
// keeps the usage counted with the same store.
func WithSharedState(st SharedState) Option {
	return optionFunc(func(s *settings) error {
		if st != nil && !reflect.TypeOf(st).Comparable() {
			return fmt.Errorf("WithSharedState: a %T cannot be compared with another store; pass a pointer to it", st)
		}
		s.shared = st
		return nil
	})
}

// WithLeaseTTL sets how long a tunnel's lease (Policy.MaxTunnels) lives
// in the shared store unless renewed (default DefaultLeaseTTL, 30 s). A
// lease is renewed every third of it while its tunnel is open; the
// tunnels of a replica that dies stop counting within it.
func WithLeaseTTL(d time.Duration) Option {
	return optionFunc(func(s *settings) error {
		if d < 30*time.Millisecond {
			return fmt.Errorf("WithLeaseTTL: %v is too short (at least 30ms)", d)
		}
		s.leaseTTL = d
		return nil
	})
}

// validatePolicy checks one policy's quotas and switches; at prefixes
// errors.
func validatePolicy(p *Policy, at string) error {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New(at+"no Name"))
	}
	if p.Rate != (Rate{}) {
		if !(p.Rate.PerSecond > 0) || math.IsInf(p.Rate.PerSecond, 0) {
			errs = append(errs, fmt.Errorf("%sRate.PerSecond %v must be positive and finite", at, p.Rate.PerSecond))
		}
		if p.Rate.Burst < 1 {
			errs = append(errs, fmt.Errorf("%sRate.Burst %d must be at least 1", at, p.Rate.Burst))
		}
	}
	if p.BytesPerDay < 0 {
		errs = append(errs, fmt.Errorf("%sBytesPerDay %d must not be negative", at, p.BytesPerDay))
	}
	if p.MaxTunnels < 0 {
		errs = append(errs, fmt.Errorf("%sMaxTunnels %d must not be negative", at, p.MaxTunnels))
	}
	switch p.Intercept {
	case "", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("%sIntercept %q must be \"\", \"on\" or \"off\"", at, p.Intercept))
	}
	for _, port := range p.Ports {
		if port == 0 {
			errs = append(errs, errors.New(at+"port 0 in Ports"))
		}
	}
	return errors.Join(errs...)
}
