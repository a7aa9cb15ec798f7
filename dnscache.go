package fwdproxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

const (
	// staleTTL is how long a stale answer is cached (RFC 8767 §4).
	staleTTL = 30 * time.Second
	// minStaleRetry bounds how often a name served stale is refreshed in
	// the background.
	minStaleRetry = time.Second
	// minPrefetchWindow is the least time before expiry at which a hit
	// triggers a prefetch.
	minPrefetchWindow = time.Second
	// promoteInterval is how often, at most, a hit moves an entry to the
	// front of the LRU list, which takes a lock.
	promoteInterval = time.Second
)

// Resolver is a caching DNS stub resolver. It answers IP literals and
// hosts-file names itself, queries DNS servers for the rest (A and AAAA in
// parallel, names always fully qualified), and caches every answer for its
// TTL, clamped. Concurrent lookups of a name that is not cached share one
// query; popular names are refreshed before they expire; when every server
// fails, addresses that expired recently are served stale (RFC 8767).
//
// Lookup failures are *net.DNSError values: IsNotFound for a name without
// addresses, IsTimeout when the servers did not answer in time, and
// IsTemporary when they could not be reached or failed.
//
// DialContext connects to a host's addresses with Happy Eyeballs.
//
// Create Resolvers with NewResolver. A Resolver is safe for concurrent use.
// Close stops its background work.
type Resolver struct {
	cfg           resolverConfig
	servers       []string
	lookupTimeout time.Duration
	udp, tcp      dns.Client
	hosts         *hostsFile // nil when disabled
	cache         *dnsCache
	flight        singleflight.Group
	dialer        net.Dialer
	rotation      atomic.Uint32
	stats         resolverCounters
	clock         func() time.Duration // monotonic time since the Resolver was created

	ctx    context.Context // parent of every query; cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup // running lookups
}

// ResolverStats are cumulative counters of a Resolver.
type ResolverStats struct {
	Hits       uint64 // lookups answered from the cache, including negative and stale answers
	Misses     uint64 // lookups that waited for a query
	Coalesced  uint64 // misses that shared another lookup's query
	Stale      uint64 // lookups answered with stale addresses
	Prefetches uint64 // background refreshes: prefetches and refreshes of stale answers
	Evictions  uint64 // names evicted from the full cache
	Errors     uint64 // exchanges with a server that failed: timeouts, unreachable servers, SERVFAIL, REFUSED, bad replies
}

type resolverCounters struct {
	_    [64]byte // hits is written on every hit: keep it on its own cache line
	hits atomic.Uint64
	_    [56]byte
	misses,
	coalesced,
	stale,
	prefetches,
	evictions,
	errors atomic.Uint64
}

// NewResolver returns a Resolver configured by opts (nil ones are
// skipped). It reads the resolv.conf file unless WithDNSServers is given,
// and the hosts file unless disabled.
func NewResolver(opts ...ResolverOption) (*Resolver, error) {
	cfg := defaultResolverConfig()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applyResolver(&cfg); err != nil {
			return nil, fmt.Errorf("fwdproxy: %w", err)
		}
	}
	return newResolver(cfg)
}

// newResolver returns a Resolver configured by cfg: NewResolver's, or the
// one New makes from the resolver options given to it.
func newResolver(cfg resolverConfig) (*Resolver, error) {
	servers := cfg.servers
	if len(servers) == 0 {
		var err error
		if servers, err = serversFromResolvConf(cfg.resolvConf, cfg.resolvConfSet); err != nil {
			return nil, err
		}
	}
	r := &Resolver{
		cfg:           cfg,
		servers:       servers,
		lookupTimeout: cfg.timeout * 5 / 2,
		udp:           dns.Client{Net: "udp", UDPSize: ednsBufferSize, Timeout: cfg.timeout},
		tcp:           dns.Client{Net: "tcp", Timeout: cfg.timeout},
		dialer:        net.Dialer{Timeout: 30 * time.Second},
	}
	epoch := time.Now()
	r.clock = func() time.Duration { return time.Since(epoch) }
	if cfg.hostsFile != "" {
		h, err := newHostsFile(cfg.hostsFile, cfg.hostsSet, r.clock())
		if err != nil {
			return nil, err
		}
		r.hosts = h
	}
	r.cache = newDNSCache(cfg.cacheSize, func() { r.stats.evictions.Add(1) })
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// serversFromResolvConf reads the name servers of a resolv.conf file. When
// the file cannot be read or lists no usable server and required is false,
// the local host is used, as the C library and Go's resolver do.
func serversFromResolvConf(path string, required bool) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		if required {
			return nil, fmt.Errorf("fwdproxy: WithResolvConf: %w", err)
		}
		return []string{"127.0.0.1:53", "[::1]:53"}, nil
	}
	var servers []string
	for _, s := range cc.Servers {
		if a, err := parseServerAddr(s, cc.Port); err == nil {
			servers = append(servers, a)
		}
	}
	if len(servers) == 0 {
		if required {
			return nil, fmt.Errorf("fwdproxy: WithResolvConf: %s lists no usable name server", path)
		}
		return []string{"127.0.0.1:53", "[::1]:53"}, nil
	}
	return servers, nil
}

