package fwdproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fwdproxy/fwdproxy/internal/mitm"
	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// WithInterception and its own options (intercept.go serves the
// intercepted connections).

// An InterceptOption configures TLS interception (see WithInterception).
type InterceptOption func(*interceptSettings) error

type interceptSettings struct {
	bypassHosts []string        // host patterns, from BypassHosts
	bypassCIDRs []netip.Prefix  // ranges and addresses, from BypassHosts
	bypass      *policy.Matcher // both, compiled by WithInterception
	decide      InterceptFunc
	cacheSize   int
	store       CertStore
}

// BypassHosts tunnels CONNECTs to destinations matching any of patterns
// instead of intercepting them. Patterns are written as for WithDenyHosts and
// parsed by the same code: "example.com" matches that host, "*.example.com"
// any host below it, "10.0.0.0/8" and "127.0.0.1" CONNECT targets that are IP
// addresses in that range or equal to that address (names are not resolved
// for this decision; use an InterceptFunc for that).
func BypassHosts(patterns ...string) InterceptOption {
	return func(s *interceptSettings) error {
		hosts, cidrs, err := parseHostRules("BypassHosts", patterns) // options.go: the access rules' grammar
		if err != nil {
			return err
		}
		s.bypassHosts = append(s.bypassHosts, hosts...)
		s.bypassCIDRs = append(s.bypassCIDRs, cidrs...)
		return nil
	}
}

// InterceptIf sets a hook that decides, for CONNECTs not bypassed, which are
// intercepted. Without it every such CONNECT is intercepted.
func InterceptIf(f InterceptFunc) InterceptOption {
	return func(s *interceptSettings) error {
		if f == nil {
			return errors.New("InterceptIf: nil func")
		}
		s.decide = f
		return nil
	}
}

// CertCacheSize sets how many leaf certificates the default in-memory store
// keeps (default 1024). It has no effect with ShareCertStore.
func CertCacheSize(n int) InterceptOption {
	return func(s *interceptSettings) error {
		if n < 1 {
			return fmt.Errorf("CertCacheSize: need at least 1, got %d", n)
		}
		s.cacheSize = n
		return nil
	}
}

// ShareCertStore makes the proxy keep its leaf certificates in cs, which
// may be shared with other proxies using the same CA.
func ShareCertStore(cs CertStore) InterceptOption {
	return func(s *interceptSettings) error {
		if cs == nil {
			return errors.New("ShareCertStore: nil store")
		}
		s.store = cs
		return nil
	}
}

// WithInterception turns on TLS interception, off by default. A CONNECT
// that passes the connect hooks and is not bypassed (see BypassHosts,
// InterceptIf) is not tunnelled: the proxy answers 200 and looks at the
// client's first bytes. A TLS ClientHello gets a handshake (TLS 1.2 with
// AEAD suites, or TLS 1.3) with a certificate it mints for the SNI (or the
// CONNECT host when there is none) signed by ca, and the decrypted HTTP/1.1
// or HTTP/2 requests are served like plain proxy requests, hooks included,
// and sent over verified TLS to the CONNECT target. Plain HTTP/1.x (ws://,
// http:// to other ports) is served the same way and sent as plain HTTP to
// the target. Any other protocol, or a client that sends nothing for a
// second (the server speaks first), is tunnelled to the target untouched.
// ca must be a CA certificate with its private key, e.g. from LoadCA or
// LoadOrCreateCA; clients must trust it.
func WithInterception(ca tls.Certificate, opts ...InterceptOption) Option {
	return func(c *config) error {
		s := &interceptSettings{cacheSize: mitm.DefaultCacheSize}
		for _, o := range opts {
			if o == nil {
				return errors.New("WithInterception: nil InterceptOption")
			}
			if err := o(s); err != nil {
				return fmt.Errorf("WithInterception: %w", err)
			}
		}
		bypass, err := policy.NewMatcher(s.bypassHosts, s.bypassCIDRs)
		if err != nil {
			return fmt.Errorf("WithInterception: BypassHosts: %w", err)
		}
		s.bypass = bypass
		store := s.store
		if store == nil {
			ms, err := mitm.NewMemoryStore(s.cacheSize)
			if err != nil {
				return fmt.Errorf("WithInterception: %w", err)
			}
			store = ms
		}
		iss, err := mitm.NewIssuer(ca, mitm.WithStore(store))
		if err != nil {
			return fmt.Errorf("WithInterception: %w", err)
		}
		c.intercept = &interceptor{settings: s, issuer: iss, tlsConf: iss.TLSConfig("h2", "http/1.1")}
		return nil
	}
}
