// Package upstream routes the proxy's outgoing connections through other
// proxies: parsing upstream specifications, opening tunnels through an
// HTTP, HTTPS or SOCKS5 proxy, pools of upstreams with a selection policy,
// passive and active health, and the failover rule.
//
// An upstream is written as a URL:
//
//	http://[user:password@]host:port     HTTP proxy: absolute-form for plain requests, CONNECT for tunnels
//	https://[user:password@]host:port    the same over TLS to the proxy
//	socks5://[user:password@]host:port   SOCKS5 (RFC 1928), username/password (RFC 1929); socks5h:// is the same
//	DIRECT                               no proxy: connect to the destination
//
// Credentials never leave an *Upstream except in the Proxy-Authorization
// header and SOCKS5 authentication sent to that upstream, and in ProxyURL,
// which exists for http.Transport. Name, String, LogValue, GoString and
// every error show the upstream without them.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"
)

// Kind is the protocol spoken to an upstream.
type Kind uint8

// The kinds of upstream.
const (
	Direct Kind = iota // no proxy: the destination is dialed directly
	HTTP               // an HTTP proxy
	HTTPS              // an HTTP proxy reached over TLS
	SOCKS5             // a SOCKS5 proxy
)

// String returns the kind's name: "DIRECT", "http", "https" or "socks5".
func (k Kind) String() string {
	switch k {
	case Direct:
		return "DIRECT"
	case HTTP:
		return "http"
	case HTTPS:
		return "https"
	case SOCKS5:
		return "socks5"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// DialFunc connects to address ("host:port") on network "tcp".
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Backoff is how long an upstream stays down after consecutive failures:
// Min after the first, doubling with each further failure up to Max, each
// period varied at random by ±Jitter (a fraction, 0.2 for ±20 %) so that
// many proxies do not retry in step.
type Backoff struct {
	Min, Max time.Duration // the first period, and the longest
	Jitter   float64       // the random variation of each period, a fraction in [0, 1)
}

// DefaultBackoff is 1 s doubling to 1 min, ±20 %.
var DefaultBackoff = Backoff{Min: time.Second, Max: time.Minute, Jitter: 0.2}

// An Option configures an Upstream. Options that do not apply to the kind
// being parsed (WithRootCAs on an http:// upstream, WithDirectDial on a
// proxy) are ignored, so one list of options can be passed to every Parse.
type Option func(*options)

type options struct {
	dial       DialFunc
	directDial DialFunc
	rootCAs    *x509.CertPool
	tlsConfig  *tls.Config
	serverName string
	now        func() time.Time
	backoff    Backoff
}

// WithDial sets the function that connects to the upstream proxy's own
// address. The default is a net.Dialer with a 10 s timeout. The proxy
// passes one that resolves through its Resolver; the private-address guard
// is about destinations, and a configured upstream is not one.
func WithDial(d DialFunc) Option { return func(o *options) { o.dial = d } }

// WithDirectDial sets the function DIRECT uses to connect to a
// destination: the proxy's guarded dial. Without it, DialTunnel on DIRECT
// fails; there is deliberately no unguarded default.
func WithDirectDial(d DialFunc) Option { return func(o *options) { o.directDial = d } }

// WithRootCAs sets the roots that an https:// upstream's certificate must
// chain to (default: the system roots).
func WithRootCAs(pool *x509.CertPool) Option { return func(o *options) { o.rootCAs = pool } }

// WithTLSConfig sets the TLS configuration for an https:// upstream: a
// clone of c, with the server name (WithServerName, or the host in its
// URL) and ALPN "http/1.1" set, and TLS 1.2 at least. It takes the place
// of WithRootCAs.
func WithTLSConfig(c *tls.Config) Option { return func(o *options) { o.tlsConfig = c } }

// WithServerName sets the name sent in SNI and checked against an https://
// upstream's certificate (default: the host in its URL).
func WithServerName(name string) Option { return func(o *options) { o.serverName = name } }

// WithClock sets the clock used for health back-off (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithBackoff sets the health back-off (default DefaultBackoff).
func WithBackoff(b Backoff) Option { return func(o *options) { o.backoff = b } }

// An Upstream is one proxy (or DIRECT) that connections can be routed
// through, with its credentials and its health. It is safe for concurrent
// use. The same *Upstream may be in several pools; its health is shared.
type Upstream struct {
	kind     Kind
	name     string // scheme://host:port, or DIRECT; never credentials
	addr     string // host:port of the upstream proxy
	host     string // host without brackets
	user     secret
	password secret
	hasAuth  bool
	authz    secret // "Basic …" for HTTP(S) upstreams with credentials
	proxyURL *url.URL
	trURL    *url.URL // what ConfigureTransport's Proxy returns (http:// for HTTPS: TLS is done in the dial)

	dial       DialFunc
	directDial DialFunc
	tlsConfig  *tls.Config
	socks      socksDialer
	now        func() time.Time
	backoff    Backoff
	nameHash   uint64

	health health

	attached atomic.Value // the owner's per-upstream state (Attach)
}

// Attach keeps v with u for its owner, who finds it with Attached: state
// that lives as long as the upstream, such as a transport's description
// of it. The first call wins; later ones are ignored.
func (u *Upstream) Attach(v any) { u.attached.CompareAndSwap(nil, v) }

// Attached returns what Attach kept, or nil.
func (u *Upstream) Attached() any { return u.attached.Load() }

// socksDialer is the part of x/net's SOCKS5 dialer that DialTunnel uses:
// the SOCKS handshake on a connection we dialed ourselves, which keeps the
// connection a *net.TCPConn (x/net's own DialContext wraps it).
type socksDialer interface {
	DialWithConn(ctx context.Context, c net.Conn, network, address string) (net.Addr, error)
}

// secret holds a credential; it prints as "REDACTED" in every format.
type secret string

func (secret) String() string               { return "REDACTED" }
func (secret) GoString() string             { return `"REDACTED"` }
func (secret) LogValue() slog.Value         { return slog.StringValue("REDACTED") }
func (s secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// defaultDialer connects to upstream proxies when WithDial is not given.
var defaultDialer = &net.Dialer{Timeout: 10 * time.Second}

// Parse parses an upstream specification (see the package comment). The
// port is required; a path other than "/", a query or a fragment is an
// error. User and password may be percent-encoded. Errors name the bad
// part and show the specification with its user info replaced by "***".
func Parse(spec string, opts ...Option) (*Upstream, error) {
	o := options{backoff: DefaultBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.dial == nil {
		o.dial = defaultDialer.DialContext
	}
	if err := o.backoff.check(); err != nil {
		return nil, specError(spec, err.Error())
	}
	u := &Upstream{dial: o.dial, directDial: o.directDial, now: o.now, backoff: o.backoff}

	s := strings.TrimSpace(spec)
	if strings.EqualFold(s, "DIRECT") {
		u.kind, u.name = Direct, "DIRECT"
		u.nameHash = hashString(u.name)
		return u, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return nil, specError(spec, "missing scheme: want http://, https://, socks5://, socks5h:// or DIRECT")
	}
	switch strings.ToLower(scheme) {
	case "http":
		u.kind = HTTP
	case "https":
		u.kind = HTTPS
	case "socks5", "socks5h":
		u.kind = SOCKS5
	default:
		return nil, specError(spec, "unsupported scheme "+strconv.Quote(scheme)+": want http, https, socks5 or socks5h")
	}
	scheme = strings.ToLower(scheme)
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
		if rest[i:] != "/" {
			return nil, specError(spec, "a path, query or fragment is not allowed after host:port")
		}
	}
	hostport := authority
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		hostport = authority[at+1:]
		if err := u.setCredentials(authority[:at]); err != nil {
			return nil, specError(spec, err.Error())
		}
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return nil, specError(spec, err.Error())
	}
	host = strings.ToLower(host)
	u.host = host
	u.addr = net.JoinHostPort(host, strconv.Itoa(int(port)))
	u.name = scheme + "://" + u.addr
	u.nameHash = hashString(u.name)

	u.proxyURL = &url.URL{Scheme: scheme, Host: u.addr}
	if u.hasAuth {
		u.proxyURL.User = url.UserPassword(string(u.user), string(u.password))
	}
	tr := *u.proxyURL
	u.trURL = &tr
	switch u.kind {
	case HTTP, HTTPS:
		if u.hasAuth {
			u.authz = secret("Basic " + base64.StdEncoding.EncodeToString([]byte(string(u.user)+":"+string(u.password))))
		}
		if u.kind == HTTPS {
			u.trURL.Scheme = "http"
			name := o.serverName
			if name == "" {
				name = host
			}
			if o.tlsConfig != nil {
				u.tlsConfig = o.tlsConfig.Clone()
			} else {
				u.tlsConfig = &tls.Config{RootCAs: o.rootCAs}
			}
			u.tlsConfig.ServerName = name
			u.tlsConfig.NextProtos = []string{"http/1.1"}
			u.tlsConfig.MinVersion = max(u.tlsConfig.MinVersion, tls.VersionTLS12)
		}
	case SOCKS5:
		var auth *proxy.Auth
		if u.hasAuth {
			if len(u.user) > 255 || len(u.password) > 255 {
				return nil, specError(spec, "SOCKS5 user name and password must be at most 255 bytes each")
			}
			auth = &proxy.Auth{User: string(u.user), Password: string(u.password)}
		}
		d, err := proxy.SOCKS5("tcp", u.addr, auth, nil)
		if err != nil {
			return nil, specError(spec, "SOCKS5 dialer: "+err.Error())
		}
		sd, ok := d.(socksDialer)
		if !ok {
			return nil, specError(spec, "SOCKS5 dialer cannot handshake on a given connection")
		}
		u.socks = sd
	}
	return u, nil
}

// MustParse is Parse for tests and examples: it panics on an error.
func MustParse(spec string, opts ...Option) *Upstream {
	u, err := Parse(spec, opts...)
	if err != nil {
		panic(err)
	}
	return u
}

func (b Backoff) check() error {
	switch {
	case b.Min <= 0:
		return errors.New("back-off minimum must be positive")
	case b.Max < b.Min:
		return errors.New("back-off maximum must be at least its minimum")
	case b.Jitter < 0 || b.Jitter >= 1:
		return errors.New("back-off jitter must be in [0, 1)")
	}
	return nil
}

// setCredentials parses "user[:password]", percent-decoded. Its errors
// never contain the credentials.
func (u *Upstream) setCredentials(userinfo string) error {
	rawUser, rawPass, _ := strings.Cut(userinfo, ":")
	user, err := url.PathUnescape(rawUser)
	if err != nil {
		return errors.New("invalid percent-encoding in the user name")
	}
	pass, err := url.PathUnescape(rawPass)
	if err != nil {
		return errors.New("invalid percent-encoding in the password")
	}
	if user == "" {
		return errors.New("empty user name before '@'")
	}
	if strings.ContainsAny(user, ":\r\n\x00") || strings.ContainsAny(pass, "\r\n\x00") {
		return errors.New("the user name or password contains a control character or ':' in the user name")
	}
	u.user, u.password, u.hasAuth = secret(user), secret(pass), true
	return nil
}

// splitHostPort parses "host:port" with a required port; IPv6 hosts are
// bracketed. The host must be an IP address or a DNS name of letters,
// digits, '-', '_' and '.'.
func splitHostPort(hostport string) (host string, port uint16, err error) {
	if hostport == "" {
		return "", 0, errors.New("missing host:port")
	}
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		if !strings.Contains(hostport, ":") || strings.HasSuffix(hostport, "]") {
			return "", 0, fmt.Errorf("missing port in %q", hostport)
		}
		return "", 0, fmt.Errorf("invalid host:port %q", hostport)
	}
	if p == "" {
		return "", 0, fmt.Errorf("missing port in %q", hostport)
	}
	n, perr := strconv.ParseUint(p, 10, 16)
	if perr != nil || n == 0 {
		return "", 0, fmt.Errorf("invalid port %q: want a number from 1 to 65535", p)
	}
	if err := checkHost(h, strings.HasPrefix(hostport, "[")); err != nil {
		return "", 0, err
	}
	return h, uint16(n), nil
}

func checkHost(h string, bracketed bool) error {
	if h == "" {
		return errors.New("empty host")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("invalid host %q: zones are not allowed", h)
		}
		if a.Is6() != bracketed {
			return fmt.Errorf("invalid host %q: IPv6 addresses must be bracketed, and only they", h)
		}
		return nil
	}
	if bracketed {
		return fmt.Errorf("invalid host %q: not an IPv6 address", h)
	}
	if len(h) > 253 {
		return errors.New("invalid host: longer than 253 bytes")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid host %q: character %q", h, c)
		}
	}
	return nil
}