// LookupNetIP returns the IPv4 and IPv6 addresses of host, a host name or
// an IP literal. The returned slice is shared with the cache and other
// callers: it must not be modified.
//
// IP literals and names in the hosts file are answered without a query.
// Names are matched without regard to case or a trailing dot; a host that is
// not a valid name fails with IsNotFound.
//
// If ctx ends before the answer arrives, LookupNetIP returns at once with a
// *net.DNSError wrapping ctx's error; the query goes on for other callers
// and for the cache.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	name, kind := normalizeHost(host)
	switch kind {
	case hostIP:
		if a, err := netip.ParseAddr(name); err == nil {
			return []netip.Addr{a}, nil
		}
		return nil, invalidHostError(host)
	case hostInvalid:
		return nil, invalidHostError(host)
	}
	now := r.clock()
	if r.hosts != nil {
		if addrs := r.hosts.lookup(name, now); addrs != nil {
			return addrs, nil
		}
	}
	if e := r.cache.get(name); e != nil && now < e.expires {
		r.hit(name, e, now)
		return e.result(host)
	}
	return r.miss(ctx, host, name)
}

// hit accounts for a cache hit on e and starts the background work it calls
// for: a refresh when e is near its expiry, a promotion in the LRU list.
func (r *Resolver) hit(name string, e *cacheEntry, now time.Duration) {
	r.stats.hits.Add(1)
	if e.stale {
		r.stats.stale.Add(1)
	}
	if now >= e.refreshAt && e.refreshing.CompareAndSwap(false, true) {
		r.stats.prefetches.Add(1)
		r.flight.DoChan(name, func() (any, error) { return r.refresh(name), nil })
	}
	if last := e.promoted.Load(); now-time.Duration(last) >= promoteInterval && e.promoted.CompareAndSwap(last, int64(now)) {
		r.cache.promote(name)
	}
}

// miss waits for the shared lookup of name, or for ctx to end.
func (r *Resolver) miss(ctx context.Context, host, name string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError(host, err)
	}
	r.stats.misses.Add(1)
	leader := false
	ch := r.flight.DoChan(name, func() (any, error) {
		leader = true
		return r.refresh(name), nil
	})
	select {
	case res := <-ch:
		if !leader {
			r.stats.coalesced.Add(1)
		}
		e := res.Val.(*cacheEntry)
		if e.stale {
			r.stats.stale.Add(1)
		}
		return e.result(host)
	case <-ctx.Done():
		return nil, contextError(host, ctx.Err())
	}
}

// contextError reports that the context of a lookup of host ended with err.
func contextError(host string, err error) *net.DNSError {
	return &net.DNSError{Err: err.Error(), Name: host, IsTimeout: errors.Is(err, context.DeadlineExceeded), UnwrapErr: err}
}

// refresh queries name, detached from any caller's context, and caches the
// outcome. It returns the entry to answer with.
func (r *Resolver) refresh(name string) *cacheEntry {
	if !r.track() {
		return closedEntry(name)
	}
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.lookupTimeout)
	defer cancel()
	ans := r.resolve(ctx, name)
	if r.ctx.Err() != nil {
		return closedEntry(name)
	}
	now := r.clock()
	return r.cache.update(name, now, func(old *cacheEntry) *cacheEntry {
		return r.nextEntry(old, ans, now)
	})
}

// nextEntry returns the cache entry that follows old once ans arrived: the
// new answer, old itself when a refresh of a fresh entry failed, a stale copy
// of old when its addresses may be served stale, or the failure.
func (r *Resolver) nextEntry(old *cacheEntry, ans answer, now time.Duration) *cacheEntry {
	e := &cacheEntry{err: ans.err, refreshAt: never}
	e.promoted.Store(int64(now))
	switch {
	case ans.addrs != nil:
		ttl := min(max(ans.ttl, r.cfg.minTTL), r.cfg.maxTTL)
		e.addrs = ans.addrs
		e.expires = now + ttl
		e.staleUntil = e.expires + r.cfg.staleWindow
		if r.cfg.prefetch {
			e.refreshAt = e.expires - min(max(ttl/10, minPrefetchWindow), ttl/2)
		}
	case ans.err.IsNotFound:
		e.expires = now + min(max(ans.ttl, r.cfg.minTTL), r.cfg.negTTL)
	case old != nil && old.addrs != nil && now < old.staleUntil:
		if !old.stale && now < old.expires {
			return old
		}
		e.addrs, e.err, e.stale = old.addrs, nil, true
		e.expires = min(now+staleTTL, old.staleUntil)
		e.staleUntil = old.staleUntil
		e.refreshAt = now + max(r.cfg.errTTL, minStaleRetry)
	default:
		e.expires = now + r.cfg.errTTL
	}
	return e
}

