package fwdproxy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// A configuration's canonical description: one line per option, in a
// fixed order, with the option's effective value (the default when it was
// not given). Its SHA-256 is the configuration's hash (Stats.Config.Hash),
// and Reload's log line names the lines that differ between the old and
// the new configuration.
//
// Values that can be compared are described by what they are. Functions,
// and values known only through an interface (a hook, an Authenticator, a
// handler, a provider), cannot be compared by content: they are described
// by their count and identity (the function value or the pointer), so the
// same values describe the same, and a new function, even one built alike,
// describes a change. Secrets are described by a digest keyed with a
// random key of the Proxy's, never by their text: the credentials of
// StaticCredentials (so that the same table, rebuilt, describes the same).
// The hash identifies a configuration within one Proxy, not across
// processes.

// setting is one line of a description.
type setting struct {
	option string // the option that sets it, as the log names it
	value  string // its effective value
	secret bool   // value is a keyed digest: logged as "changed", never shown
}

// configMeta is what New and Reload record about a configuration.
type configMeta struct {
	gen      uint64    // 1 for New's, then one more for each Reload
	hash     string    // hex SHA-256 of desc
	desc     []setting // the canonical description
	loadedAt time.Time // when it was put in force
}

// describe returns the description of c's settings, secrets keyed with key.
func describe(s *settings, key []byte) []setting {
	var d []setting
	add := func(option, value string) { d = append(d, setting{option: option, value: value}) }
	dur := func(option string, v time.Duration) { add(option, v.String()) }
	num := func(option string, v int) { add(option, strconv.Itoa(v)) }
	onOff := func(option string, v bool) {
		if v {
			add(option, "on")
		} else {
			add(option, "off")
		}
	}

	// Upstream (options_upstream.go).
	dur("WithDialTimeout", s.dialTimeout)
	dur("WithTLSHandshakeTimeout", s.tlsHandshakeTimeout)
	dur("WithResponseHeaderTimeout", s.responseHeaderTimeout)
	add("WithMaxIdleConns", fmt.Sprintf("%d per host, %d in all", s.maxIdleConnsPerHost, s.maxIdleConns))
	dur("WithIdleConnTimeout", s.idleConnTimeout)
	onOff("WithProxyFromEnvironment", s.proxyFromEnvironment)
	add("WithUpstreamRootCAs", identity(s.upstreamRoots))
	num("WithMaxResponseHeaderBytes", s.maxResponseHeader)
	add("WithResolver", identity(s.resolver))
	dns := &s.dns
	if len(dns.servers) > 0 {
		add("WithDNSServers", strings.Join(dns.servers, ", "))
	} else {
		add("WithDNSServers", "from the resolv.conf file")
	}
	add("WithResolvConf", givenPath(dns.resolvConf, dns.resolvConfSet))
	add("WithHostsFile", givenPath(dns.hostsFile, dns.hostsSet))
	num("WithDNSCacheSize", dns.cacheSize)
	add("WithDNSTTL", dns.minTTL.String()+" to "+dns.maxTTL.String())
	dur("WithDNSNegativeTTL", dns.negTTL)
	dur("WithDNSErrorTTL", dns.errTTL)
	dur("WithDNSServeStale", dns.staleWindow)
	dur("WithDNSTimeout", dns.timeout)
	onOff("WithDNSPrefetch", dns.prefetch)

	// Routing through upstream proxies (options_route.go).
	describeRouting(s, key, func(st setting) { d = append(d, st) }) // route.go

	// Client side (options_client.go).
	dur("WithReadHeaderTimeout", s.readHeaderTimeout)
	dur("WithClientIdleTimeout", s.clientIdleTimeout)
	num("WithMaxHeaderBytes", s.maxHeaderBytes)
	dur("WithTunnelIdleTimeout", s.tunnelIdleTimeout)
	dur("WithBodyIdleTimeout", s.bodyIdleTimeout)
	add("WithVia", s.pseudonym)
	add("WithFallback", identity(s.fallback))

	// Access control (options_access.go).
	onOff("WithAllowPrivate", s.allowPrivate)
	add("WithAllowedCIDRs", prefixes(s.allowedCIDRs))
	d = append(d, describeAuth(s.auth, key))
	r := &s.accessRules
	add("WithDenyHosts", describeHostRules(r.DenyHosts, r.DenyCIDRs))
	add("WithAllowHosts", describeHostRules(r.AllowHosts, r.AllowCIDRs))
	add("WithAllowPorts", portRanges(r.ConnectPorts))
	add("ports of plain requests", portRanges(r.Ports))
	onOff("WithReportOnly", s.reportOnly)
	num("WithMaxConns", s.maxConns)
	num("WithMaxTunnels", s.maxTunnels)
	if s.rate > 0 {
		add("WithRateLimit", strconv.FormatFloat(s.rate, 'g', -1, 64)+"/s, burst "+strconv.Itoa(s.burst))
	} else {
		add("WithRateLimit", "off")
	}
	if s.maxBodyBytes > 0 {
		add("WithMaxRequestBodyBytes", strconv.FormatInt(s.maxBodyBytes, 10))
	} else {
		add("WithMaxRequestBodyBytes", "off")
	}
	add("WithPolicies", describePolicies(s.policies)) // userpolicy.go
	add("WithSharedState", identity(s.shared))
	dur("WithLeaseTTL", s.leaseTTL)

	// Hooks (options_hooks.go).
	add("WithAccessHook", funcs(s.accessHooks))
	add("WithConnectHook", funcs(s.connectHooks))
	add("WithRequestHook", funcs(s.requestHooks))
	add("WithResponseHook", funcs(s.responseHooks))

	// Logging and telemetry (options_telemetry.go).
	add("WithLogger", identity(s.logger))
	add("WithTracerProvider", identity(s.tracerProvider))
	add("WithMeterProvider", identity(s.meterProvider))
	add("WithPropagator", identity(s.propagator))
	if s.capture {
		add("WithCapture", "headers and "+strconv.Itoa(s.captureBytes)+" body bytes")
	} else {
		add("WithCapture", "off")
	}
	num("WithLogQueueSize", s.logQueueSize)
	onOff("telemetry", !s.telemetryOff)

	// TLS interception (options_intercept.go).
	is := s.interception
	if is == nil {
		is = &interceptSettings{}
		add("WithInterception", "off")
	} else {
		add("WithInterception", "CA "+caFingerprint(is))
	}
	add("WithInterceptBypass", describeHostRules(is.bypassHosts, is.bypassCIDRs))
	add("WithInterceptFunc", identity(is.decide))
	num("WithCertCacheSize", is.cacheSize)
	add("WithCertStore", identity(is.store))

	// Front ends (options_front.go).
	add("WithTLS", describeTLS(s.tls))
	num("WithHTTP2MaxStreams", s.h2MaxStreams)
	onOff("WithCleartextHTTP2", s.h2c)
	if s.proxyProtocol == nil {
		add("WithProxyProtocol", "off")
	} else {
		add("WithProxyProtocol", "from "+prefixes(s.proxyProtocol))
	}
	onOff("WithSOCKSOnHTTPListener", s.socksOnHTTP)
	return d
}

