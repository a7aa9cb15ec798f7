package adminui

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// TokenCookie is the cookie that carries the admin token once a browser
// has presented it with ?token=.
const TokenCookie = "fwdproxy_admin_token"

// GuardOptions configures [Guard].
type GuardOptions struct {
	// Token, when not empty, is required on every request but those to
	// Public paths: as "Authorization: Bearer <token>", as the
	// TokenCookie cookie, or once as the query parameter token (which
	// sets the cookie, since a browser's EventSource cannot send headers).
	Token string
	// AllowedHosts are the host names, besides IP literals, "localhost"
	// and names under ".localhost", that requests may name in their Host
	// header when there is no Token. Compared case-insensitively, without
	// the port.
	AllowedHosts []string
	// Public are paths served without the token, such as "/healthz" for
	// probes that cannot send one. Exact matches only.
	Public []string
}

// Guard puts next behind the admin listener's protections:
//
//   - With a token, every request but those to Public paths must present
//     it (see [GuardOptions.Token]); the comparison takes constant time.
//     Without it the answer is 401 with a WWW-Authenticate challenge.
//     A page request (GET or HEAD) that presents it in the query is sent a
//     HttpOnly, SameSite=Strict cookie and redirected to the same URL
//     without the token, so that it stays out of the history.
//   - Without a token, the Host header must be an IP literal, localhost or
//     one of AllowedHosts, else 403: a page on another site that rebinds its
//     name to the admin listener's address (DNS rebinding) cannot read the
//     flows. With a token that attack fails anyway (the cookie is not sent).
//   - Requests that change state (POST and other unsafe methods) from
//     another origin are refused (http.CrossOriginProtection), so that a
//     page elsewhere cannot pause or clear the flow ring.
//
// SetToken changes the token of the returned handler.
func Guard(next http.Handler, o GuardOptions) *Guarded {
	g := &Guarded{
		next:   http.NewCrossOriginProtection().Handler(next),
		hosts:  make([]string, 0, len(o.AllowedHosts)),
		public: slices.Clone(o.Public),
	}
	for _, h := range o.AllowedHosts {
		g.hosts = append(g.hosts, strings.ToLower(h))
	}
	g.SetToken(o.Token)
	return g
}

// Guarded is a handler behind [Guard].
type Guarded struct {
	next   http.Handler
	hosts  []string
	public []string
	token  atomic.Pointer[tokenSum] // nil: no token
}

// tokenSum is the SHA-256 of the token.
type tokenSum [sha256.Size]byte

// SetToken makes token the one required from now on ("" for none, which
// brings the Host check back). A browser holding the old token in its
// cookie must present the new one.
func (g *Guarded) SetToken(token string) {
	if token == "" {
		g.token.Store(nil)
		return
	}
	sum := tokenSum(sha256.Sum256([]byte(token)))
	g.token.Store(&sum)
}

// ServeHTTP applies the checks that Guard describes, then serves next.
func (g *Guarded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sum := g.token.Load()
	if sum == nil {
		if !g.hostAllowed(r.Host) {
			http.Error(w, "admin: Host "+quote(r.Host)+" not allowed: use an IP address or localhost, "+
				"or set an admin token", http.StatusForbidden)
			return
		}
		g.next.ServeHTTP(w, r)
		return
	}
	if slices.Contains(g.public, r.URL.Path) || g.headerOK(r, sum) || g.cookieOK(r, sum) {
		g.next.ServeHTTP(w, r)
		return
	}
	if tok := r.URL.Query().Get("token"); tok != "" && match(tok, sum) {
		http.SetCookie(w, &http.Cookie{
			Name:     TokenCookie,
			Value:    tok,
			Path:     "/",
			HttpOnly: true,
			Secure:   r.TLS != nil,
			SameSite: http.SameSiteStrictMode,
		})
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			u := *r.URL
			q := u.Query()
			q.Del("token")
			u.RawQuery = q.Encode()
			u.Scheme, u.Host = "", ""
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		g.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="fwdproxy admin"`)
	http.Error(w, "admin: token required: send Authorization: Bearer <token>, or open the page once with ?token=<token>",
		http.StatusUnauthorized)
}

func (g *Guarded) headerOK(r *http.Request, want *tokenSum) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && match(strings.TrimSpace(tok), want)
}

func (g *Guarded) cookieOK(r *http.Request, want *tokenSum) bool {
	c, err := r.Cookie(TokenCookie)
	return err == nil && match(c.Value, want)
}

// match compares the hashes of tok and the token, so that neither the
// content nor the length of the token leaks through timing.
func match(tok string, want *tokenSum) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

func (g *Guarded) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" { // HTTP/1.0 without Host: not from a browser
		return true
	}
	if net.ParseIP(host) != nil {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost") || slices.Contains(g.hosts, host)
}

// quote quotes s for an error message, cut to 100 bytes.
func quote(s string) string { return strconv.Quote(s[:min(len(s), 100)]) }
