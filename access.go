package fwdproxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// Access control. Every request and tunnel passes these checks, in this
// order; the first that refuses answers the client and nothing is dialed:
//
//  1. rate limit per client IP (WithRateLimit): 429;
//  2. proxy authentication (a verified client certificate with WithTLS;
//     WithBasicAuth, WithAuthenticator): 407, or 403 for a client without
//     the certificate that WithTLS requires;
//  3. request body size (WithMaxRequestBodyBytes), when the length is known: 413;
//  4. rules on the host name and port (WithDenyHosts, WithAllowHosts,
//     WithAllowPorts): 403;
//  5. the access hooks (WithAccessHook), run as Option says: 403 or the
//     status of Deny;
//  6. the policy that matches the user or client (WithPolicies, userpolicy.go):
//     its host and port rules (403), its rate (429) and its byte quota
//     (429, with Retry-After);
//  7. for CONNECT, the tunnel limit (WithMaxTunnels): 503, and the policy's
//     MaxTunnels: 429;
//  8. after DNS resolution, every address is checked by the private-address
//     guard (WithAllowPrivate, WithAllowedCIDRs) and the CIDR rules; only
//     addresses that pass are dialed, so a second lookup cannot change the
//     outcome (DNS rebinding). When none pass: 403.
//
// Every step reads the request's one configuration (config.go), loaded
// when the request started.
//
// In report-only mode (WithReportOnly) steps 4, 5 and the CIDR rules of step 8
// log what they would refuse and let the request through; authentication,
// limits and the private-address guard are always enforced.

// Authenticator checks the proxy credentials of a request or CONNECT,
// usually carried in its Proxy-Authorization header. Implementations must
// be safe for concurrent use.
type Authenticator interface {
	// Authenticate returns the name of the authenticated user and true, or
	// false when the credentials are missing or wrong.
	Authenticate(ctx context.Context, r *http.Request) (user string, ok bool)
	// Challenge returns the Proxy-Authenticate header value sent with a
	// 407 answer, such as `Basic realm="fwdproxy"`.
	Challenge() string
}

// basicAuth is the Authenticator of WithBasicAuth.
type basicAuth struct {
	check func(ctx context.Context, user, pass string) bool
}

func (b basicAuth) Authenticate(ctx context.Context, r *http.Request) (string, bool) {
	v := r.Header["Proxy-Authorization"]
	if len(v) != 1 {
		return "", false
	}
	user, pass, ok := policy.ParseBasic(v[0])
	if !ok || !b.check(ctx, user, pass) {
		return "", false
	}
	return user, true
}

func (basicAuth) Challenge() string { return `Basic realm="fwdproxy", charset="UTF-8"` }

// StaticCredentials returns a check for WithBasicAuth that accepts the
// user names and passwords of users (user → password). Comparisons run in
// constant time over every entry, so timing reveals neither which user
// exists nor how much of a password matched. The map is copied.
//
// A check made by StaticCredentials is known as one to Reload: two made from
// the same table describe the same configuration (configdesc.go, which
// needs every such check to share the code of one function literal, hence
// no inlining).
//
//go:noinline
func StaticCredentials(users map[string]string) func(ctx context.Context, user, pass string) bool {
	want := make([][2][sha256.Size]byte, 0, len(users)) // user, password
	for u, p := range users {
		want = append(want, [2][sha256.Size]byte{sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))})
	}
	table := tableDigest(want) // configdesc.go
	return func(ctx context.Context, user, pass string) bool {
		if probe, ok := ctx.(*credentialsProbe); ok {
			probe.digest = table // describe asks which table this is (configdesc.go)
			return false
		}
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		match := 0
		for i := range want {
			match |= subtle.ConstantTimeCompare(u[:], want[i][0][:]) & subtle.ConstantTimeCompare(p[:], want[i][1][:])
		}
		return match == 1
	}
}

// Access describes a request or tunnel for an AccessHook.
type Access struct {
	User    string // the authenticated user; "" without authentication
	Client  string // the client's address, "ip:port"
	Method  string // the request method; "CONNECT" for tunnels
	Host    string // the target host: a name or an IP address, without brackets
	Port    uint16 // the target port
	Connect bool   // a CONNECT tunnel rather than a forwarded request
}