// describeTLS describes WithTLS's configuration by what a handshake uses:
// its certificates by the SHA-256 of their leaves (GetCertificate by its
// identity), the client authentication and its CAs (by a digest of their
// subjects), the versions, suites and protocols offered.
func describeTLS(conf *tls.Config) string {
	if conf == nil {
		return "off"
	}
	var b strings.Builder
	b.WriteString("certificates")
	for _, c := range conf.Certificates {
		if len(c.Certificate) > 0 {
			sum := sha256.Sum256(c.Certificate[0])
			b.WriteString(" sha256:" + hex.EncodeToString(sum[:8]))
		}
	}
	if conf.GetCertificate != nil {
		b.WriteString(" GetCertificate " + identity(conf.GetCertificate))
	}
	b.WriteString(", client auth " + conf.ClientAuth.String())
	if conf.ClientCAs != nil {
		h := sha256.New()
		//lint:ignore SA1019 the pool is the caller's, never the system's, whose subjects it cannot list
		for _, s := range conf.ClientCAs.Subjects() {
			h.Write(s)
		}
		b.WriteString(" from CAs sha256:" + hex.EncodeToString(h.Sum(nil)[:8]))
	}
	fmt.Fprintf(&b, ", versions %#x-%#x, suites %v, ALPN %v", conf.MinVersion, conf.MaxVersion, conf.CipherSuites, conf.NextProtos)
	return b.String()
}

