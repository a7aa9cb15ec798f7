// Package pac evaluates proxy auto-config (PAC) files: JavaScript with a
// FindProxyForURL(url, host) function that answers which proxies to use,
// in order, for a URL.
//
//	e, err := pac.New(src, pac.WithResolver(resolver))
//	entries, err := e.FindProxyForURL(ctx, "https://example.com/", "example.com")
//	// entries: [{HTTP proxy1:8080} {HTTP proxy2:8080} {DIRECT}] for
//	// "PROXY proxy1:8080; PROXY proxy2:8080; DIRECT": try them in that order.
//
// Scripts run in github.com/dop251/goja with the standard helper functions
// of Netscape's PAC specification (isPlainHostName, dnsDomainIs,
// localHostOrDomainIs, isResolvable, isInNet, dnsResolve, convert_addr,
// myIpAddress, dnsDomainLevels, shExpMatch, weekdayRange, dateRange,
// timeRange, alert), written in Go. The DNS functions go through the
// Resolver given with WithResolver; the date and time functions read the
// clock given with WithClock.
package pac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dop251/goja"
	"github.com/dop251/goja/parser"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Resolver looks names up for dnsResolve, isResolvable and isInNet. The
// proxy's *fwdproxy.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Kind is the kind of a PAC entry.
type Kind uint8

// The kinds of entry.
const (
	Direct Kind = iota // DIRECT
	HTTP               // PROXY or HTTP: an HTTP proxy
	HTTPS              // HTTPS: an HTTP proxy over TLS
	SOCKS5             // SOCKS or SOCKS5: a SOCKS proxy, spoken to in version 5
)

// Entry is one element of FindProxyForURL's answer.
type Entry struct {
	Kind Kind   // the protocol to speak to the proxy, or Direct
	Addr string // "host:port" of the proxy; "" for DIRECT
}

// String returns the entry as a PAC answer writes it: "DIRECT",
// "PROXY host:port", "HTTPS host:port" or "SOCKS5 host:port".
func (e Entry) String() string {
	switch e.Kind {
	case HTTP:
		return "PROXY " + e.Addr
	case HTTPS:
		return "HTTPS " + e.Addr
	case SOCKS5:
		return "SOCKS5 " + e.Addr
	}
	return "DIRECT"
}

// UpstreamSpec returns the entry as an upstream specification for
// internal/upstream.Parse: "DIRECT", "http://host:port",
// "https://host:port" or "socks5://host:port".
func (e Entry) UpstreamSpec() string {
	switch e.Kind {
	case HTTP:
		return "http://" + e.Addr
	case HTTPS:
		return "https://" + e.Addr
	case SOCKS5:
		return "socks5://" + e.Addr
	}
	return "DIRECT"
}

// SyntaxError is a PAC file that does not compile.
type SyntaxError struct {
	Line, Column int    // where, counting from 1
	Message      string // goja's description
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("pac: syntax error at line %d, column %d: %s", e.Line, e.Column, e.Message)
}

// ErrTimeout is returned (wrapped) when a script runs longer than the
// timeout; it is interrupted.
var ErrTimeout = errors.New("pac: script timed out")

// An Option configures an Evaluator.
type Option func(*options)

type options struct {
	resolver Resolver
	timeout  time.Duration
	size     int
	ttl      time.Duration
	now      func() time.Time
	loc      *time.Location
	logger   *slog.Logger
	myIP     netip.Addr
	runtimes int
}

// WithResolver sets the resolver of the DNS helper functions (default:
// net.DefaultResolver).
func WithResolver(r Resolver) Option { return func(o *options) { o.resolver = r } }

// WithTimeout bounds one evaluation of FindProxyForURL, DNS lookups
// included, and the run of the file's top level at load (default 1 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithCache sets the number of answers kept (default 4096, LRU) and how
// long each is kept (default 5 min). A size of 0 turns caching off.
func WithCache(size int, ttl time.Duration) Option {
	return func(o *options) { o.size, o.ttl = size, ttl }
}

// WithClock sets the clock of the date and time functions, of the
// scripts' Date, and of the cache (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLocation sets the time zone of weekdayRange, dateRange and timeRange
// without "GMT" (default time.Local). A script's own Date uses time.Local.
func WithLocation(loc *time.Location) Option { return func(o *options) { o.loc = loc } }

// WithLogger sets where alert() writes (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMyIPAddress sets what myIpAddress() returns (default: the first
// IPv4 address of an interface that is up and not loopback, else
// 127.0.0.1).
func WithMyIPAddress(a netip.Addr) Option { return func(o *options) { o.myIP = a } }

// WithRuntimes sets how many JavaScript runtimes may evaluate at once
// (default 4×GOMAXPROCS: an evaluation mostly waits on DNS, and a runtime
// with a PAC file loaded takes some 15 KB).
func WithRuntimes(n int) Option { return func(o *options) { o.runtimes = n } }

