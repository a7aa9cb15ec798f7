package fwdproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Resolver defaults.
const (
	defaultResolvConf     = "/etc/resolv.conf"
	defaultHostsFile      = "/etc/hosts"
	defaultDNSCacheSize   = 4096
	defaultDNSMinTTL      = 5 * time.Second
	defaultDNSMaxTTL      = time.Hour
	defaultDNSNegativeTTL = 5 * time.Minute
	defaultDNSErrorTTL    = time.Second
	defaultDNSStaleWindow = 10 * time.Minute
	defaultDNSTimeout     = 2 * time.Second
)

// resolverConfig is the validated configuration of a Resolver.
type resolverConfig struct {
	servers       []string // "ip:port"; when empty, read from resolvConf
	resolvConf    string
	resolvConfSet bool   // resolvConf was given explicitly
	hostsFile     string // "" disables the hosts file
	hostsSet      bool   // hostsFile was given explicitly
	cacheSize     int
	minTTL        time.Duration
	maxTTL        time.Duration
	negTTL        time.Duration
	errTTL        time.Duration
	staleWindow   time.Duration
	timeout       time.Duration
	prefetch      bool
}

func defaultResolverConfig() resolverConfig {
	return resolverConfig{
		resolvConf:  defaultResolvConf,
		hostsFile:   defaultHostsFile,
		cacheSize:   defaultDNSCacheSize,
		minTTL:      defaultDNSMinTTL,
		maxTTL:      defaultDNSMaxTTL,
		negTTL:      defaultDNSNegativeTTL,
		errTTL:      defaultDNSErrorTTL,
		staleWindow: defaultDNSStaleWindow,
		timeout:     defaultDNSTimeout,
		prefetch:    true,
	}
}

// A ResolverOption configures a Resolver: one made by NewResolver, or the
// Proxy's own, when given to New (a ResolverOption is an Option). The same
// constructor serves both. Options are applied in order and validated;
// an invalid value makes NewResolver or New return an error naming the
// option. New refuses them together with WithResolver, whose Resolver is
// configured by whoever made it.
type ResolverOption interface {
	Option
	applyResolver(*resolverConfig) error
}

// resolverOption is every ResolverOption: set applies it to a
// resolverConfig, and name says which it is.
type resolverOption struct {
	name string
	set  func(*resolverConfig) error
}

func (o resolverOption) applyResolver(c *resolverConfig) error { return o.set(c) }

// apply configures the Proxy's own Resolver, and notes the option for the
// check against WithResolver (buildConfig).
func (o resolverOption) apply(s *settings) error {
	s.dnsOptions = append(s.dnsOptions, o.name)
	return o.set(&s.dns)
}

// WithDNSServers sets the DNS servers to query, in order of preference; the
// next one is tried when a server times out, cannot be reached or fails.
// Each address is an IP address with an optional port ("192.0.2.53",
// "192.0.2.53:5353", "::1", "[::1]:53"); the port defaults to 53. Host
// names are rejected. When WithDNSServers is not given, the servers come
// from the resolv.conf file (see WithResolvConf).
func WithDNSServers(addrs ...string) ResolverOption {
	return resolverOption{"WithDNSServers", func(c *resolverConfig) error {
		if len(addrs) == 0 {
			return errors.New("WithDNSServers: no server given")
		}
		servers := make([]string, 0, len(addrs))
		for _, a := range addrs {
			ap, err := parseServerAddr(a, "53")
			if err != nil {
				return fmt.Errorf("WithDNSServers: %w", err)
			}
			servers = append(servers, ap)
		}
		c.servers = servers
		return nil
	}}
}

// WithResolvConf sets the resolv.conf(5) file the servers are read from
// when WithDNSServers is not given (default /etc/resolv.conf). The file is
// read once, when the Resolver is made; only its nameserver and port
// settings are used, because names are always queried fully qualified. If
// the default file is missing, the resolver falls back to 127.0.0.1:53 and
// [::1]:53; a file named explicitly must be readable.
func WithResolvConf(path string) ResolverOption {
	return resolverOption{"WithResolvConf", func(c *resolverConfig) error {
		if path == "" {
			return errors.New("WithResolvConf: empty path")
		}
		c.resolvConf, c.resolvConfSet = path, true
		return nil
	}}
}

