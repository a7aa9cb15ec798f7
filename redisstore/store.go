package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults of a Store's options.
const (
	DefaultTimeout          = 50 * time.Millisecond
	DefaultKeyPrefix        = "fwdproxy:"
	DefaultProbeInterval    = time.Second
	DefaultFailureThreshold = 3
	DefaultCertCacheSize    = 1024
	DefaultCertExpiryMargin = time.Hour
)

// Kind names the kinds of shared state whose failure policy can be chosen
// (see WithFailurePolicy).
type Kind int

// The kinds of shared state with a failure policy. Certificates have none:
// while Redis is unreachable a Get is a miss and LockMint makes its caller
// the minter, so each replica mints for itself.
const (
	RateLimits Kind = iota // Allow and AllowMany
	Quotas                 // AddBytes
	Leases                 // Acquire
)

// String returns the kind's name, as in log lines.
func (k Kind) String() string {
	switch k {
	case RateLimits:
		return "rate limits"
	case Quotas:
		return "quotas"
	case Leases:
		return "leases"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Policy is what a Store answers for a kind of decision while Redis is
// unreachable (marked down, or the call failed or took longer than the
// timeout).
type Policy int

const (
	// FailOpen decides with the Store's local in-memory fallback: a rate
	// limit is enforced per replica at the local share of its rate
	// (WithLocalShare), a quota counts locally on top of the last usage this
	// replica saw, leases are held locally up to the local share of max. It
	// is the default for every kind.
	FailOpen Policy = iota
	// FailClosed refuses: Allow denies with a RetryAfter of the probe
	// interval, AddBytes reports usage of math.MaxInt64, Acquire reports no
	// free lease.
	FailClosed
)

// String returns "fail-open" or "fail-closed".
func (p Policy) String() string {
	switch p {
	case FailOpen:
		return "fail-open"
	case FailClosed:
		return "fail-closed"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("redisstore: store closed")

// errDown is what call returns without calling Redis while it is marked
// down.
var errDown = errors.New("redisstore: redis marked down")

// Store keeps fwdproxy's shared state in Redis: certificates (CertStore,
// CertLocker), rate limits (RateLimitStore), byte quotas (QuotaStore) and
// concurrency leases (LeaseStore). Every call waits at most the timeout for
// Redis (WithTimeout); when Redis fails or is slow the kind's Policy
// decides, and after a few consecutive failures the Store marks Redis down
// and stops calling it until a background probe reaches it again. A Store is
// safe for concurrent use; Close it when done.
type Store struct {
	rdb      *redis.Client
	network  string // of the Redis address, for the probe's dial
	addr     string
	prefix   string
	timeout  time.Duration
	probe    time.Duration
	failures int64 // consecutive failures that mark Redis down
	policy   [3]Policy
	share    float64
	log      *slog.Logger

	certMargin time.Duration
	tlsConfig  *tls.Config

	up          atomic.Bool
	consecutive atomic.Int64
	closed      atomic.Bool
	done        chan struct{} // closed by Close: stops the probe
	probeMu     sync.Mutex    // orders startProbe's wg.Add before Close's wg.Wait
	wg          sync.WaitGroup

	stats counters
	certs *certCache
	local *fallback

	rates rateBatcher // Allow's pipelines (ratelimit.go)

	mintMu sync.Mutex
	mints  map[string]string // host → token of the mint locks this Store holds
}

// counters are a Store's statistics.
type counters struct {
	calls, errors, timeouts, fallbacks, roundTrips, dials, stateChanges atomic.Uint64
}

// Stats are a Store's counters since Open, for metrics.
type Stats struct {
	Calls        uint64 // calls that needed Redis (local certificate cache hits are not calls)
	Errors       uint64 // calls that reached Redis and failed, timeouts included
	Timeouts     uint64 // calls that failed because Redis took longer than the timeout
	Fallbacks    uint64 // decisions made by the failure policy instead of Redis
	RoundTrips   uint64 // commands or pipelines sent to Redis, probes included, connection setup not
	Dials        uint64 // connections opened to Redis
	StateChanges uint64 // up→down and down→up transitions
	Up           bool   // whether Redis is currently considered reachable
}

// Option configures a Store.
type Option func(*Store) error

// WithKeyPrefix sets the prefix of every key the Store uses (default
// DefaultKeyPrefix), so that several proxies, or other programs, can share
// one Redis database.
func WithKeyPrefix(p string) Option {
	return func(s *Store) error {
		s.prefix = p
		return nil
	}
}

// WithTimeout sets how long a call waits for Redis at most (default
// DefaultTimeout, 50 ms). A caller's context may shorten it.
func WithTimeout(d time.Duration) Option {
	return func(s *Store) error {
		if d <= 0 {
			return fmt.Errorf("timeout %v must be positive", d)
		}
		s.timeout = d
		return nil
	}
}

// WithFailurePolicy sets what decisions of kind k answer while Redis is
// unreachable (default FailOpen for every kind).
func WithFailurePolicy(k Kind, p Policy) Option {
	return func(s *Store) error {
		if k < RateLimits || k > Leases {
			return fmt.Errorf("unknown kind %v", k)
		}
		if p != FailOpen && p != FailClosed {
			return fmt.Errorf("unknown policy %v", p)
		}
		s.policy[k] = p
		return nil
	}
}

// WithLocalShare sets the share, in (0, 1], of each shared limit that one
// replica enforces by itself while Redis is unreachable and the policy is
// FailOpen (default 1: each replica allows the whole limit). With n replicas,
// 1/n keeps the sum near the shared limit.
func WithLocalShare(f float64) Option {
	return func(s *Store) error {
		if !(f > 0 && f <= 1) {
			return fmt.Errorf("local share %v must be in (0, 1]", f)
		}
		s.share = f
		return nil
	}
}

// WithLogger sets the logger of state changes (default slog.Default()).
// The Store logs once when Redis becomes unreachable and once when it is
// back, never per call.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) error {
		if l == nil {
			return errors.New("nil logger")
		}
		s.log = l
		return nil
	}
}

// WithProbeInterval sets how often a Store that marked Redis down checks
// whether it is back (default DefaultProbeInterval).
func WithProbeInterval(d time.Duration) Option {
	return func(s *Store) error {
		if d <= 0 {
			return fmt.Errorf("probe interval %v must be positive", d)
		}
		s.probe = d
		return nil
	}
}

// WithFailureThreshold sets how many consecutive failed calls mark Redis
// down (default DefaultFailureThreshold). Failed calls apply the failure
// policy either way; once Redis is marked down, calls no longer try it.
func WithFailureThreshold(n int) Option {
	return func(s *Store) error {
		if n < 1 {
			return fmt.Errorf("failure threshold %d must be at least 1", n)
		}
		s.failures = int64(n)
		return nil
	}
}

// WithCertCache sets how many certificates the Store keeps in memory in
// front of Redis (default DefaultCertCacheSize), so that a handshake for a
// known host costs no round trip; 0 turns the cache off.
func WithCertCache(n int) Option {
	return func(s *Store) error {
		if n < 0 {
			return fmt.Errorf("certificate cache size %d must not be negative", n)
		}
		c, err := newCertCache(n)
		if err != nil {
			return err
		}
		s.certs = c
		return nil
	}
}

// WithTLSConfig sets the TLS configuration of a rediss:// URL, for a Redis
// whose certificate is signed by a private CA (RootCAs) or that wants
// client certificates; by default the system's roots verify the server and
// the URL's host is the server name. It is an error with a redis:// URL.
func WithTLSConfig(c *tls.Config) Option {
	return func(s *Store) error {
		if c == nil {
			return errors.New("nil TLS config")
		}
		s.tlsConfig = c.Clone()
		return nil
	}
}

// Open returns a Store on the Redis server of rawURL:
// redis://[user:password@]host:port[/db] or rediss:// for TLS (also
// unix:///path?db=N). The URL's query may set go-redis options, but the
// Store's own timeouts (WithTimeout) and retries (none) replace those. Open
// does not fail when Redis is unreachable: it logs it, applies the failure
// policies and probes until Redis answers.
func Open(rawURL string, opts ...Option) (*Store, error) {
	ro, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	s := &Store{
		prefix:   DefaultKeyPrefix,
		timeout:  DefaultTimeout,
		probe:    DefaultProbeInterval,
		failures: DefaultFailureThreshold,
		share:    1,
		log:      slog.Default(),

		certMargin: DefaultCertExpiryMargin,
		done:       make(chan struct{}),
		mints:      make(map[string]string),
	}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("redisstore: nil Option")
		}
		if err := o(s); err != nil {
			return nil, fmt.Errorf("redisstore: %w", err)
		}
	}
	if s.certs == nil {
		s.certs, _ = newCertCache(DefaultCertCacheSize)
	}
	s.local = newFallback()
	if s.tlsConfig != nil {
		if ro.TLSConfig == nil {
			return nil, errors.New("redisstore: WithTLSConfig needs a rediss:// URL")
		}
		if s.tlsConfig.ServerName == "" {
			s.tlsConfig.ServerName = ro.TLSConfig.ServerName
		}
		ro.TLSConfig = s.tlsConfig
	}
	// Every wait is bounded by the Store's timeout, through the context
	// (ContextTimeoutEnabled) and the socket deadlines alike. go-redis's
	// retries are off: a retried script could count twice, and a retry
	// could only fit in the timeout by luck.
	ro.ContextTimeoutEnabled = true
	ro.DialTimeout = s.timeout
	ro.ReadTimeout = s.timeout
	ro.WriteTimeout = s.timeout
	ro.PoolTimeout = s.timeout
	ro.MaxRetries = -1
	ro.DialerRetries = 1
	ro.DisableIdentity = true // no CLIENT SETINFO on each connection (Redis before 7.2 refuses it)
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	s.network, s.addr = ro.Network, ro.Addr
	s.rdb = redis.NewClient(ro)
	s.rdb.AddHook(tripCounter{&s.stats})

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	err = s.ping(ctx)
	cancel()
	if err != nil {
		s.stats.stateChanges.Add(1)
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "redis unreachable: shared state falls back to the failure policy",
			slog.String("redis", s.addr), slog.String("error", err.Error()))
		s.startProbe()
	} else {
		s.up.Store(true)
	}
	return s, nil
}

