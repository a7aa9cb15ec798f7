package fwdproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// Options for access control (access.go says in which order the checks
// run) and the limits. WithAccessHook is with the other hook options, in
// options_hooks.go.

// WithAllowPrivate lifts the private-address guard: upstream connections
// may go to loopback, private (RFC 1918, unique-local), link-local, CGNAT
// and the other special-purpose ranges, which are refused by default.
func WithAllowPrivate() Option {
	return optionFunc(func(s *settings) error {
		s.allowPrivate = true
		return nil
	})
}

// WithAllowedCIDRs opens the private-address guard for the given ranges
// only ("10.1.0.0/16", "fd00::/8"; a bare address means just it), leaving
// it closed for every other special-purpose address.
func WithAllowedCIDRs(cidrs ...string) Option {
	return optionFunc(func(s *settings) error {
		ps, err := parsePrefixes("WithAllowedCIDRs", cidrs)
		if err != nil {
			return err
		}
		s.allowedCIDRs = append(s.allowedCIDRs, ps...)
		return nil
	})
}

// WithBasicAuth requires proxy authentication with the Basic scheme
// (RFC 7617) on every request and CONNECT: check is called with the
// credentials of the Proxy-Authorization header, and a missing or rejected
// credential is answered with 407 and a Proxy-Authenticate challenge.
// StaticCredentials builds a constant-time check from a fixed table. The
// Proxy-Authorization header is never forwarded nor logged.
func WithBasicAuth(check func(ctx context.Context, user, pass string) bool) Option {
	return optionFunc(func(s *settings) error {
		if check == nil {
			return errors.New("WithBasicAuth: nil check")
		}
		s.auth = basicAuth{check: check}
		return nil
	})
}

// WithAuthenticator requires proxy authentication by a as on every request
// and CONNECT (see WithBasicAuth), for schemes other than Basic.
func WithAuthenticator(a Authenticator) Option {
	return optionFunc(func(s *settings) error {
		if a == nil {
			return errors.New("WithAuthenticator: nil Authenticator")
		}
		s.auth = a
		return nil
	})
}

// WithDenyHosts refuses (403) requests and tunnels to the given
// destinations: host names ("example.com"), domains ("*.example.com" is
// every name under example.com, not example.com itself), or CIDR ranges and
// addresses ("10.0.0.0/8", "2001:db8::1"), which are matched against every
// address the host resolves to. Deny rules win over allow rules.
func WithDenyHosts(patterns ...string) Option {
	return hostRules("WithDenyHosts", patterns, func(r *policy.Config) (*[]string, *[]netip.Prefix) { return &r.DenyHosts, &r.DenyCIDRs })
}

// WithAllowHosts turns on an allow list: only destinations that match one
// of the patterns (written as for WithDenyHosts) may be reached; any other
// gets 403. A name that matches no host pattern passes when it resolves
// into an allowed CIDR range.
func WithAllowHosts(patterns ...string) Option {
	return hostRules("WithAllowHosts", patterns, func(r *policy.Config) (*[]string, *[]netip.Prefix) { return &r.AllowHosts, &r.AllowCIDRs })
}

// hostRules is an option named name that adds patterns (parseHostRules) to
// the host and CIDR lists lists returns: the deny or the allow rules.
func hostRules(name string, patterns []string, lists func(*policy.Config) (*[]string, *[]netip.Prefix)) Option {
	return optionFunc(func(s *settings) error {
		hosts, cidrs, err := parseHostRules(name, patterns)
		if err != nil {
			return err
		}
		h, c := lists(&s.accessRules)
		*h = append(*h, hosts...)
		*c = append(*c, cidrs...)
		return nil
	})
}

// WithAllowPorts allows CONNECT tunnels to the given ports in addition to
// 443, the only port open to tunnels by default (a tunnel carries any
// protocol, so ports are opened one by one). Absolute-form requests may use
// any port.
func WithAllowPorts(ports ...uint16) Option {
	return optionFunc(func(s *settings) error {
		if len(s.accessRules.ConnectPorts) == 0 {
			s.accessRules.ConnectPorts = []policy.PortRange{{Lo: 443, Hi: 443}}
		}
		for _, port := range ports {
			if port == 0 {
				return errors.New("WithAllowPorts: port 0")
			}
			s.accessRules.ConnectPorts = append(s.accessRules.ConnectPorts, policy.PortRange{Lo: port, Hi: port})
		}
		return nil
	})
}

// WithReportOnly makes the allow/deny rules and the access hooks report
// instead of refuse: what they would deny is logged at Warn level
// ("would deny (report-only)") and let through, so that new rules can be
// rolled out safely. Authentication, limits and the private-address guard
// are still enforced.
func WithReportOnly() Option {
	return optionFunc(func(s *settings) error {
		s.reportOnly = true
		return nil
	})
}

// WithMaxConns bounds the client connections served at once by Serve and
// ListenAndServe (default DefaultMaxConns). A connection over the limit is
// answered with 503 and closed. Tunnels, once open, count against
// WithMaxTunnels instead.
func WithMaxConns(n int) Option {
	return limitOption("WithMaxConns", n, func(s *settings) *int { return &s.maxConns })
}

// WithMaxTunnels bounds the CONNECT tunnels and upgraded connections open
// at once (default DefaultMaxTunnels). Past it, new ones get 503 while the
// others keep working.
func WithMaxTunnels(n int) Option {
	return limitOption("WithMaxTunnels", n, func(s *settings) *int { return &s.maxTunnels })
}

// limitOption is an option named name that sets the limit field returns to
// n, which must be positive.
func limitOption(name string, n int, field func(*settings) *int) Option {
	return optionFunc(func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("%s: %d is not positive", name, n)
		}
		*field(s) = n
		return nil
	})
}

// WithRateLimit limits each client IP address to perSecond requests and
// tunnels per second on average, with bursts of up to burst; past it the
// client gets 429 with Retry-After. Off by default.
func WithRateLimit(perSecond float64, burst int) Option {
	return optionFunc(func(s *settings) error {
		if !(perSecond > 0) || perSecond > 1e9 || burst < 1 {
			return fmt.Errorf("WithRateLimit: need a positive rate and a burst of at least 1, got %v and %d", perSecond, burst)
		}
		s.rate, s.burst = perSecond, burst
		return nil
	})
}

// WithMaxRequestBodyBytes refuses request bodies larger than n bytes with
// 413: at once when the Content-Length says so, otherwise when the
// streamed body passes n (the upstream request is then aborted). Off by
// default.
func WithMaxRequestBodyBytes(n int64) Option {
	return optionFunc(func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("WithMaxRequestBodyBytes: %d is not positive", n)
		}
		s.maxBodyBytes = n
		return nil
	})
}