// track registers a running lookup, unless the Resolver is closed.
func (r *Resolver) track() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// Stats returns the Resolver's counters.
func (r *Resolver) Stats() ResolverStats {
	return ResolverStats{
		Hits:       r.stats.hits.Load(),
		Misses:     r.stats.misses.Load(),
		Coalesced:  r.stats.coalesced.Load(),
		Stale:      r.stats.stale.Load(),
		Prefetches: r.stats.prefetches.Load(),
		Evictions:  r.stats.evictions.Load(),
		Errors:     r.stats.errors.Load(),
	}
}

// Close aborts the queries in flight and waits for every background lookup
// to end. Lookups that need a query fail afterwards with an error wrapping
// net.ErrClosed; cached answers are still returned. Close always returns
// nil.
func (r *Resolver) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// cacheEntry is the cached outcome of looking up one name. Its fields are
// immutable but for the atomics.
type cacheEntry struct {
	addrs      []netip.Addr  // nil for negative and failed lookups
	err        *net.DNSError // set when addrs is nil; Name is the normalised name
	expires    time.Duration // instants are Resolver.clock readings
	staleUntil time.Duration // last instant addrs may be served stale
	refreshAt  time.Duration // a hit from then on starts a background refresh
	stale      bool          // addrs expired and are served stale
	refreshing atomic.Bool   // a background refresh was started from this entry
	promoted   atomic.Int64  // instant of the last move to the front of the LRU list
}

// never is an instant that does not come.
const never = time.Duration(math.MaxInt64)

// result returns the entry's answer to a lookup of host.
func (e *cacheEntry) result(host string) ([]netip.Addr, error) {
	if e.err == nil {
		return e.addrs, nil
	}
	err := *e.err
	err.Name = host
	return nil, &err
}

func closedEntry(name string) *cacheEntry {
	return &cacheEntry{err: &net.DNSError{Err: "resolver closed", Name: name, UnwrapErr: net.ErrClosed}}
}

// dnsCache maps names to entries. The LRU list bounds its size; a
// sync.Map holding the same entries serves hits without taking a lock or
// writing to shared memory, so that parallel hits on one name do not
// contend. A hit moves its entry to the front of the LRU list at most once
// per promoteInterval.
type dnsCache struct {
	index sync.Map // string → *cacheEntry; reads need no lock, writes hold mu
	mu    sync.Mutex
	lru   *simplelru.LRU[string, *cacheEntry]
}

// newDNSCache returns a cache of at most size names, calling onEvict each
// time a name is evicted to make room.
func newDNSCache(size int, onEvict func()) *dnsCache {
	c := &dnsCache{}
	// NewLRU fails only for a size below 1, which options reject.
	c.lru, _ = simplelru.NewLRU(size, func(name string, _ *cacheEntry) {
		c.index.Delete(name)
		onEvict()
	})
	return c
}

// get returns the entry of name, or nil.
func (c *dnsCache) get(name string) *cacheEntry {
	if v, ok := c.index.Load(name); ok {
		return v.(*cacheEntry)
	}
	return nil
}

// update replaces the entry of name by next(old), unless that entry has
// expired at now, and returns it; old is nil when name is not cached.
func (c *dnsCache) update(name string, now time.Duration, next func(old *cacheEntry) *cacheEntry) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, _ := c.lru.Peek(name)
	e := next(old)
	if e != old && now < e.expires {
		c.lru.Add(name, e)
		c.index.Store(name, e)
	}
	return e
}

// promote moves name to the front of the LRU list.
func (c *dnsCache) promote(name string) {
	c.mu.Lock()
	c.lru.Get(name)
	c.mu.Unlock()
}

// hostKind classifies a host passed to LookupNetIP.
type hostKind uint8

const (
	hostName    hostKind = iota // a valid domain name
	hostIP                      // maybe an IP literal
	hostInvalid                 // neither
)

// normalizeHost returns host lower-cased without its trailing dot, and its
// kind. It does not allocate unless host holds upper-case letters. A name
// passes httpx.CheckHostname, the proxy's one host-name rule, and the
// narrower rule of Go's resolver, which the two steps after it add.
func normalizeHost(host string) (string, hostKind) {
	if strings.IndexByte(host, ':') >= 0 {
		return host, hostIP
	}
	info, err := httpx.CheckHostname(host)
	// Go's resolver: no label begins or ends with '-'.
	if err != nil || info.EdgeHyphen {
		return "", hostInvalid
	}
	name := strings.TrimSuffix(host, ".")
	// Go's resolver: a name of digits and dots only is no name; as an IP
	// literal it may be an address.
	if info.Numeric {
		return name, hostIP
	}
	if info.Upper {
		name = strings.ToLower(name)
	}
	return name, hostName
}

func invalidHostError(host string) *net.DNSError {
	return &net.DNSError{Err: errMsgNotFound, Name: host, IsNotFound: true}
}
