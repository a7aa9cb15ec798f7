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

// interceptSettings are what WithInterception and its InterceptOptions set;
// buildConfig derives the interceptor from them (newInterceptor).
type interceptSettings struct {
	ca          tls.Certificate
	bypassHosts []string       // host patterns, from WithInterceptBypass
	bypassCIDRs []netip.Prefix // ranges and addresses, from WithInterceptBypass
	decide      InterceptFunc
	cacheSize   int
	store       CertStore
}

// WithInterceptBypass tunnels CONNECTs to destinations matching any of
// patterns instead of intercepting them. Patterns are written as for
// WithDenyHosts and parsed by the same code: "example.com" matches that
// host, "*.example.com" any host below it, "10.0.0.0/8" and "127.0.0.1"
// CONNECT targets that are IP addresses in that range or equal to that
// address (names are not resolved for this decision; use WithInterceptFunc
// for that). Given again, it adds to the patterns.
func WithInterceptBypass(patterns ...string) InterceptOption {
	return func(s *interceptSettings) error {
		hosts, cidrs, err := parseHostRules("WithInterceptBypass", patterns) // the access rules' grammar
		if err != nil {
			return err
		}
		s.bypassHosts = append(s.bypassHosts, hosts...)
		s.bypassCIDRs = append(s.bypassCIDRs, cidrs...)
		return nil
	}
}

// WithInterceptFunc sets a function that decides, for CONNECTs not
// bypassed, which are intercepted. Without it every such CONNECT is
// intercepted.
func WithInterceptFunc(f InterceptFunc) InterceptOption {
	return func(s *interceptSettings) error {
		if f == nil {
			return errors.New("WithInterceptFunc: nil func")
		}
		s.decide = f
		return nil
	}
}

// WithCertCacheSize sets how many leaf certificates the default in-memory
// store keeps (default 1024). It has no effect with WithCertStore.
func WithCertCacheSize(n int) InterceptOption {
	return func(s *interceptSettings) error {
		if n < 1 {
			return fmt.Errorf("WithCertCacheSize: need at least 1, got %d", n)
		}
		s.cacheSize = n
		return nil
	}
}

// WithCertStore makes the proxy keep its leaf certificates in cs, which
// may be shared with other proxies using the same CA.
func WithCertStore(cs CertStore) InterceptOption {
	return func(s *interceptSettings) error {
		if cs == nil {
			return errors.New("WithCertStore: nil store")
		}
		s.store = cs
		return nil
	}
}

// WithInterception turns on TLS interception, off by default. A CONNECT
// that passes the connect hooks and is not bypassed (see
// WithInterceptBypass, WithInterceptFunc) is not tunnelled: the proxy
// answers 200 and looks at the client's first bytes. A TLS ClientHello gets
// a handshake (TLS 1.2 with AEAD suites, or TLS 1.3) with a certificate it
// mints for the SNI (or the CONNECT host when there is none) signed by ca,
// and the decrypted HTTP/1.1 or HTTP/2 requests are served like plain proxy
// requests, hooks included, and sent over verified TLS to the CONNECT
// target. Plain HTTP/1.x (ws://, http:// to other ports) is served the same
// way and sent as plain HTTP to the target. Any other protocol, or a client
// that sends nothing for a second (the server speaks first), is tunnelled
// to the target untouched. ca must be a CA certificate with its private
// key, e.g. from LoadCA or LoadOrCreateCA; clients must trust it.
func WithInterception(ca tls.Certificate, opts ...InterceptOption) Option {
	return optionFunc(func(s *settings) error {
		is := &interceptSettings{ca: ca, cacheSize: mitm.DefaultCacheSize}
		for _, o := range opts {
			if o == nil {
				return errors.New("WithInterception: nil InterceptOption")
			}
			if err := o(is); err != nil {
				return fmt.Errorf("WithInterception: %w", err)
			}
		}
		s.interception = is
		return nil
	})
}

// interceptor is what a configuration with interception derives from its
// interceptSettings: the bypass matcher and the certificate issuer with its
// TLS configuration.
type interceptor struct {
	bypass  *policy.Matcher
	decide  InterceptFunc
	issuer  *mitm.Issuer
	tlsConf *tls.Config
}

// newInterceptor derives the interceptor of s (buildConfig calls it).
func newInterceptor(s *interceptSettings) (*interceptor, error) {
	bypass, err := policy.NewMatcher(s.bypassHosts, s.bypassCIDRs)
	if err != nil {
		return nil, fmt.Errorf("WithInterceptBypass: %w", err)
	}
	store := s.store
	if store == nil {
		if store, err = mitm.NewMemoryStore(s.cacheSize); err != nil {
			return nil, err
		}
	}
	iss, err := mitm.NewIssuer(s.ca, mitm.WithStore(store))
	if err != nil {
		return nil, err
	}
	return &interceptor{bypass: bypass, decide: s.decide, issuer: iss, tlsConf: iss.TLSConfig("h2", "http/1.1")}, nil
}
