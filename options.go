package fwdproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
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
	maxResponseHeader     int // WithMaxResponseHeaderBytes
	resolver              *Resolver
	dnsServers            []string

	readHeaderTimeout time.Duration
	clientIdleTimeout time.Duration
	maxHeaderBytes    int
	tunnelIdleTimeout time.Duration
	bodyIdleTimeout   time.Duration
	clientWatchDelay  time.Duration // Serve's loop: see h1.DefaultClientWatchDelay

	pseudonym string
	fallback  http.Handler
	logger    *slog.Logger

	allowPrivate bool
	allowedCIDRs []netip.Prefix
	auth         Authenticator
	rules        policy.Config
	accessHook   AccessHook
	reportOnly   bool
	maxConns     int
	maxTunnels   int
	rate         float64
	burst        int
	maxBodyBytes int64

	connectHooks  []ConnectHook
	requestHooks  []RequestHook
	responseHooks []ResponseHook

	// Telemetry (telemetry.go, accesslog.go, capture.go).
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	capture        bool
	captureBytes   int
	logQueueSize   int
	telemetryOff   bool         // benchmark baseline only
	intercept      *interceptor // TLS interception (intercept.go); nil: off
}

// Defaults. They favour safety (every wait is bounded) and pool reuse under
// load; see the package documentation for the reasoning.
const (
	DefaultDialTimeout            = 10 * time.Second
	DefaultTLSHandshakeTimeout    = 10 * time.Second
	DefaultResponseHeaderTimeout  = 30 * time.Second
	DefaultMaxIdleConns           = 1024
	DefaultMaxIdleConnsPerHost    = 64
	DefaultIdleConnTimeout        = 90 * time.Second
	DefaultMaxResponseHeaderBytes = 256 << 10
	DefaultReadHeaderTimeout      = 10 * time.Second
	DefaultClientIdleTimeout      = 120 * time.Second
	DefaultMaxHeaderBytes         = 64 << 10
	DefaultTunnelIdleTimeout      = 5 * time.Minute
	DefaultBodyIdleTimeout        = 60 * time.Second
	DefaultMaxConns               = 4096
	DefaultMaxTunnels             = 1024
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
		maxResponseHeader:     DefaultMaxResponseHeaderBytes,
		readHeaderTimeout:     DefaultReadHeaderTimeout,
		clientIdleTimeout:     DefaultClientIdleTimeout,
		maxHeaderBytes:        DefaultMaxHeaderBytes,
		tunnelIdleTimeout:     DefaultTunnelIdleTimeout,
		bodyIdleTimeout:       DefaultBodyIdleTimeout,
		clientWatchDelay:      h1.DefaultClientWatchDelay,
		maxConns:              DefaultMaxConns,
		maxTunnels:            DefaultMaxTunnels,
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
// which forces a new connection for most requests under load). For plain
// HTTP/1.1 upstreams the limits are enforced within about a second rather
// than the instant a connection goes idle, so that a burst of more
// concurrent requests than the limit reuses its connections instead of
// redialing them.
func WithMaxIdleConns(perHost, total int) Option {
	return func(c *config) error {
		if perHost < 1 || total < perHost {
			return fmt.Errorf("WithMaxIdleConns: need 1 <= perHost <= total, got %d, %d", perHost, total)
		}
		c.maxIdleConnsPerHost, c.maxIdleConns = perHost, total
		return nil
	}
}

// WithMaxResponseHeaderBytes bounds the size of an upstream's response
// head (status line and header fields, each informational response
// counted on its own), on every upstream path: the proxy's own HTTP/1.1
// client and http.Transport over HTTP/1.1 and HTTP/2 (where the limit is
// advertised as SETTINGS_MAX_HEADER_LIST_SIZE and counted as HTTP/2 counts
// it). Past it the client gets 502 naming the limit. n must be from 1024
// to 1 GiB. Default DefaultMaxResponseHeaderBytes, 256 KiB: far above what
// real origins send (nginx and Envoy refuse more than 8 and 60 KiB by
// default) yet small enough that a thousand responses waiting upstream
// cannot hold more than a quarter of a GiB in heads (net/http's 10 MB
// would allow 10 GB).
func WithMaxResponseHeaderBytes(n int) Option {
	return func(c *config) error {
		if n < 1024 || n > 1<<30 {
			return fmt.Errorf("WithMaxResponseHeaderBytes: need 1024 to %d bytes, got %d", 1<<30, n)
		}
		c.maxResponseHeader = n
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

// WithBodyIdleTimeout gives up on a plain request or response body that
// moves no byte for d (default DefaultBodyIdleTimeout, 60 s, as nginx's
// client_body_timeout and proxy_read_timeout). A client that stops sending
// its request body gets 408 and its connection is closed (cut instead, if
// the response has begun); an upstream that stops sending its response
// body has the client connection cut, the only honest signal once the
// status line is gone, with a log line naming the upstream. A client that
// stops reading a response stalls it too. Only the time without progress
// counts: a slow body that keeps moving is never cut. Tunnels have
// WithTunnelIdleTimeout instead. A request body is watched through
// http.ResponseController, so behind a server of your own the
// ResponseWriter must support SetReadDeadline (net/http's does).
func WithBodyIdleTimeout(d time.Duration) Option {
	return durationOption("WithBodyIdleTimeout", d, func(c *config) *time.Duration { return &c.bodyIdleTimeout })
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

// WithAllowPrivate lifts the private-address guard: upstream connections
// may go to loopback, private (RFC 1918, unique-local), link-local, CGNAT
// and the other special-purpose ranges, which are refused by default.
func WithAllowPrivate() Option {
	return func(c *config) error {
		c.allowPrivate = true
		return nil
	}
}

// WithAllowedCIDRs opens the private-address guard for the given ranges
// only ("10.1.0.0/16", "fd00::/8"; a bare address means just it), leaving
// it closed for every other special-purpose address.
func WithAllowedCIDRs(cidrs ...string) Option {
	return func(c *config) error {
		ps, err := parsePrefixes("WithAllowedCIDRs", cidrs)
		if err != nil {
			return err
		}
		c.allowedCIDRs = append(c.allowedCIDRs, ps...)
		return nil
	}
}

// WithBasicAuth requires proxy authentication with the Basic scheme
// (RFC 7617) on every request and CONNECT: check is called with the
// credentials of the Proxy-Authorization header, and a missing or rejected
// credential is answered with 407 and a Proxy-Authenticate challenge.
// StaticCredentials builds a constant-time check from a fixed table. The
// Proxy-Authorization header is never forwarded nor logged.
func WithBasicAuth(check func(ctx context.Context, user, pass string) bool) Option {
	return func(c *config) error {
		if check == nil {
			return errors.New("WithBasicAuth: nil check")
		}
		c.auth = basicAuth{check: check}
		return nil
	}
}

// WithAuthenticator requires proxy authentication by a as on every request
// and CONNECT (see WithBasicAuth), for schemes other than Basic.
func WithAuthenticator(a Authenticator) Option {
	return func(c *config) error {
		if a == nil {
			return errors.New("WithAuthenticator: nil Authenticator")
		}
		c.auth = a
		return nil
	}
}

// WithDenyHosts refuses (403) requests and tunnels to the given
// destinations: host names ("example.com"), domains ("*.example.com" is
// every name under example.com, not example.com itself), or CIDR ranges and
// addresses ("10.0.0.0/8", "2001:db8::1"), which are matched against every
// address the host resolves to. Deny rules win over allow rules.
func WithDenyHosts(patterns ...string) Option {
	return func(c *config) error {
		hosts, cidrs, err := parseHostRules("WithDenyHosts", patterns)
		if err != nil {
			return err
		}
		c.rules.DenyHosts = append(c.rules.DenyHosts, hosts...)
		c.rules.DenyCIDRs = append(c.rules.DenyCIDRs, cidrs...)
		return nil
	}
}

// WithAllowHosts turns on an allow list: only destinations that match one
// of the patterns (written as for WithDenyHosts) may be reached; any other
// gets 403. A name that matches no host pattern passes when it resolves
// into an allowed CIDR range.
func WithAllowHosts(patterns ...string) Option {
	return func(c *config) error {
		hosts, cidrs, err := parseHostRules("WithAllowHosts", patterns)
		if err != nil {
			return err
		}
		c.rules.AllowHosts = append(c.rules.AllowHosts, hosts...)
		c.rules.AllowCIDRs = append(c.rules.AllowCIDRs, cidrs...)
		return nil
	}
}

// WithAllowPorts allows CONNECT tunnels to the given ports in addition to
// 443, the only port open to tunnels by default (a tunnel carries any
// protocol, so ports are opened one by one). Absolute-form requests may use
// any port.
func WithAllowPorts(ports ...uint16) Option {
	return func(c *config) error {
		if len(c.rules.ConnectPorts) == 0 {
			c.rules.ConnectPorts = []policy.PortRange{{Lo: 443, Hi: 443}}
		}
		for _, port := range ports {
			if port == 0 {
				return errors.New("WithAllowPorts: port 0")
			}
			c.rules.ConnectPorts = append(c.rules.ConnectPorts, policy.PortRange{Lo: port, Hi: port})
		}
		return nil
	}
}

// WithAccessHook sets a hook that decides on every request and tunnel the
// rules let through; it sees the authenticated user, the client address and
// the target.
func WithAccessHook(h AccessHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithAccessHook: nil hook")
		}
		c.accessHook = h
		return nil
	}
}

// WithReportOnly makes the allow/deny rules and the access hook report
// instead of refuse: what they would deny is logged at Warn level
// ("would deny (report-only)") and let through, so that new rules can be
// rolled out safely. Authentication, limits and the private-address guard
// are still enforced.
func WithReportOnly() Option {
	return func(c *config) error {
		c.reportOnly = true
		return nil
	}
}

// WithMaxConns bounds the client connections served at once by Serve and
// ListenAndServe (default DefaultMaxConns). A connection over the limit is
// answered with 503 and closed. Tunnels, once open, count against
// WithMaxTunnels instead.
func WithMaxConns(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxConns: %d is not positive", n)
		}
		c.maxConns = n
		return nil
	}
}

