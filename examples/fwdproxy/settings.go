package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/flows"
)

// settings is everything the server can be told. Each field is a flag; the
// flag's FWDPROXY_<NAME> environment variable (env.go) and the key of the
// same name in the configuration file (config.go) set it too, so a flag, its
// variable and its key never differ.
type settings struct {
	// What to do, rather than how: the command line and the environment
	// only (commandOnly).
	config      string
	checkConfig checkFlag
	version     bool

	listen       string
	allowPrivate bool
	logLevel     string

	// Access control.
	auth       listFlag
	denyHosts  listFlag
	allowHosts listFlag
	allowPorts listFlag
	reportOnly bool
	rateLimit  float64 // requests and tunnels per second per client IP; 0: off
	rateBurst  int     // 0: rateLimit rounded up
	maxBody    byteSize

	limits limitFlags // fdlimit.go: connections, tunnels, upstream pool

	// Sizes and timeouts.
	maxHeader    byteSize
	maxRespHead  byteSize
	timeouts     timeouts
	dnsServers   listFlag
	proxyFromEnv bool
	upstreams    upstreamFlags // upstreams.go: upstream proxies, routes, PAC
	policies     policiesFlag  // policies.go: per-user policy and quotas
	redis        string        // redis.go: the Redis that replicas share
	logFormat    string
	traceFile    string
	capture      captureSize
	logQueue     int

	// The admin listener (admin.go).
	adminListen    string
	adminToken     string
	adminTokenFile string
	maxFlows       int
	maxFlowBytes   byteSize
	harFile        string
	harFileMax     byteSize

	// TLS (intercept.go).
	mitmCADir  string
	mitmBypass listFlag
	upstreamCA string

	// Front ends (front.go).
	tlsListen            string
	tlsCert, tlsKey      string
	tlsClientCA          string
	tlsRequireClientCert bool
	h2MaxStreams         int
	h2c                  bool
	socksListen          string
	socksOnHTTP          bool
	proxyProtocolFrom    listFlag
}

// timeouts are the library's timeouts, each a flag.
type timeouts struct {
	dial, tlsHandshake, responseHeader, idleConn time.Duration
	readHeader, clientIdle, tunnelIdle, bodyIdle time.Duration
}

// logQueueSize is the library's default log queue (WithLogQueueSize).
const logQueueSize = 1024

// Keys that are not ordinary settings.
var (
	// commandOnly flags say what to do (check a file, print the version,
	// where the file is): they are no keys of the file, and -version and
	// -check-config have no environment variable either, so that a stray
	// variable cannot turn a server into a one-shot check.
	commandOnly = map[string]bool{"config": true, "check-config": true, "version": true}
	noEnv       = map[string]bool{"check-config": true, "version": true}

	// fixedKeys are set up once at start and cannot change on reload: the
	// listeners, the CA, the files of the proxy's certificate (their
	// contents are read again when they change), where and how the log,
	// the spans and the flows are written and kept. A reload that changes
	// one is refused whole.
	fixedKeys = []string{"listen", "admin-listen", "max-flows", "max-flow-bytes", "har-file", "har-file-max-bytes",
		"mitm-ca-dir", "log-format", "trace-file", "tls-listen", "tls-cert", "tls-key", "socks-listen", "redis"}

	// aliases are other names of settings, as flags, variables and keys:
	// old names kept working. They are not in -h's table of the README,
	// nor in the sample file; the setting's own help names them.
	aliases = map[string]string{"metrics-listen": "admin-listen"}
)

// canonical is the setting an alias names, or name itself.
func canonical(name string) string {
	if c, ok := aliases[name]; ok {
		return c
	}
	return name
}

// flagSet is the flag set of s, every flag in the order of the README's
// table (order).
type flagSet struct {
	*flag.FlagSet
	order []string
}