// Evaluator runs a PAC file's FindProxyForURL. It is safe for concurrent
// use.
//
// goja runtimes are not safe for concurrent use, so an Evaluator keeps a
// pool of them, each with the compiled script loaded, made as needed up to
// WithRuntimes and reused. A pool rather than one runtime behind a mutex,
// because an evaluation may wait on DNS (dnsResolve, isInNet): behind a
// mutex one slow lookup would hold up every other uncached host
// (BenchmarkRuntimes: with 1 ms lookups, 1.3 ms per evaluation with one
// runtime, 0.24 ms with eight). Answers from the cache take no runtime.
// Concurrent evaluations for one URL are coalesced into one.
type Evaluator struct {
	prog     *goja.Program
	opts     options
	cache    *lru.Cache[string, cached]
	group    singleflight.Group
	idle     chan *vm
	slots    chan struct{} // one per runtime that exists or is being made
	myIPOnce sync.Once
	myIP     string

	hits, misses, errs, timeouts atomic.Uint64
}

type cached struct {
	entries []Entry
	expires time.Time
}

// Stats counts an Evaluator's work.
type Stats struct {
	Hits, Misses uint64 // answers from the cache, and evaluations
	Errors       uint64 // evaluations that failed, timeouts included
	Timeouts     uint64 // evaluations interrupted by the timeout
}

