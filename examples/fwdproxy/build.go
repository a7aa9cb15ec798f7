package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/redisstore"
)

// shared is what the server sets up once, at start, and every
// configuration built since uses: the logger, the telemetry providers, the
// interception CA, the descriptor limit. The settings it comes from (the
// listen addresses, the CA directory, the log format, the trace file) are
// fixed: a reload cannot change them.
type shared struct {
	logger *slog.Logger
	tel    []fwdproxy.Option  // telemetry.go
	ca     *tls.Certificate   // nil: no interception
	certs  fwdproxy.CertStore // the leaves minted with ca, kept across reloads; nil: the library's own
	fdSoft uint64             // 0: unknown
	cert   *certFiles         // the HTTPS listener's certificate (front.go); nil: no -tls-listen
	store  *redisstore.Store  // -redis (redis.go); nil: none
}

// built is a configuration ready for fwdproxy.New or (*Proxy).Reload.
type built struct {
	opts       []fwdproxy.Option
	level      slog.Level // -log-level, which the server's logger applies
	fit        fitted     // the limits in the descriptor budget
	adminToken string     // -admin-token or -admin-token-file's (admin.go)
}

// configure turns the settings into the Proxy's options: a whole
// configuration, every option given, so that a reload with it leaves
// nothing of the one before. A problem is reported where its setting was
// made. The same function serves the start, -check-config and reloads, so
// the three agree.
func configure(l *loaded, sh *shared) (*built, error) {
	s := l.s
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, l.problem(key, fmt.Sprintf(format, args...)))
	}
	b := &built{fit: s.limits.fit(sh.fdSoft)}
	if err := b.level.UnmarshalText([]byte(s.logLevel)); err != nil {
		bad("log-level", "want debug, info, warn or error, got %q", s.logLevel)
	}
	t := s.timeouts
	opts := []fwdproxy.Option{
		fwdproxy.WithLogger(sh.logger),
		fwdproxy.WithDialTimeout(t.dial),
		fwdproxy.WithTLSHandshakeTimeout(t.tlsHandshake),
		fwdproxy.WithResponseHeaderTimeout(t.responseHeader),
		fwdproxy.WithIdleConnTimeout(t.idleConn),
		fwdproxy.WithReadHeaderTimeout(t.readHeader),
		fwdproxy.WithClientIdleTimeout(t.clientIdle),
		fwdproxy.WithTunnelIdleTimeout(t.tunnelIdle),
		fwdproxy.WithBodyIdleTimeout(t.bodyIdle),
		fwdproxy.WithMaxHeaderBytes(int(s.maxHeader)),
		fwdproxy.WithMaxResponseHeaderBytes(int(s.maxRespHead)),
		fwdproxy.WithLogQueueSize(s.logQueue),
	}
	opts = append(opts, b.fit.options()...)
	opts = append(opts, sh.tel...)
	if s.allowPrivate {
		opts = append(opts, fwdproxy.WithAllowPrivate())
	}
	if s.reportOnly {
		opts = append(opts, fwdproxy.WithReportOnly())
	}
	if s.proxyFromEnv {
		opts = append(opts, fwdproxy.WithProxyFromEnvironment())
	}
	if len(s.dnsServers) > 0 {
		opts = append(opts, fwdproxy.WithDNSServers(s.dnsServers...))
	}
	if len(s.auth) > 0 {
		users := make(map[string]string, len(s.auth))
		for _, a := range s.auth {
			user, pass, ok := strings.Cut(a, ":")
			if !ok || user == "" {
				bad("auth", "want USER:PASS") // never the value: it holds a password
				break
			}
			users[user] = pass
		}
		opts = append(opts, fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(users)))
	}
	if len(s.denyHosts) > 0 {
		opts = append(opts, fwdproxy.WithDenyHosts(s.denyHosts...))
	}
	if len(s.allowHosts) > 0 {
		opts = append(opts, fwdproxy.WithAllowHosts(s.allowHosts...))
	}
	if len(s.allowPorts) > 0 {
		ports := make([]uint16, 0, len(s.allowPorts))
		for _, p := range s.allowPorts {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				bad("allow-port", "%q is not a port number", p)
				continue
			}
			ports = append(ports, uint16(n))
		}
		opts = append(opts, fwdproxy.WithAllowPorts(ports...))
	}
	switch {
	case s.rateLimit != 0:
		burst := s.rateBurst
		if burst == 0 && s.rateLimit > 0 && s.rateLimit < math.MaxInt32 {
			burst = max(1, int(math.Ceil(s.rateLimit)))
		}
		opts = append(opts, fwdproxy.WithRateLimit(s.rateLimit, burst))
	case s.rateBurst != 0:
		bad("rate-burst", "needs -rate-limit")
	}
	if s.maxBody > 0 {
		opts = append(opts, fwdproxy.WithMaxRequestBodyBytes(int64(s.maxBody)))
	}
	if s.capture.on {
		opts = append(opts, fwdproxy.WithCapture(int(s.capture.n)))
	}
	opts = append(opts, s.policies.options()...) // policies.go
	if sh.store != nil {
		opts = append(opts, fwdproxy.WithSharedState(sh.store)) // redis.go
	}
	upOpts, upErrs := s.upstreams.options(l) // upstreams.go
	opts = append(opts, upOpts...)
	errs = append(errs, upErrs...)
	tlsOpts, err := tlsOptions(l, sh) // intercept.go
	if err != nil {
		errs = append(errs, err)
	}
	opts = append(opts, tlsOpts...)
	frontOpts, err := frontOptions(l, sh) // front.go
	if err != nil {
		errs = append(errs, err)
	}
	if b.adminToken, err = adminToken(l); err != nil { // admin.go
		errs = append(errs, err)
	}
	b.opts = append(opts, frontOpts...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

// checkFixed checks the settings that are used once, at start, before
// anything is started with them: the listen addresses, the log format, and
// that an HTTPS listener has its certificate.
func checkFixed(l *loaded) error {
	var errs []error
	if err := checkAddr(l.s.listen); err != nil {
		errs = append(errs, l.problem("listen", err.Error()))
	}
	if a := l.s.adminListen; a != "" {
		if err := checkAddr(a); err != nil {
			errs = append(errs, l.problem("admin-listen", err.Error()))
		}
	}
	if f := l.s.logFormat; f != "text" && f != "json" {
		errs = append(errs, l.problem("log-format", fmt.Sprintf("want text or json, got %q", f)))
	}
	errs = append(errs, checkFront(l)...) // front.go
	return errors.Join(errs...)
}

// checkAddr checks a listen address as net.Listen would take it, without
// resolving a name or binding.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err == nil || port == "" {
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil { // a service name, from /etc/services
		return fmt.Errorf("want host:port, got %q: no port %q", addr, port)
	}
	return nil
}