// newFlagSet defines every flag on s, with its default; usage goes to
// output (-h and errors on the command line).
func newFlagSet(s *settings, output io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("fwdproxy", flag.ContinueOnError)}
	fs.SetOutput(output)
	def := func(name string) {
		fs.order = append(fs.order, name)
		if isFixed(name) {
			fl := fs.Lookup(name)
			fl.Usage += " (fixed: a reload cannot change it)"
		}
	}
	str := func(p *string, name, value, usage string) { fs.StringVar(p, name, value, usage); def(name) }
	boolean := func(p *bool, name, usage string) { fs.BoolVar(p, name, false, usage); def(name) }
	integer := func(p *int, name string, value int, usage string) { fs.IntVar(p, name, value, usage); def(name) }
	duration := func(p *time.Duration, name string, value time.Duration, usage string) {
		fs.DurationVar(p, name, value, usage)
		def(name)
	}
	value := func(v flag.Value, name, usage string) { fs.Var(v, name, usage); def(name) }

	str(&s.listen, "listen", "127.0.0.1:8080", "`host:port` to listen on")
	boolean(&s.allowPrivate, "allow-private", "allow requests to private, loopback and link-local addresses (refused with 403 without it)")
	str(&s.logLevel, "log-level", "info", "log `level`: debug, info (with the access log: a line per request and tunnel), warn (one line per refusal or failure) or error")

	value(&s.auth, "auth", "require proxy authentication (Basic) with `USER:PASS` (repeatable for several users)")
	value(&s.denyHosts, "deny-host", "refuse destinations matching `PATTERN`: host, *.domain or CIDR (repeatable or comma-separated)")
	value(&s.allowHosts, "allow-host", "allow only destinations matching `PATTERN`: host, *.domain or CIDR (repeatable or comma-separated)")
	value(&s.allowPorts, "allow-port", "also allow CONNECT to port `N` (443 is always allowed; repeatable or comma-separated)")
	boolean(&s.reportOnly, "report-only", "log what -deny-host, -allow-host and -allow-port would refuse instead of refusing it")
	fs.Float64Var(&s.rateLimit, "rate-limit", 0, "allow each client IP `N` requests and tunnels per second on average, 429 past it (0: no limit)")
	def("rate-limit")
	integer(&s.rateBurst, "rate-burst", 0, "let each client IP send bursts of up to `N` at once under -rate-limit (0: -rate-limit rounded up)")
	value(&s.maxBody, "max-request-body-bytes", "refuse request bodies over `SIZE` with 413 (0: no limit)")

	s.limits.register(fs.FlagSet, def) // fdlimit.go

	s.maxHeader = fwdproxy.DefaultMaxHeaderBytes
	value(&s.maxHeader, "max-header-bytes", "refuse client request heads over `SIZE` with 431")
	s.maxRespHead = fwdproxy.DefaultMaxResponseHeaderBytes
	value(&s.maxRespHead, "max-response-header-bytes", "refuse (502) upstream response heads over `SIZE`")
	t := &s.timeouts
	duration(&t.dial, "dial-timeout", fwdproxy.DefaultDialTimeout, "give up connecting upstream, DNS included, after `D`")
	duration(&t.tlsHandshake, "tls-handshake-timeout", fwdproxy.DefaultTLSHandshakeTimeout, "give up a TLS handshake with an https upstream after `D`")
	duration(&t.responseHeader, "response-header-timeout", fwdproxy.DefaultResponseHeaderTimeout, "answer 504 when an upstream sends no response head for `D`")
	duration(&t.idleConn, "idle-conn-timeout", fwdproxy.DefaultIdleConnTimeout, "close idle upstream connections after `D`")
	duration(&t.readHeader, "read-header-timeout", fwdproxy.DefaultReadHeaderTimeout, "close client connections that take longer than `D` to send a request head")
	duration(&t.clientIdle, "client-idle-timeout", fwdproxy.DefaultClientIdleTimeout, "close idle keep-alive client connections after `D`")
	duration(&t.tunnelIdle, "tunnel-idle-timeout", fwdproxy.DefaultTunnelIdleTimeout, "close tunnels that move no byte for `D`")
	duration(&t.bodyIdle, "body-idle-timeout", fwdproxy.DefaultBodyIdleTimeout, "give up on a request or response body that moves no byte for `D` (408 to a stalled upload, a cut connection for a stalled download)")
	value(&s.dnsServers, "dns-server", "DNS server `host:port` to use instead of /etc/resolv.conf (repeatable or comma-separated)")
	boolean(&s.proxyFromEnv, "proxy-from-environment", "forward through the upstream proxy named by HTTP_PROXY, HTTPS_PROXY and NO_PROXY (ignored without it)")
	s.upstreams.register(fs.FlagSet, def) // upstreams.go
	value(&s.policies, "policies", "per-user policy and quotas by `POLICIES`, a YAML list: each policy matches users (Basic, SOCKS5 or client-certificate identity) or, unauthenticated, clients (CIDR), and sets allow-hosts, deny-hosts, ports, intercept (on, off), upstreams (routes as for upstreams), rate and burst (requests a second per user), bytes-per-day (both directions) and max-tunnels; the first that matches wins, one without users and clients is the default")
	str(&s.redis, "redis", "", "share certificates, rate limits, quotas and tunnel counts with the other replicas through the Redis at `URL` (redis://[user:password@]host:port/db, rediss:// for TLS); without it, all stays in this process")

	str(&s.logFormat, "log-format", "text", "log `format` on stderr: text or json")
	str(&s.traceFile, "trace-file", "", "write finished spans to `PATH` as JSON lines")
	value(&s.capture, "capture", "also log request and response headers and the first `SIZE` bytes of each body, credentials redacted (0: headers only; off: nothing); the flow inspector shows them too")
	integer(&s.logQueue, "log-queue-size", logQueueSize, "log records that may wait to be written; past `N` they are dropped and counted")

	str(&s.adminListen, "admin-listen", "", "serve the admin pages on `host:port` (loopback when the host is left out, as in :9090): the dashboard at /, the flow inspector at /flows and /flows.har, Prometheus metrics at /metrics, pprof at /debug/pprof/, /healthz and /readyz; -metrics-listen, its old name, is an alias")
	str(&s.adminToken, "admin-token", "", "require the bearer `TOKEN` on the admin listener but for /healthz and /readyz (a browser: open it once with ?token=TOKEN); -admin-token-file keeps it out of the process list")
	str(&s.adminTokenFile, "admin-token-file", "", "read the admin token from `FILE` (read again on reload)")
	integer(&s.maxFlows, "max-flows", flows.DefaultMaxFlows, "keep the `N` most recent flows for the inspector")
	s.maxFlowBytes = flows.DefaultMaxBytes
	value(&s.maxFlowBytes, "max-flow-bytes", "keep at most `SIZE` of flows for the inspector, headers and captured bodies included")
	str(&s.harFile, "har-file", "", "write every flow to `PATH` as HAR 1.2, complete at shutdown (records flows even without -admin-listen)")
	value(&s.harFileMax, "har-file-max-bytes", "past `SIZE`, complete the HAR file, rename it with the time, and start a new one (0: one file)")
	fs.Var(fs.Lookup("admin-listen").Value, "metrics-listen", "an alias of -admin-listen, its old name: the admin listener's `host:port` (fixed: a reload cannot change it)")

	str(&s.mitmCADir, "mitm-ca-dir", "", "intercept TLS in CONNECTs with the CA in `DIR` (ca.pem and ca-key.pem, created if both are missing); plain HTTP in a CONNECT is served too, other protocols are tunnelled")
	value(&s.mitmBypass, "mitm-bypass", "tunnel, not intercept, CONNECTs to destinations matching `PATTERN`: host, *.domain, IP or CIDR, as for -deny-host; IPs and CIDRs match IP targets (repeatable or comma-separated)")
	str(&s.upstreamCA, "upstream-ca", "", "PEM `FILE` of extra root certificates trusted for upstream TLS (read again on reload)")

	str(&s.tlsListen, "tls-listen", "", "also serve an HTTPS proxy (TLS to the proxy; HTTP/1.1 and HTTP/2 by ALPN) on `host:port`, with -tls-cert and -tls-key")
	str(&s.tlsCert, "tls-cert", "", "PEM `FILE` of the HTTPS listener's certificate (chain); read again when it changes")
	str(&s.tlsKey, "tls-key", "", "PEM `FILE` of the HTTPS listener's private key; read again when it changes")
	str(&s.tlsClientCA, "tls-client-ca", "", "PEM `FILE` of the CAs of client certificates: a client whose certificate verifies is the user its certificate names (CN, else first URI SAN), without a password (read again on reload)")
	boolean(&s.tlsRequireClientCert, "tls-require-client-cert", "refuse TLS clients without a client certificate that -tls-client-ca verifies (and requests without one on the other listeners, unless -auth lets them in)")
	integer(&s.h2MaxStreams, "http2-max-streams", fwdproxy.DefaultHTTP2MaxStreams, "streams (requests and CONNECT tunnels) a client may have open at once on one HTTP/2 connection")
	boolean(&s.h2c, "h2c", "serve cleartext HTTP/2 with prior knowledge on -listen (curl --http2-prior-knowledge, h2load)")
	str(&s.socksListen, "socks-listen", "", "also serve SOCKS5 (CONNECT, with -auth as username/password) on `host:port`")
	boolean(&s.socksOnHTTP, "socks-on-http-listener", "serve SOCKS5 on -listen too, told from HTTP by the first byte (refused without it)")
	value(&s.proxyProtocolFrom, "proxy-protocol-from", "take the PROXY protocol (v1, v2) from load balancers at `CIDR`: they must send it, others may not (repeatable or comma-separated)")

	str(&s.config, "config", "", "read settings from the YAML `FILE` (keys are the flag names); with it, SIGHUP and changes to the file reload it (command line and environment only)")
	value(&s.checkConfig, "check-config", "check the configuration (-config FILE, or -check-config FILE) and exit: 0 when it is valid, else 1 with FILE:LINE: key: problem (command line only)")
	boolean(&s.version, "version", "print the version and exit (command line only)")
	return fs
}