// Close stops the Store's probe and closes its connections. Calls after
// Close fail with ErrClosed or, where the interface has no error, miss.
func (s *Store) Close() error {
	s.probeMu.Lock()
	if !s.closed.CompareAndSwap(false, true) {
		s.probeMu.Unlock()
		return nil
	}
	s.probeMu.Unlock()
	close(s.done)
	s.wg.Wait()
	return s.rdb.Close()
}

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Calls:        s.stats.calls.Load(),
		Errors:       s.stats.errors.Load(),
		Timeouts:     s.stats.timeouts.Load(),
		Fallbacks:    s.stats.fallbacks.Load(),
		RoundTrips:   s.stats.roundTrips.Load(),
		Dials:        s.stats.dials.Load(),
		StateChanges: s.stats.stateChanges.Load(),
		Up:           s.up.Load(),
	}
}

// Up reports whether Redis is considered reachable: the last calls
// succeeded, or the probe reached it since they failed. A readiness check
// (/readyz) can use it.
func (s *Store) Up() bool { return s.up.Load() }

// Ping sends a PING to Redis, waiting at most the timeout, whatever the
// Store's state; a success marks Redis up.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ping(ctx); err != nil {
		return err
	}
	s.markUp()
	return nil
}

// ping sends a PING and loads the scripts, in one round trip, so that
// after Open and after Redis comes back (perhaps restarted, without its
// scripts) each call still takes one round trip.
func (s *Store) ping(ctx context.Context) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Ping(ctx)
		for _, src := range scriptSources {
			p.ScriptLoad(ctx, src)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: ping %s: %w", s.addr, err)
	}
	return nil
}