// AccessHook decides on each request and tunnel that the rules let through,
// before anything is dialed. Return nil to allow it. Return an error to
// refuse it: an error made by Deny sets the status and reason, any other
// error is answered with 403 and the error's text.
type AccessHook func(ctx context.Context, a Access) error

// dialPolicy is what p.dial needs to know about the request it dials for,
// its configuration included: admit puts it in the request's context.
type dialPolicy struct {
	cfg     *config
	connect bool
	client  string
}

type ctxKeyDialPolicy struct{}

// dialPolicyFrom returns the dialPolicy in ctx. A dial for no admitted
// request (there is none today) gets the configuration in force.
func (p *Proxy) dialPolicyFrom(ctx context.Context) dialPolicy {
	pol, ok := ctx.Value(ctxKeyDialPolicy{}).(dialPolicy)
	if !ok {
		pol.cfg = p.cfg.Load()
	}
	return pol
}

// admit runs the access checks that precede dialing (steps 1 to 6 above)
// for a request to host:port under c. It answers the client and returns
// false when the request is refused; otherwise it returns the context to
// continue with, carrying the authenticated user and what p.dial needs (c
// included).
func (p *Proxy) admit(c *config, w http.ResponseWriter, r *http.Request, target, host string, port uint16, connect bool) (context.Context, bool) {
	ctx := r.Context()
	if c.limiter != nil && !c.limiter.Allow(clientIP(r.RemoteAddr)) {
		w.Header()["Retry-After"] = []string{"1"}
		p.fail(c, w, r, denied(ErrRateLimited, "rate_limit", target, "too many requests from this client"))
		return ctx, false
	}
	if (c.auth != nil || c.front.certAuth) && authUser(ctx) == "" {
		user, ok := "", false
		if c.front.certAuth {
			user = clientCertUser(ctx) // front.go: a verified client certificate (WithTLS)
			ok = user != ""
		}
		if !ok && c.auth != nil {
			if user, ok = c.auth.Authenticate(ctx, r); !ok {
				w.Header()["Proxy-Authenticate"] = []string{c.auth.Challenge()}
				reason := "proxy authentication required"
				if r.Header["Proxy-Authorization"] != nil {
					reason = "proxy credentials rejected"
				}
				p.fail(c, w, r, denied(ErrAuthRequired, "auth", target, reason))
				return ctx, false
			}
		}
		if !ok && c.front.certRequired {
			p.fail(c, w, r, denied(ErrForbidden, "auth", target, clientCertReason))
			return ctx, false
		}
		if ok {
			ctx = withAuthUser(ctx, user)
			if rs := reqStateFrom(ctx); rs != nil {
				rs.user = user // for the access log
			}
		}
	}
	if max := c.maxBodyBytes; max > 0 && r.ContentLength > max {
		p.fail(c, w, r, denied(ErrTooLarge, "body_size", target, "request body of "+strconv.FormatInt(r.ContentLength, 10)+
			" bytes is over the limit of "+strconv.FormatInt(max, 10)))
		return ctx, false
	}
	ip, _ := policy.ParseHost(host)
	if ok, reason := c.rules.Check(host, ip, port, connect); !ok {
		if !p.reportOnly(c, r, target, reason) {
			p.fail(c, w, r, denied(ErrForbidden, "rule", target, "access denied: "+reason))
			return ctx, false
		}
	}
	if len(c.accessHooks) > 0 {
		a := Access{User: authUser(ctx), Client: r.RemoteAddr, Method: r.Method, Host: host, Port: port, Connect: connect}
		if e := runAccessHooks(ctx, c.accessHooks, target, a); e != nil { // hooks.go
			e.denial = "hook" // e is the request's own copy (hookError): hooks may return a shared error
			if !p.reportOnly(c, r, target, e.Reason) {
				p.fail(c, w, r, e)
				return ctx, false
			}
		}
	}
	var match *policyMatch
	if c.users != nil {
		var e *Error
		if match, e = p.policyAdmit(ctx, c, w, r, target, host, port, connect); e != nil { // userpolicy.go
			p.fail(c, w, r, e)
			return ctx, false
		}
	}
	if match != nil {
		ctx = context.WithValue(ctx, ctxKeyPolicy{}, match) // userpolicy.go: policyOf
	}
	return context.WithValue(ctx, ctxKeyDialPolicy{}, dialPolicy{cfg: c, connect: connect, client: r.RemoteAddr}), true
}