// isFixed reports whether the setting name cannot change on reload.
func isFixed(name string) bool {
	for _, k := range fixedKeys {
		if k == name {
			return true
		}
	}
	return false
}

// accepts says in words what a flag takes, for errors about a value in the
// file or the environment.
func accepts(fl *flag.Flag) string {
	if a, ok := fl.Value.(interface{ accepts() string }); ok {
		return a.accepts()
	}
	switch fl.Value.(flag.Getter).Get().(type) {
	case bool:
		return "true or false"
	case int:
		return "an integer"
	case float64:
		return "a number"
	case time.Duration:
		return "a duration such as 10s, 1m30s or 500ms"
	}
	return "a string"
}

// listFlag is a flag that may be repeated; each value may also hold several
// items separated by commas (so one environment variable can set several).
// In the file it is a YAML list, whose items are taken as they are.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		if err := l.add(strings.TrimSpace(item)); err != nil {
			return err
		}
	}
	return nil
}

// add appends one item, as it is.
func (l *listFlag) add(item string) error {
	if item == "" {
		return errors.New("empty item")
	}
	*l = append(*l, item)
	return nil
}

// reset empties the list, so that a layer of settings replaces the list of
// the layer below instead of adding to it (config.go).
func (l *listFlag) reset() { *l = nil }

