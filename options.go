package fwdproxy

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The With… constructors live by concern in options_upstream.go,
// options_client.go, options_access.go, options_hooks.go,
// options_telemetry.go, options_intercept.go and options_front.go, and the
// resolver's in dnsoptions.go. This file holds the Option type, the
// defaults and buildConfig, which applies the options.

// An Option configures a Proxy; New takes them, and the functions named
// With… make them (a ResolverOption is an Option too: given to New, it
// configures the Proxy's own Resolver). New applies the options in the order
// given, starting from the defaults, and validates the result as a whole:
// an invalid option, or two that cannot go together, make New return an
// error naming the option at fault. WithAllowedCIDRs, WithDenyHosts,
// WithAllowHosts, WithAllowPorts and the hook options add to what was given
// before them; every other option sets a value, and the last one given
// wins.
//
// Hooks follow one rule, whatever their kind (WithAccessHook,
// WithConnectHook, WithRequestHook, WithResponseHook): each option adds a
// hook, the hooks of a kind run in the order they were given, and the first
// that refuses the request (returns an error) decides: the hooks after it do
// not run. A request hook that answers the request itself (returns a
// response) ends the run too.
type Option interface {
	apply(*settings) error
}

// optionFunc is an Option that is a function.
type optionFunc func(*settings) error

func (f optionFunc) apply(s *settings) error { return f(s) }

// settings is what the options set, starting from defaultSettings. The
// configuration a Proxy runs on (config, config.go) is made of it and of
// what buildConfig derives from it.
type settings struct {
	// Upstream (options_upstream.go).
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
	dns                   resolverConfig // the Proxy's own Resolver (dnsoptions.go)
	dnsOptions            []string       // the resolver options given, by name

	// Client side (options_client.go).
	readHeaderTimeout time.Duration
	clientIdleTimeout time.Duration
	maxHeaderBytes    int
	tunnelIdleTimeout time.Duration
	bodyIdleTimeout   time.Duration
	clientWatchDelay  time.Duration // Serve's loop: see h1.DefaultClientWatchDelay
	pseudonym         string
	fallback          http.Handler

	// Access control (options_access.go).
	allowPrivate bool
	allowedCIDRs []netip.Prefix
	auth         Authenticator
	accessRules  policy.Config
	reportOnly   bool
	maxConns     int
	maxTunnels   int
	rate         float64
	burst        int
	maxBodyBytes int64

	// Hooks (options_hooks.go), run as Option says.
	accessHooks   []AccessHook
	connectHooks  []ConnectHook
	requestHooks  []RequestHook
	responseHooks []ResponseHook

	// Logging and telemetry (options_telemetry.go).
	logger         *slog.Logger
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	capture        bool
	captureBytes   int
	logQueueSize   int
	telemetryOff   bool // benchmark baseline only

	// TLS interception (options_intercept.go); nil: off.
	interception *interceptSettings

	// Front ends (options_front.go).
	tls           *tls.Config    // WithTLS, as given (a clone); nil: no ServeTLS
	h2MaxStreams  int            // WithHTTP2MaxStreams
	h2c           bool           // WithCleartextHTTP2
	proxyProtocol []netip.Prefix // WithProxyProtocol's trusted ranges; nil: off
	socksOnHTTP   bool           // WithSOCKSOnHTTPListener
	// Routing through upstream proxies (options_route.go).
	routes                []Route
	pacSrc                []byte
	pacCredentials        []string
	upstreamResolvesNames bool
	probe                 probeSettings

	// Per-user policy and shared state (options_policy.go).
	policies []Policy
	shared   SharedState // nil: in memory
	leaseTTL time.Duration

	// What a Reload does besides installing the configuration (reload.go);
	// no part of the configuration itself.
	reloadClosesDenied bool
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

// defaultSettings are the settings before any option, with pseudonym as
// the Via pseudonym (New chooses one per Proxy, see WithVia). Every default
// lives here.
func defaultSettings(pseudonym string) settings {
	return settings{
		dialTimeout:           DefaultDialTimeout,
		tlsHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		responseHeaderTimeout: DefaultResponseHeaderTimeout,
		expectContinueTimeout: time.Second,
		maxIdleConns:          DefaultMaxIdleConns,
		maxIdleConnsPerHost:   DefaultMaxIdleConnsPerHost,
		idleConnTimeout:       DefaultIdleConnTimeout,
		maxResponseHeader:     DefaultMaxResponseHeaderBytes,
		dns:                   defaultResolverConfig(),
		readHeaderTimeout:     DefaultReadHeaderTimeout,
		clientIdleTimeout:     DefaultClientIdleTimeout,
		maxHeaderBytes:        DefaultMaxHeaderBytes,
		tunnelIdleTimeout:     DefaultTunnelIdleTimeout,
		bodyIdleTimeout:       DefaultBodyIdleTimeout,
		clientWatchDelay:      h1.DefaultClientWatchDelay,
		pseudonym:             pseudonym,
		maxConns:              DefaultMaxConns,
		maxTunnels:            DefaultMaxTunnels,
		logQueueSize:          defaultLogQueueSize,
		h2MaxStreams:          DefaultHTTP2MaxStreams,
		leaseTTL:              DefaultLeaseTTL,
	}
}

// randomPseudonym is the default Via pseudonym: "fwdproxy-" and six random
// hex digits, distinct per Proxy.
func randomPseudonym() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "fwdproxy-" + hex.EncodeToString(b[:])
}

