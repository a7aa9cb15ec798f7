package fwdproxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// An Option configures a Proxy. Options are applied and validated once, by
// New; an invalid option makes New return an error.
type Option func(*config) error

// config is the immutable configuration of a Proxy. Every default lives in
// defaultConfig.
type config struct {
	dialTimeout           time.Duration
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	expectContinueTimeout time.Duration
	maxIdleConns          int
	maxIdleConnsPerHost   int
	idleConnTimeout       time.Duration
	proxyFromEnvironment  bool
	upstreamRoots         *x509.CertPool
	resolver              *Resolver
	dnsServers            []string

	readHeaderTimeout time.Duration
	clientIdleTimeout time.Duration
	maxHeaderBytes    int
	tunnelIdleTimeout time.Duration

	pseudonym string
	fallback  http.Handler
	logger    *slog.Logger

	connectHooks  []ConnectHook
	requestHooks  []RequestHook
	responseHooks []ResponseHook

	intercept *interceptor // TLS interception (intercept.go); nil: off
}

// Defaults. They favour safety (every wait is bounded) and pool reuse under
// load; see the package documentation for the reasoning.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultMaxIdleConns          = 1024
	DefaultMaxIdleConnsPerHost   = 64
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultClientIdleTimeout     = 120 * time.Second
	DefaultMaxHeaderBytes        = 64 << 10
	DefaultTunnelIdleTimeout     = 5 * time.Minute
)

func defaultConfig() config {
	return config{
		dialTimeout:           DefaultDialTimeout,
		tlsHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		responseHeaderTimeout: DefaultResponseHeaderTimeout,
		expectContinueTimeout: time.Second,
		maxIdleConns:          DefaultMaxIdleConns,
		maxIdleConnsPerHost:   DefaultMaxIdleConnsPerHost,
		idleConnTimeout:       DefaultIdleConnTimeout,
		readHeaderTimeout:     DefaultReadHeaderTimeout,
		clientIdleTimeout:     DefaultClientIdleTimeout,
		maxHeaderBytes:        DefaultMaxHeaderBytes,
		tunnelIdleTimeout:     DefaultTunnelIdleTimeout,
	}
}

// durationOption returns an Option that sets the field chosen by field to
// d, which must be positive.
func durationOption(name string, d time.Duration, field func(*config) *time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%s: duration must be positive, got %v", name, d)
		}
		*field(c) = d
		return nil
	}
}

// WithDialTimeout bounds how long connecting to an upstream may take
// (DNS lookup included). Default 10 s.
func WithDialTimeout(d time.Duration) Option {
	return durationOption("WithDialTimeout", d, func(c *config) *time.Duration { return &c.dialTimeout })
}

// WithTLSHandshakeTimeout bounds the TLS handshake with an https upstream.
// Default 10 s.
func WithTLSHandshakeTimeout(d time.Duration) Option {
	return durationOption("WithTLSHandshakeTimeout", d, func(c *config) *time.Duration { return &c.tlsHandshakeTimeout })
}

// WithResponseHeaderTimeout bounds the wait for an upstream's response
// headers after the request was sent; past it the client gets 504.
// Default 30 s.
func WithResponseHeaderTimeout(d time.Duration) Option {
	return durationOption("WithResponseHeaderTimeout", d, func(c *config) *time.Duration { return &c.responseHeaderTimeout })
}

// WithIdleConnTimeout sets how long an idle upstream connection stays in the
// pool. Default 90 s.
func WithIdleConnTimeout(d time.Duration) Option {
	return durationOption("WithIdleConnTimeout", d, func(c *config) *time.Duration { return &c.idleConnTimeout })
}

// WithMaxIdleConns sets the upstream pool size: idle connections kept per
// host and in total. Defaults 64 and 1024 (Go's own default per host is 2,
// which forces a new connection for most requests under load).
func WithMaxIdleConns(perHost, total int) Option {
	return func(c *config) error {
		if perHost < 1 || total < perHost {
			return fmt.Errorf("WithMaxIdleConns: need 1 <= perHost <= total, got %d, %d", perHost, total)
		}
		c.maxIdleConnsPerHost, c.maxIdleConns = perHost, total
		return nil
	}
}

// WithProxyFromEnvironment makes the proxy forward through the upstream
// proxy named by HTTP_PROXY, HTTPS_PROXY and NO_PROXY. By default those
// variables are ignored, so that a proxy never chains by surprise.
func WithProxyFromEnvironment() Option {
	return func(c *config) error { c.proxyFromEnvironment = true; return nil }
}

// WithUpstreamRootCAs adds trusted roots for verifying https upstreams: a
// certificate is accepted when it verifies against the system roots or
// against pool. Verification itself is never turned off.
func WithUpstreamRootCAs(pool *x509.CertPool) Option {
	return func(c *config) error {
		if pool == nil {
			return errors.New("WithUpstreamRootCAs: nil pool")
		}
		c.upstreamRoots = pool
		return nil
	}
}