// The hints that refusals give where an option would allow the request
// (issue 13): they name the library option and the example server's flag.
// Refusals by the operator's own decisions (deny and allow rules, the access
// hook, authentication, WithRateLimit, WithMaxRequestBodyBytes) give none:
// only the operator may lift them and the client cannot.
const (
	privateHint     = " (allow with WithAllowPrivate or WithAllowedCIDRs, -allow-private on the example server)"
	connectPortHint = " (allow with WithAllowPorts, -allow-port on the example server)"
	tunnelsReason   = "too many open tunnels: retry later (the limit is WithMaxTunnels, -max-tunnels on the example server)"
	bodyIdleHint    = " (the limit is WithBodyIdleTimeout, -body-idle-timeout on the example server)"
)

// clientCertReason refuses a request without a verified client
// certificate when WithTLS requires one (tls.RequireAndVerifyClientCert)
// and no other authenticator passed it: one that came on another listener
// (Serve, ServeSOCKS), where the handshake could not require it.
const clientCertReason = "a client certificate is required: connect to the proxy's TLS listener with a certificate it trusts"

// reportOnly logs a denial that report-only mode (c's) lets through and
// reports whether it does.
func (p *Proxy) reportOnly(c *config, r *http.Request, target, reason string) bool {
	if !c.reportOnly {
		return false
	}
	p.log.LogAttrs(r.Context(), slog.LevelWarn, "would deny (report-only)",
		slog.String("method", r.Method), slog.String("target", target),
		slog.String("reason", reason), slog.String("client", r.RemoteAddr))
	return true
}

// vet filters the resolved addresses of host:port (step 7 above) under the
// dialing request's policy: it returns those that may be dialed, or an
// *Error when none may. ips is shared with the resolver's cache and is not
// modified.
func (p *Proxy) vet(ctx context.Context, pol dialPolicy, target, host string, port uint16, ips []netip.Addr) ([]netip.Addr, error) {
	var ok []netip.Addr
	var refused *Error
	for i, ip := range ips {
		reason, why := p.addrRefusal(ctx, pol, target, host, port, ip)
		if reason != "" {
			if refused == nil {
				refused = denied(ErrForbidden, why, target, reason)
			}
			if ok == nil {
				ok = make([]netip.Addr, i, len(ips))
				copy(ok, ips[:i])
			}
			continue
		}
		if ok != nil {
			ok = append(ok, ip)
		}
	}
	switch {
	case refused == nil:
		return ips, nil
	case len(ok) == 0:
		return nil, refused
	default:
		return ok, nil
	}
}

// addrRefusal returns why the dialing request's policy refuses ip, an
// address of host:port (the reason, and the denials metric's word for it),
// or "" when it may be dialed. Report-only mode logs a rule's refusal and
// lets the address through.
func (p *Proxy) addrRefusal(ctx context.Context, pol dialPolicy, target, host string, port uint16, ip netip.Addr) (reason, why string) {
	c := pol.cfg
	if !c.allowPrivate {
		if class := c.guard.Classify(ip); class.Denied() {
			return "destination " + ip.String() + " is " + class.String() + ": private addresses are not allowed" + privateHint, "private_address"
		}
	}
	if m := policyIf(ctx, c); m != nil && m.pol.rules != nil {
		if allowed, rule := m.pol.rules.Check(host, ip, port, pol.connect); !allowed {
			return "access denied by policy " + strconv.Quote(m.pol.Name) + ": " + rule, "policy"
		}
	}
	if allowed, rule := c.rules.Check(host, ip, port, pol.connect); !allowed {
		if !c.reportOnly {
			return "access denied: " + rule, "rule"
		}
		p.log.LogAttrs(ctx, slog.LevelWarn, "would deny (report-only)",
			slog.String("target", target), slog.String("reason", rule), slog.String("client", pol.client))
	}
	return "", ""
}

// clientIP returns the IP part of a RemoteAddr, the rate limiter's key.
func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// rateLimitClients bounds the client addresses the rate limiter tracks.
const rateLimitClients = 65536

// errBodyTooLarge ends a request body that passed WithMaxRequestBodyBytes.
var errBodyTooLarge = errors.New("request body too large")

// limitedBody fails a streamed request body once it passes left bytes.
type limitedBody struct {
	io.ReadCloser
	left int64
	over atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		b.over.Store(true)
		return 0, errBodyTooLarge
	}
	return n, err
}