// WithMaxTunnels bounds the CONNECT tunnels and upgraded connections open
// at once (default DefaultMaxTunnels). Past it, new ones get 503 while the
// others keep working.
func WithMaxTunnels(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxTunnels: %d is not positive", n)
		}
		c.maxTunnels = n
		return nil
	}
}

// WithRateLimit limits each client IP address to perSecond requests and
// tunnels per second on average, with bursts of up to burst; past it the
// client gets 429 with Retry-After. Off by default.
func WithRateLimit(perSecond float64, burst int) Option {
	return func(c *config) error {
		if !(perSecond > 0) || perSecond > 1e9 || burst < 1 {
			return fmt.Errorf("WithRateLimit: need a positive rate and a burst of at least 1, got %v and %d", perSecond, burst)
		}
		c.rate, c.burst = perSecond, burst
		return nil
	}
}

// WithMaxRequestBodyBytes refuses request bodies larger than n bytes with
// 413: at once when the Content-Length says so, otherwise when the
// streamed body passes n (the upstream request is then aborted). Off by
// default.
func WithMaxRequestBodyBytes(n int64) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxRequestBodyBytes: %d is not positive", n)
		}
		c.maxBodyBytes = n
		return nil
	}
}

// parsePrefixes parses CIDR ranges or bare addresses.
func parsePrefixes(opt string, cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, s := range cidrs {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR range or an IP address", opt, s)
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseHostRules splits host rules into host patterns and CIDR ranges,
// validating both.
func parseHostRules(opt string, patterns []string) (hosts []string, cidrs []netip.Prefix, err error) {
	for _, s := range patterns {
		if p, perr := parsePrefix(s); perr == nil {
			cidrs = append(cidrs, p)
			continue
		}
		if _, perr := policy.ParsePattern(s); perr != nil {
			return nil, nil, fmt.Errorf("%s: %q is neither a host pattern nor a CIDR range: %v", opt, s, perr)
		}
		hosts = append(hosts, s)
	}
	return hosts, cidrs, nil
}