// scriptSources are the sources of the Store's scripts, which ping loads.
var scriptSources []string

// newScript returns a script and registers its source for ping.
func newScript(src string) *redis.Script {
	scriptSources = append(scriptSources, src)
	return redis.NewScript(src)
}

// call runs fn with a context bounded by the Store's timeout. failed
// reports that Redis failed (err says how) or is marked down (errDown, fn
// not called): the caller then applies the failure policy. Otherwise err is
// nil, ErrClosed, or the error of the caller's own context, which ended:
// that is not a failure of Redis, and it is returned as it is. call counts
// the calls and failures, and marks Redis down after enough consecutive
// failures.
func (s *Store) call(ctx context.Context, fn func(ctx context.Context) error) (failed bool, err error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	s.stats.calls.Add(1)
	if !s.up.Load() {
		return true, errDown
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err = fn(cctx)
	cancel()
	if err == nil {
		if s.consecutive.Load() != 0 {
			s.consecutive.Store(0)
		}
		return false, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	s.stats.errors.Add(1)
	if isTimeout(err) {
		s.stats.timeouts.Add(1)
	}
	if s.consecutive.Add(1) >= s.failures {
		s.markDown(err)
	}
	return true, err
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Store) markDown(cause error) {
	if !s.up.CompareAndSwap(true, false) {
		return
	}
	s.stats.stateChanges.Add(1)
	s.log.LogAttrs(context.Background(), slog.LevelWarn, "redis unreachable: shared state falls back to the failure policy",
		slog.String("redis", s.addr), slog.String("error", cause.Error()),
		slog.String("rate_limits", s.policy[RateLimits].String()), slog.String("quotas", s.policy[Quotas].String()),
		slog.String("leases", s.policy[Leases].String()))
	s.startProbe()
}

func (s *Store) markUp() {
	if !s.up.CompareAndSwap(false, true) {
		return
	}
	s.consecutive.Store(0)
	s.stats.stateChanges.Add(1)
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "redis reachable again: shared state resumes",
		slog.String("redis", s.addr))
}

// startProbe starts the goroutine that probes Redis until it answers or the
// Store is closed. Only one runs: markDown starts it on the up→down
// transition and it ends with markUp.
func (s *Store) startProbe() {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.closed.Load() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.probe)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			if s.probeOnce() {
				s.markUp()
				return
			}
		}
	}()
}