// WithReadHeaderTimeout bounds how long a client may take to send request
// headers when the Proxy runs its own server (Serve, ListenAndServe); it cuts
// slowloris clients. Default 10 s.
func WithReadHeaderTimeout(d time.Duration) Option {
	return durationOption("WithReadHeaderTimeout", d, func(c *config) *time.Duration { return &c.readHeaderTimeout })
}

// WithClientIdleTimeout bounds how long an idle keep-alive client connection
// is kept open when the Proxy runs its own server. Default 120 s.
func WithClientIdleTimeout(d time.Duration) Option {
	return durationOption("WithClientIdleTimeout", d, func(c *config) *time.Duration { return &c.clientIdleTimeout })
}

// WithMaxHeaderBytes bounds the size of a client's request headers when the
// Proxy runs its own server. Default 64 KiB.
func WithMaxHeaderBytes(n int) Option {
	return func(c *config) error {
		if n < 1024 {
			return fmt.Errorf("WithMaxHeaderBytes: need at least 1024, got %d", n)
		}
		c.maxHeaderBytes = n
		return nil
	}
}

// WithTunnelIdleTimeout closes a CONNECT tunnel or upgraded connection after
// no byte has moved in either direction for d. Default 5 min.
func WithTunnelIdleTimeout(d time.Duration) Option {
	return durationOption("WithTunnelIdleTimeout", d, func(c *config) *time.Duration { return &c.tunnelIdleTimeout })
}

// WithVia sets the pseudonym the proxy puts in the Via header of requests
// and responses ("1.1 <pseudonym>") and by which it recognises a request
// that has already passed through it (a loop, answered with 508). Proxies
// chained to one another need distinct pseudonyms. The default is
// "fwdproxy-" and six random hex digits chosen by New, distinct per Proxy.
func WithVia(pseudonym string) Option {
	return func(c *config) error {
		if !httpx.ValidToken(pseudonym) {
			return fmt.Errorf("WithVia: pseudonym %q must be a non-empty HTTP token", pseudonym)
		}
		c.pseudonym = pseudonym
		return nil
	}
}

// WithFallback sets the handler for requests that are not proxy requests
// (origin-form, such as "GET /healthz"), so a service can serve its own
// endpoints on the proxy's port. Proxy requests never reach it, whatever
// their path. Without a fallback such requests get 400.
func WithFallback(h http.Handler) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithFallback: nil handler")
		}
		c.fallback = h
		return nil
	}
}

// WithLogger sets the logger for error lines. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithConnectHook adds a hook that decides on every CONNECT request before
// the proxy dials. Hooks run in the order given; the first error denies.
func WithConnectHook(h ConnectHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithConnectHook: nil hook")
		}
		c.connectHooks = append(c.connectHooks, h)
		return nil
	}
}

// WithRequestHook adds a hook that sees every outgoing request before it is
// sent upstream; it may change the request or answer it itself. Hooks run
// in the order given.
func WithRequestHook(h RequestHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithRequestHook: nil hook")
		}
		c.requestHooks = append(c.requestHooks, h)
		return nil
	}
}

// WithResponseHook adds a hook that sees every response before it is sent
// to the client and may change it. Hooks run in the order given.
func WithResponseHook(h ResponseHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithResponseHook: nil hook")
		}
		c.responseHooks = append(c.responseHooks, h)
		return nil
	}
}

// WithResolver makes the Proxy resolve every upstream name with r, which
// the caller owns: Shutdown does not close it, so one Resolver and its cache
// can serve several Proxies. Without it a Proxy creates its own Resolver,
// reading /etc/resolv.conf (or using WithDNSServers), and closes it on
// Shutdown. It cannot be combined with WithDNSServers.
func WithResolver(r *Resolver) Option {
	return func(c *config) error {
		if r == nil {
			return errors.New("WithResolver: nil Resolver")
		}
		if len(c.dnsServers) > 0 {
			return errors.New("WithResolver: cannot be combined with WithDNSServers")
		}
		c.resolver = r
		return nil
	}
}

// WithDNSServers makes the Proxy's own Resolver query addrs ("host:port", or
// an IP address for port 53), in order with failover, instead of the servers
// in /etc/resolv.conf. It cannot be combined with WithResolver.
func WithDNSServers(addrs ...string) Option {
	return func(c *config) error {
		if len(addrs) == 0 {
			return errors.New("WithDNSServers: no server given")
		}
		if c.resolver != nil {
			return errors.New("WithDNSServers: cannot be combined with WithResolver")
		}
		for _, a := range addrs {
			if _, err := parseServerAddr(a, "53"); err != nil {
				return fmt.Errorf("WithDNSServers: %w", err)
			}
		}
		c.dnsServers = append([]string(nil), addrs...)
		return nil
	}
}