// buildConfig is the one place that makes a configuration: it applies opts
// to base (the defaults), in order, validates the result as a whole and
// derives from it everything a request reads (compiled rules, rate limiter,
// guard, Via values, interceptor, the settings of the own HTTP/1.1 server
// and transport). Each error names the option at fault. The result is
// immutable; New installs the first one (swap, config.go).
func buildConfig(base settings, opts []Option) (*config, error) {
	s := base
	var errs []error
	for _, o := range opts {
		if o == nil {
			errs = append(errs, errors.New("nil Option"))
			continue
		}
		if err := o.apply(&s); err != nil {
			errs = append(errs, err)
		}
	}
	if s.resolver != nil && len(s.dnsOptions) > 0 {
		errs = append(errs, fmt.Errorf("WithResolver: cannot be combined with %s, which configures the Proxy's own Resolver (give it to NewResolver instead)", s.dnsOptions[0]))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c := &config{settings: s}
	var err error
	if c.guard, err = policy.NewPrefixSet(s.allowedCIDRs...); err != nil {
		return nil, fmt.Errorf("WithAllowedCIDRs: %w", err)
	}
	rules := s.accessRules
	rules.ConnectPortHint = connectPortHint
	if c.rules, err = policy.NewRules(rules); err != nil {
		return nil, err
	}
	if s.rate > 0 {
		if c.limiter, err = policy.NewRateLimiter(s.rate, s.burst, rateLimitClients); err != nil {
			return nil, fmt.Errorf("WithRateLimit: %w", err)
		}
	}
	if s.interception != nil {
		if c.intercept, err = newInterceptor(s.interception); err != nil { // options_intercept.go
			return nil, fmt.Errorf("WithInterception: %w", err)
		}
	}
	if c.front, err = buildFront(&s); err != nil { // options_front.go
		return nil, err
	}
	if c.users, err = compilePolicies(&s); err != nil { // userpolicy.go
		return nil, err
	}
	if c.routing, err = compileRouting(&s); err != nil { // route.go
		return nil, err
	}
	c.via = newViaValues(s.pseudonym)
	c.h1srv = h1.ServerSettings{
		ReadHeaderTimeout: s.readHeaderTimeout,
		IdleTimeout:       s.clientIdleTimeout,
		MaxHeaderBytes:    s.maxHeaderBytes,
		ClientWatchDelay:  s.clientWatchDelay,
		MaxConns:          s.maxConns,
		OverLimitReason:   tooManyConnsReason,
	}
	c.h1tr = h1.TransportSettings{
		MaxIdleConnsPerHost:    s.maxIdleConnsPerHost,
		MaxIdleConns:           s.maxIdleConns,
		IdleConnTimeout:        s.idleConnTimeout,
		ResponseHeaderTimeout:  s.responseHeaderTimeout,
		MaxResponseHeaderBytes: s.maxResponseHeader,
	}
	return c, nil
}

// durationOption returns an Option that sets the field chosen by field to
// d, which must be positive.
func durationOption(name string, d time.Duration, field func(*settings) *time.Duration) Option {
	return optionFunc(func(s *settings) error {
		if d <= 0 {
			return fmt.Errorf("%s: duration must be positive, got %v", name, d)
		}
		*field(s) = d
		return nil
	})
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