// hashOf returns the hex SHA-256 of a description.
func hashOf(d []setting) string {
	h := sha256.New()
	for _, s := range d {
		fmt.Fprintf(h, "%s=%q\n", s.option, s.value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// changes lists what differs from the description old to new, one entry per
// option: "WithDenyHosts: none → b.test"; secrets only as "WithBasicAuth
// changed". Both come from describe, so they have the same lines in the
// same order.
func changes(old, new []setting) []string {
	var out []string
	for i := range new {
		o, n := old[i], new[i]
		if o.value == n.value {
			continue
		}
		if o.secret || n.secret {
			out = append(out, n.option+" changed")
			continue
		}
		out = append(out, n.option+": "+o.value+" → "+n.value)
	}
	return out
}

// givenPath describes a path option: the path, "(default)" when the option
// was not given.
func givenPath(path string, given bool) string {
	switch {
	case path == "":
		return "off"
	case !given:
		return path + " (default)"
	}
	return path
}

func prefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ", ")
}

func describeHostRules(hosts []string, cidrs []netip.Prefix) string {
	if len(hosts) == 0 {
		return prefixes(cidrs)
	}
	if len(cidrs) == 0 {
		return strings.Join(hosts, ", ")
	}
	return strings.Join(hosts, ", ") + ", " + prefixes(cidrs)
}

func portRanges(rs []policy.PortRange) string {
	if len(rs) == 0 {
		return "default"
	}
	ss := make([]string, len(rs))
	for i, r := range rs {
		ss[i] = strconv.Itoa(int(r.Lo))
		if r.Hi != r.Lo {
			ss[i] += "-" + strconv.Itoa(int(r.Hi))
		}
	}
	return strings.Join(ss, ", ")
}

// funcs describes a list of hooks by their count and identities.
func funcs[F any](fs []F) string {
	if len(fs) == 0 {
		return "none"
	}
	ids := make([]string, len(fs))
	for i, f := range fs {
		ids[i] = identity(f)
	}
	return strconv.Itoa(len(fs)) + ": " + strings.Join(ids, ", ")
}

// identity describes a value that cannot be compared by content: its type
// and identity. A function is identified by its value (two closures made
// by one function literal are two values), a pointer, map or channel by
// its address, any other value by a digest of its Go syntax. nil (an
// option not given) is "default".
func identity(v any) string {
	if v == nil {
		return "default"
	}
	rv := reflect.ValueOf(v)
	t := rv.Type().String()
	switch rv.Kind() {
	case reflect.Func:
		if rv.IsNil() {
			return "default"
		}
		// A func value is a pointer to its closure (or to the static
		// closure of a plain function); in an interface, that pointer
		// is the data word.
		return t + "@" + strconv.FormatUint(uint64(uintptr((*[2]unsafe.Pointer)(unsafe.Pointer(&v))[1])), 16)
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.UnsafePointer:
		if rv.IsNil() {
			return "default"
		}
		return t + "@" + strconv.FormatUint(uint64(rv.Pointer()), 16)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%#v", v))
	return t + "#" + hex.EncodeToString(sum[:8])
}

// describeAuth describes the authenticator: a keyed digest of the table of
// StaticCredentials, the identity of any other check or Authenticator.
func describeAuth(a Authenticator, key []byte) setting {
	b, ok := a.(basicAuth)
	switch {
	case a == nil:
		return setting{option: "WithBasicAuth", value: "off"}
	case !ok:
		return setting{option: "WithAuthenticator", value: identity(a)}
	}
	if digest, ok := staticCredentialsDigest(b.check); ok {
		mac := hmac.New(sha256.New, key)
		mac.Write(digest[:])
		return setting{option: "WithBasicAuth", value: "StaticCredentials " + hex.EncodeToString(mac.Sum(nil)), secret: true}
	}
	return setting{option: "WithBasicAuth", value: identity(b.check)}
}

// credentialsProbe is the context with which describe asks a check made by
// StaticCredentials for the digest of its table (staticCredentialsDigest).
// Requests never carry it.
type credentialsProbe struct {
	context.Context
	digest [sha256.Size]byte
}

// staticCredentialsCode is the code of the checks StaticCredentials makes:
// a check with this code is one of them, which answers a credentialsProbe
// (all closures of one function literal share its code).
var staticCredentialsCode = reflect.ValueOf(StaticCredentials(nil)).Pointer()

// staticCredentialsDigest returns the digest of check's table when check
// was made by StaticCredentials.
func staticCredentialsDigest(check func(ctx context.Context, user, pass string) bool) ([sha256.Size]byte, bool) {
	if reflect.ValueOf(check).Pointer() != staticCredentialsCode {
		return [sha256.Size]byte{}, false
	}
	probe := &credentialsProbe{Context: context.Background()}
	check(probe, "", "")
	return probe.digest, true
}

// tableDigest is the digest of StaticCredentials' table: of its entries'
// digests, in order, so that the same users and passwords give the same
// digest however the map was built.
func tableDigest(entries [][2][sha256.Size]byte) [sha256.Size]byte {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b [2][sha256.Size]byte) int {
		if c := bytes.Compare(a[0][:], b[0][:]); c != 0 {
			return c
		}
		return bytes.Compare(a[1][:], b[1][:])
	})
	h := sha256.New()
	for _, e := range sorted {
		h.Write(e[0][:])
		h.Write(e[1][:])
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// caFingerprint describes the interception CA by the SHA-256 of its
// certificate, as certificate tools show it.
func caFingerprint(is *interceptSettings) string {
	if len(is.ca.Certificate) == 0 {
		return "none"
	}
	sum := sha256.Sum256(is.ca.Certificate[0])
	return "sha256:" + hex.EncodeToString(sum[:])
}