func (l *listFlag) Get() any { return []string(*l) }

func (l *listFlag) accepts() string { return "a list of strings (or one string)" }

// byteSize is a size in bytes: an integer, or one with a binary unit
// ("64KiB", "1 MiB").
type byteSize int64

var sizeUnits = []struct {
	name string
	n    int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range sizeUnits[:3] {
		if n != 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func (b *byteSize) Get() any { return int64(*b) }

func (b *byteSize) accepts() string {
	return "a size in bytes: an integer, or one with KiB, MiB or GiB (64KiB)"
}

// maxSize bounds a size so that it fits an int with room to spare.
const maxSize = 1 << 50

// parseSize reads "65536", "64KiB", "64 KiB" or "1MiB"; units are binary
// and case-sensitive (KiB, MiB, GiB, B), as "KB" could mean 1000 or 1024.
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.name); ok {
			s, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxSize/mult {
		return 0, fmt.Errorf("%q is not a size (an integer from 0, with KiB, MiB or GiB if you like)", v)
	}
	return n * mult, nil
}

// captureSize is -capture: off, or the body bytes to capture.
type captureSize struct {
	on bool
	n  byteSize
}

func (c *captureSize) String() string {
	if !c.on {
		return "off"
	}
	return c.n.String()
}

func (c *captureSize) Set(v string) error {
	if strings.TrimSpace(v) == "off" {
		*c = captureSize{}
		return nil
	}
	if err := c.n.Set(v); err != nil {
		return err
	}
	c.on = true
	return nil
}

func (c *captureSize) Get() any { return c.String() }

func (c *captureSize) accepts() string {
	return "off, or a size in bytes (0: headers only; 64KiB)"
}

// checkFlag is -check-config: a switch that also takes the file to check,
// so "-check-config FILE", "-check-config=FILE" and "-config FILE
// -check-config" all work.
type checkFlag struct {
	on   bool
	file string
}

func (c *checkFlag) IsBoolFlag() bool { return true }

func (c *checkFlag) String() string {
	if c.file != "" {
		return c.file
	}
	return strconv.FormatBool(c.on)
}

func (c *checkFlag) Set(v string) error {
	switch v {
	case "true":
		c.on = true
	case "false":
		*c = checkFlag{}
	default:
		c.on, c.file = true, v
	}
	return nil
}

func (c *checkFlag) Get() any { return c.on }