// specError reports a bad specification, showing it without user info.
func specError(spec, why string) error {
	return fmt.Errorf("upstream %q: %s", redactSpec(spec), why)
}

// RedactSpec returns an upstream specification with its user info, if
// any, replaced by "***", for descriptions and errors: it works on a
// malformed specification too.
func RedactSpec(spec string) string { return redactSpec(spec) }

// redactSpec replaces the user info of a specification, well-formed or
// not, with "***": everything before the last '@' of its authority.
func redactSpec(spec string) string {
	start := 0
	if i := strings.Index(spec, "://"); i >= 0 {
		start = i + 3
	}
	end := len(spec)
	if i := strings.IndexAny(spec[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndexByte(spec[start:end], '@')
	if at < 0 {
		if strings.Contains(spec[end:], "@") {
			// An '@' after the authority may still be a mangled user info.
			return spec[:start] + "***"
		}
		return spec
	}
	return spec[:start] + "***@" + spec[start+at+1:]
}

// Kind returns the upstream's protocol.
func (u *Upstream) Kind() Kind { return u.kind }

// IsDirect reports whether u is DIRECT.
func (u *Upstream) IsDirect() bool { return u.kind == Direct }

// Name returns the upstream for logs, spans, metrics and errors:
// "scheme://host:port" with the scheme in lower case, or "DIRECT". It never
// contains credentials.
func (u *Upstream) Name() string { return u.name }

// String returns Name.
func (u *Upstream) String() string { return u.name }

// GoString returns Name in quotes, so that %#v shows no credentials.
func (u *Upstream) GoString() string { return "upstream.Upstream(" + strconv.Quote(u.name) + ")" }

// LogValue returns Name, so that slog shows no credentials.
func (u *Upstream) LogValue() slog.Value { return slog.StringValue(u.name) }

// Addr returns the upstream proxy's own "host:port" ("" for DIRECT).
func (u *Upstream) Addr() string { return u.addr }

// HasCredentials reports whether the specification carried user info.
func (u *Upstream) HasCredentials() bool { return u.hasAuth }

// ProxyURL returns the upstream as a URL with its credentials, for
// http.Transport's Proxy func: net/http speaks absolute-form to http://,
// TLS then absolute-form to https:// (with the Transport's
// TLSClientConfig, not WithRootCAs), CONNECT for https targets, and SOCKS5
// to socks5://, and sends Proxy-Authorization from the URL's user info.
// It is nil for DIRECT. The URL is shared: do not modify it, and never log
// it (log Name). ConfigureTransport is the better way: it honours
// WithRootCAs and WithServerName and classifies errors.
func (u *Upstream) ProxyURL() *url.URL { return u.proxyURL }

// ProxyConnectHeader returns the header to add to a CONNECT sent to u:
// Proxy-Authorization with u's credentials, or nil if it has none. A new
// header is returned on each call. (http.Transport adds the same field
// from ProxyURL's user info by itself.)
func (u *Upstream) ProxyConnectHeader() http.Header {
	if u.authz == "" {
		return nil
	}
	return http.Header{"Proxy-Authorization": {string(u.authz)}}
}

// ProxyAuthorization returns the Proxy-Authorization value for an HTTP or
// HTTPS upstream with credentials ("Basic …"), or "". It is a secret:
// never log it.
func (u *Upstream) ProxyAuthorization() string { return string(u.authz) }

// hashString is FNV-1a of s, mixed.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is splitmix64's finalizer: every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
