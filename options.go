package fwdproxy

import (
	"crypto/x509"
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