// probeOnce reports whether Redis answers a PING. It first dials the address
// itself, so that a Redis that refuses connections costs neither a pooled
// connection attempt nor a go-redis log line per probe.
func (s *Store) probeOnce() bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	network := s.network
	if network == "" {
		network = "tcp"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, s.addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return s.ping(ctx) == nil
}

// tripCounter is a go-redis hook counting round trips, one per command
// sent alone and one per pipeline, and connections. The commands that set
// up a new connection (HELLO, AUTH, SELECT, CLIENT) count as connection
// setup, not as round trips of calls.
type tripCounter struct{ c *counters }

func (h tripCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.c.dials.Add(1)
		return next(ctx, network, addr)
	}
}

func (h tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isSetup(cmd) {
			h.c.roundTrips.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !isSetup(cmds[0]) {
			h.c.roundTrips.Add(1)
		}
		return next(ctx, cmds)
	}
}

// isSetup reports whether cmd is one that go-redis sends to set up a new
// connection.
func isSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "select", "client", "readonly":
		return true
	}
	return false
}

// key returns the Redis key of kind part for name.
func (s *Store) key(kind, name string) string {
	var b strings.Builder
	b.Grow(len(s.prefix) + len(kind) + 1 + len(name))
	b.WriteString(s.prefix)
	b.WriteString(kind)
	b.WriteByte(':')
	b.WriteString(name)
	return b.String()
}

// localLimit returns the share of n that one replica enforces alone, at
// least 1.
func (s *Store) localLimit(n int) int {
	return max(1, int(math.Ceil(float64(n)*s.share)))
}