// optionKeys maps the library's options, by the name their errors begin
// with, to the settings they are built from. The names from before the
// library's options were all called With… are kept, for errors worded
// with them.
var optionKeys = map[string][]string{
	"WithLogger":                 {"log-format"},
	"WithDialTimeout":            {"dial-timeout"},
	"WithTLSHandshakeTimeout":    {"tls-handshake-timeout"},
	"WithResponseHeaderTimeout":  {"response-header-timeout"},
	"WithIdleConnTimeout":        {"idle-conn-timeout"},
	"WithReadHeaderTimeout":      {"read-header-timeout"},
	"WithClientIdleTimeout":      {"client-idle-timeout"},
	"WithTunnelIdleTimeout":      {"tunnel-idle-timeout"},
	"WithBodyIdleTimeout":        {"body-idle-timeout"},
	"WithMaxHeaderBytes":         {"max-header-bytes"},
	"WithMaxResponseHeaderBytes": {"max-response-header-bytes"},
	"WithLogQueueSize":           {"log-queue-size"},
	"WithMaxConns":               {"max-conns"},
	"WithMaxTunnels":             {"max-tunnels"},
	"WithMaxIdleConns":           {"max-idle-conns-per-host", "max-idle-conns"},
	"WithTracerProvider":         {"trace-file"},
	"WithMeterProvider":          {"admin-listen"},
	"WithAllowPrivate":           {"allow-private"},
	"WithReportOnly":             {"report-only"},
	"WithProxyFromEnvironment":   {"proxy-from-environment"},
	"WithDNSServers":             {"dns-server"},
	"DNSServers":                 {"dns-server"},
	"WithBasicAuth":              {"auth"},
	"WithDenyHosts":              {"deny-host"},
	"WithAllowHosts":             {"allow-host"},
	"WithAllowPorts":             {"allow-port"},
	"WithRateLimit":              {"rate-limit", "rate-burst"},
	"WithMaxRequestBodyBytes":    {"max-request-body-bytes"},
	"WithCapture":                {"capture"},
	"WithUpstreamRootCAs":        {"upstream-ca"},
	"WithInterception":           {"mitm-ca-dir"},
	"BypassHosts":                {"mitm-bypass"},
	"WithInterceptBypass":        {"mitm-bypass"},
	"WithTLS":                    {"tls-cert", "tls-client-ca", "tls-listen"},
	"WithHTTP2MaxStreams":        {"http2-max-streams"},
	"WithProxyProtocol":          {"proxy-protocol-from"},
	"WithUpstreams":              {"upstreams", "upstream"},
	"WithPolicies":               {"policies"},
	"WithPAC":                    {"pac", "pac-credentials"},
	"WithUpstreamResolvesNames":  {"upstream-resolves-names"},
	"WithUpstreamProbe":          {"upstream-probe-interval", "upstream-probe-target"},
}

// locate turns an error of fwdproxy.New or (*Proxy).Reload, whose lines
// each name the option at fault ("fwdproxy.New: WithDenyHosts: …"), into
// problems located where the setting behind that option was made
// ("fwdproxy.yaml:7: deny-host: WithDenyHosts: …"). A line that names no
// option the server uses stays as it is, and an error none of whose lines
// does is returned as it is.
func (l *loaded) locate(err error) error {
	var errs []error
	located := false
	for line := range strings.SplitSeq(err.Error(), "\n") {
		var keys []string
		rest := line
		for {
			name, after, ok := strings.Cut(rest, ": ")
			if !ok || strings.ContainsAny(name, " \t") {
				break
			}
			if k, ok := optionKeys[name]; ok {
				keys = k // the innermost option wins: "WithInterception: WithInterceptBypass: …"
			}
			if strings.HasPrefix(name, "fwdproxy.") {
				line = after // the function's name says nothing to an operator
			}
			rest = after
		}
		if keys == nil {
			errs = append(errs, errors.New(line))
			continue
		}
		key := keys[0]
		for _, k := range keys {
			if _, set := l.origins[k]; set {
				key = k
				break
			}
		}
		at, msg := l.s.upstreams.refine(key, l.origins[key], line) // upstreams.go: a route's own line
		if key == "policies" {
			at = l.s.policies.refine(at, line) // policies.go: a policy's own line
		}
		errs = append(errs, &settingError{key: key, at: at, msg: msg})
		located = true
	}
	if !located {
		return err
	}
	return errors.Join(errs...)
}