// WithHostsFile sets the hosts(5) file whose entries are answered without
// a query and take precedence over DNS (default /etc/hosts). The file is
// re-read when its modification time or size changes, checked at most
// every few seconds. An empty path disables the hosts file. A missing file
// counts as empty.
func WithHostsFile(path string) ResolverOption {
	return resolverOption{"WithHostsFile", func(c *resolverConfig) error {
		c.hostsFile, c.hostsSet = path, true
		return nil
	}}
}

// WithDNSCacheSize bounds the number of names cached (default 4096). When
// the cache is full, the least recently used names are evicted.
func WithDNSCacheSize(n int) ResolverOption {
	return resolverOption{"WithDNSCacheSize", func(c *resolverConfig) error {
		if n < 1 {
			return fmt.Errorf("WithDNSCacheSize: %d is not positive", n)
		}
		c.cacheSize = n
		return nil
	}}
}

// WithDNSTTL clamps the time answers are cached to [min, max] (default 5 s
// to 1 h), whatever TTL the records carry. The floor also applies to
// negative answers.
func WithDNSTTL(min, max time.Duration) ResolverOption {
	return resolverOption{"WithDNSTTL", func(c *resolverConfig) error {
		if min < 0 || max <= 0 || min > max {
			return fmt.Errorf("WithDNSTTL: invalid range %v..%v", min, max)
		}
		c.minTTL, c.maxTTL = min, max
		return nil
	}}
}

// WithDNSNegativeTTL caps the time a "no such host" or "no address of this
// type" answer is cached (default 5 min). Below the cap, the negative TTL
// comes from the SOA record of the answer as RFC 2308 describes (the lower
// of its TTL and its MINIMUM field), or is the TTL floor when the answer
// carries no SOA. Zero disables negative caching.
func WithDNSNegativeTTL(max time.Duration) ResolverOption {
	return dnsDuration("WithDNSNegativeTTL", max, func(c *resolverConfig) *time.Duration { return &c.negTTL })
}

// WithDNSErrorTTL sets how long a failed lookup (timeout, unreachable
// servers, SERVFAIL, REFUSED) is cached, so that a failing server is not
// asked again for every request (default 1 s). Zero disables error caching.
func WithDNSErrorTTL(d time.Duration) ResolverOption {
	return dnsDuration("WithDNSErrorTTL", d, func(c *resolverConfig) *time.Duration { return &c.errTTL })
}

// WithDNSServeStale sets how long after its expiry a cached address may
// still be served when every server fails, as RFC 8767 describes (default
// 10 min). A stale answer is cached for 30 s and refreshed in the
// background while it is used. Zero disables serving stale answers.
func WithDNSServeStale(window time.Duration) ResolverOption {
	return dnsDuration("WithDNSServeStale", window, func(c *resolverConfig) *time.Duration { return &c.staleWindow })
}

// dnsDuration is a resolver option named name that sets the duration
// field returns to d, which may be zero (off) but not negative.
func dnsDuration(name string, d time.Duration, field func(*resolverConfig) *time.Duration) ResolverOption {
	return resolverOption{name, func(c *resolverConfig) error {
		if d < 0 {
			return fmt.Errorf("%s: negative duration %v", name, d)
		}
		*field(c) = d
		return nil
	}}
}

// WithDNSTimeout bounds each exchange with a server (default 2 s). A whole
// lookup, with retries and failover across servers, is bounded by 2.5
// times this value.
func WithDNSTimeout(d time.Duration) ResolverOption {
	return resolverOption{"WithDNSTimeout", func(c *resolverConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithDNSTimeout: %v is not positive", d)
		}
		c.timeout = d
		return nil
	}}
}

// WithDNSPrefetch enables or disables prefetching (default enabled): a
// cached name looked up during the last tenth of its TTL (at least its last
// second) is refreshed in the background, so that steady traffic never
// waits on DNS.
func WithDNSPrefetch(enabled bool) ResolverOption {
	return resolverOption{"WithDNSPrefetch", func(c *resolverConfig) error {
		c.prefetch = enabled
		return nil
	}}
}

// parseServerAddr accepts "ip", "ip:port", "[ipv6]" and "[ipv6]:port" and
// returns the address in "ip:port" form, using port when none is given.
func parseServerAddr(s, port string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("server %q: port 0", s)
		}
		return ap.String(), nil
	}
	host := s
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		host = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("server %q is not an IP address with an optional port", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("server %q: invalid port %q", s, port)
	}
	return netip.AddrPortFrom(a, uint16(p)).String(), nil
}