// New compiles a PAC file and runs its top level once, to check that it
// defines FindProxyForURL. A file that does not compile is a
// *SyntaxError with the line and column.
func New(src []byte, opts ...Option) (*Evaluator, error) {
	o := options{timeout: time.Second, size: 4096, ttl: 5 * time.Minute, runtimes: 4 * runtime.GOMAXPROCS(0)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.resolver == nil {
		o.resolver = defaultResolver{}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.loc == nil {
		o.loc = time.Local
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.timeout <= 0 || o.runtimes < 1 || o.size < 0 || (o.size > 0 && o.ttl <= 0) {
		return nil, errors.New("pac: the timeout, runtimes, cache size and TTL must be positive")
	}
	prog, err := compile(src)
	if err != nil {
		return nil, err
	}
	e := &Evaluator{
		prog:  prog,
		opts:  o,
		idle:  make(chan *vm, o.runtimes),
		slots: make(chan struct{}, o.runtimes),
	}
	if o.size > 0 {
		e.cache, _ = lru.New[string, cached](o.size)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	e.slots <- struct{}{}
	v, err := e.newVM(ctx)
	if err != nil {
		<-e.slots
		return nil, err
	}
	e.idle <- v
	return e, nil
}

// compile parses and compiles a PAC file. It parses with goja's parser
// itself, as goja.Compile drops the position of a syntax error, and with
// source maps off: goja would otherwise read any local file a
// "//# sourceMappingURL=" comment names.
func compile(src []byte) (*goja.Program, error) {
	ast, err := parser.ParseFile(nil, "proxy.pac", string(src), 0, parser.WithDisableSourceMaps)
	if err != nil {
		var list parser.ErrorList
		if errors.As(err, &list) && len(list) > 0 {
			return nil, &SyntaxError{Line: list[0].Position.Line, Column: list[0].Position.Column, Message: list[0].Message}
		}
		return nil, fmt.Errorf("pac: %w", err)
	}
	prog, err := goja.CompileAST(ast, false)
	if err != nil {
		var se *goja.CompilerSyntaxError
		if errors.As(err, &se) {
			e := &SyntaxError{Message: se.Message}
			if se.File != nil {
				p := se.File.Position(se.Offset)
				e.Line, e.Column = p.Line, p.Column
			}
			return nil, e
		}
		return nil, fmt.Errorf("pac: %w", err)
	}
	return prog, nil
}

// FindProxyForURL returns the entries the script answers for url and its
// host, in the order to try them. The URL is reduced to its scheme,
// authority and "/" before the script sees it ("https://host:8443/a?b"
// becomes "https://host:8443/"), as browsers do for https URLs, and the
// answer is cached for that reduced URL: a script that tells paths apart
// gets the first path's answer for the others. Pass "https://host:port/"
// for a CONNECT to host:port.
//
// Entries that do not parse (an unknown keyword, a bad address, SOCKS4)
// are skipped and logged; an answer with none left, or that is not a
// string, is an error, as is an exception or the timeout. The returned
// slice is shared: do not modify it.
func (e *Evaluator) FindProxyForURL(ctx context.Context, url, host string) ([]Entry, error) {
	url = sanitizeURL(url)
	key := url
	if !strings.EqualFold(urlHost(url), host) {
		key = url + " " + host
	}
	if e.cache != nil {
		if c, ok := e.cache.Get(key); ok && e.opts.now().Before(c.expires) {
			e.hits.Add(1)
			return c.entries, nil
		}
	}
	ch := e.group.DoChan(key, func() (any, error) {
		e.misses.Add(1)
		// The evaluation runs with its own timeout, not a caller's
		// cancellation: it is shared by every caller waiting for key.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.opts.timeout)
		defer cancel()
		entries, err := e.evaluate(ectx, url, host)
		if err != nil {
			e.errs.Add(1)
			if errors.Is(err, ErrTimeout) {
				e.timeouts.Add(1)
			}
			return nil, err
		}
		if e.cache != nil {
			e.cache.Add(key, cached{entries: entries, expires: e.opts.now().Add(e.opts.ttl)})
		}
		return entries, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]Entry), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stats returns the counters.
func (e *Evaluator) Stats() Stats {
	return Stats{Hits: e.hits.Load(), Misses: e.misses.Load(), Errors: e.errs.Load(), Timeouts: e.timeouts.Load()}
}

// evaluate runs FindProxyForURL on a runtime from the pool.
func (e *Evaluator) evaluate(ctx context.Context, url, host string) ([]Entry, error) {
	v, err := e.getVM(ctx)
	if err != nil {
		return nil, err
	}
	ret, err := v.call(ctx, func() (goja.Value, error) {
		return v.find(goja.Undefined(), v.rt.ToValue(url), v.rt.ToValue(host))
	})
	if v.interrupted {
		// An interrupted runtime may have stopped anywhere in the
		// script; it is not reused.
		<-e.slots
	} else {
		e.idle <- v
	}
	if err != nil {
		return nil, err
	}
	s, ok := ret.Export().(string)
	if !ok {
		return nil, fmt.Errorf("pac: FindProxyForURL(%q, %q) returned %s, not a string", url, host, describe(ret))
	}
	return e.parseAnswer(s, url)
}

func describe(v goja.Value) string {
	if v == nil || goja.IsUndefined(v) {
		return "undefined"
	}
	if goja.IsNull(v) {
		return "null"
	}
	return v.ExportType().String()
}

// getVM takes an idle runtime, or makes one if fewer than the maximum
// exist, or waits for one.
func (e *Evaluator) getVM(ctx context.Context) (*vm, error) {
	select {
	case v := <-e.idle:
		return v, nil
	default:
	}
	select {
	case v := <-e.idle:
		return v, nil
	case e.slots <- struct{}{}:
		v, err := e.newVM(ctx)
		if err != nil {
			<-e.slots
			return nil, err
		}
		return v, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("pac: waiting for a runtime: %w", timeoutError(ctx))
	}
}

func timeoutError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ctx.Err()
}

// parseAnswer parses "PROXY a:1; SOCKS5 b:2; DIRECT".
func (e *Evaluator) parseAnswer(s, url string) ([]Entry, error) {
	var entries []Entry
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ent, err := parseEntry(part)
		if err != nil {
			e.opts.logger.Warn("pac: entry skipped", "entry", part, "url", url, "reason", err.Error())
			continue
		}
		entries = append(entries, ent)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("pac: FindProxyForURL for %q answered %q: no usable entry", url, s)
	}
	return entries, nil
}

// parseEntry parses one entry. A missing port is 80 for PROXY and HTTP,
// 443 for HTTPS, 1080 for SOCKS and SOCKS5, as browsers take it.
func parseEntry(s string) (Entry, error) {
	keyword, addr, _ := strings.Cut(s, " ")
	addr = strings.TrimSpace(addr)
	var ent Entry
	var port string
	switch strings.ToUpper(keyword) {
	case "DIRECT":
		if addr != "" {
			return Entry{}, errors.New("DIRECT takes no address")
		}
		return Entry{Kind: Direct}, nil
	case "PROXY", "HTTP":
		ent.Kind, port = HTTP, "80"
	case "HTTPS":
		ent.Kind, port = HTTPS, "443"
	case "SOCKS", "SOCKS5":
		ent.Kind, port = SOCKS5, "1080"
	case "SOCKS4":
		return Entry{}, errors.New("SOCKS4 is not supported")
	default:
		return Entry{}, fmt.Errorf("unknown keyword %q", keyword)
	}
	if addr == "" {
		return Entry{}, errors.New("missing host:port")
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			host, p, err = strings.Trim(addr, "[]"), port, nil
		} else {
			return Entry{}, err
		}
	}
	if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
		return Entry{}, fmt.Errorf("invalid port %q", p)
	}
	if !validHost(host) {
		return Entry{}, fmt.Errorf("invalid host %q", host)
	}
	ent.Addr = net.JoinHostPort(host, p)
	return ent, nil
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// sanitizeURL reduces a URL to "scheme://authority/", without user info.
// It returns u itself when u is already in that form, and u unchanged when
// it has no "://".
func sanitizeURL(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	rest := u[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		auth = auth[at+1:]
	} else if end < len(rest) && rest[end] == '/' && end+1 == len(rest) {
		return u // already scheme://authority/
	}
	return u[:i+3] + auth + "/"
}

// urlHost returns the host of a sanitized URL, without port or brackets.
func urlHost(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return ""
	}
	auth := strings.TrimSuffix(u[i+3:], "/")
	if strings.HasPrefix(auth, "[") {
		if j := strings.IndexByte(auth, ']'); j > 0 {
			return auth[1:j]
		}
		return auth
	}
	if j := strings.LastIndexByte(auth, ':'); j >= 0 {
		return auth[:j]
	}
	return auth
}

// defaultResolver is net.DefaultResolver.
type defaultResolver struct{}

func (defaultResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
