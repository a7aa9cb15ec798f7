// Package httpx holds the HTTP intermediary rules that the proxy applies to
// every message: the hop-by-hop header table (RFC 9110 §7.6.1), the table
// of framing and routing fields whose look-alikes are refused, Connection
// token handling, and the parsing of CONNECT targets and absolute-form URLs.
// It also holds the proxy's one host-name rule (CheckHostname), and the
// token rule, which is net/http's own from golang.org/x/net/http/httpguts.
package httpx

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// IsHopByHop reports whether the canonical header name k is a hop-by-hop
// field that an intermediary must not forward. Proxy-Connection is the
// pre-standard spelling some clients still send; Proxy-Authorization and
// Proxy-Authenticate belong to the client–proxy hop.
func IsHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// framingFields are the fields whose look-alikes (a name that equals one of
// them when read case-insensitively with '_' as '-', as CGI, WSGI and
// several application servers read HTTP_* variables) the proxy refuses in
// requests and drops from responses: a look-alike passes every rule the
// proxy applies to the real field, and an origin that reads it as the real
// one acts on it behind the proxy's back. They are
//   - the framing fields, Content-Length and Transfer-Encoding: a
//     look-alike makes such an origin frame the body differently from the
//     proxy, which smuggles a request into another client's on a pooled
//     connection (RFC 9112 §11.2);
//   - Host, by which the origin routes where the proxy judged the URL;
//   - every hop-by-hop field (IsHopByHop): the proxy removes or acts on
//     them itself (Connection and what it names, Upgrade's tunnel limit,
//     Proxy-Authorization's credentials), so a look-alike that got through
//     would do at the origin what the proxy decided should not happen;
//   - Expect, which the proxy honours end to end itself.
//
// Only names with a '-' have look-alikes by that rule; the others are
// listed so that the table states the whole intent, and cost nothing.
var framingFields = [...]string{
	"Content-Length", "Transfer-Encoding", "Host", "Connection",
	"Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Upgrade", "Expect",
}

// FramingLookAlike reports whether the field name k is a look-alike of a
// framing or routing field (see framingFields), and of which: k holds a '_'
// and equals that field's name case-insensitively once '_' is read as '-'.
// The real fields are not look-alikes. It does not allocate, and a name
// without '_' costs one byte scan.
func FramingLookAlike(k string) (field string, ok bool) {
	if strings.IndexByte(k, '_') < 0 {
		return "", false
	}
	for _, f := range framingFields {
		if len(f) == len(k) && equalFoldDash(k, f) {
			return f, true
		}
	}
	return "", false
}

// equalFoldDash reports whether k equals name (same length, ASCII) ignoring
// case, with '_' in k standing for '-' in name.
func equalFoldDash(k, name string) bool {
	for i := 0; i < len(k); i++ {
		c, n := k[i], name[i]
		if c == '_' {
			c = '-'
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= n && n <= 'Z' {
			n += 'a' - 'A'
		}
		if c != n {
			return false
		}
	}
	return true
}

// Tokens calls fn for every comma-separated token in the values of a
// list-valued header such as Connection, trimmed of optional whitespace.
// It stops early when fn returns false. It does not allocate.
func Tokens(values []string, fn func(tok string) bool) {
	for _, v := range values {
		for v != "" {
			var tok string
			if i := strings.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, ""
			}
			tok = strings.Trim(tok, " \t")
			if tok == "" {
				continue
			}
			if !fn(tok) {
				return
			}
		}
	}
}

// HasToken reports whether the list-valued header values contain token,
// compared case-insensitively.
func HasToken(values []string, token string) bool {
	found := false
	Tokens(values, func(t string) bool {
		found = strings.EqualFold(t, token)
		return !found
	})
	return found
}

// Errors returned by ParseTarget and CheckURL. They are meant to be shown to
// the client after the target, e.g. "bad CONNECT target \"x\": missing port".
var (
	ErrMissingPort = errors.New("missing port")
	ErrBadPort     = errors.New("port must be a number from 1 to 65535")
	ErrBadHost     = errors.New("invalid host")
	ErrScheme      = errors.New("only http and https URLs can be proxied")
	ErrUserinfo    = errors.New("URL must not carry user credentials")
)

// ParseTarget splits a CONNECT request target (authority-form, RFC 9112
// §3.2.3) into host and port. IPv6 literals must be bracketed
// ("[::1]:443"); the returned host has no brackets. The host must be a valid
// IP literal or a DNS name made of letters, digits, '-', '_' and '.'.
func ParseTarget(authority string) (host string, port uint16, err error) {
	return parseAuthority(authority, 0)
}

// parseAuthority parses host[:port]; when def is 0 the port is required,
// otherwise an absent or empty port means def (RFC 3986 §6.2.3).
func parseAuthority(authority string, def uint16) (host string, port uint16, err error) {
	if authority == "" {
		return "", 0, ErrBadHost
	}
	var portStr string
	hasPort := false
	if authority[0] == '[' {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "", 0, ErrBadHost
		}
		var rest string
		host, rest = authority[1:end], authority[end+1:]
		if a, perr := netip.ParseAddr(host); perr != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, ErrBadHost
		}
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, ErrBadHost
			}
			portStr, hasPort = rest[1:], true
		}
	} else {
		host = authority
		if i := strings.LastIndexByte(authority, ':'); i >= 0 {
			host, portStr, hasPort = authority[:i], authority[i+1:], true
		}
		if strings.IndexByte(host, ':') >= 0 {
			// An unbracketed IPv6 literal is ambiguous.
			return "", 0, ErrBadHost
		}
		if !ValidHostname(host) {
			return "", 0, ErrBadHost
		}
	}
	if !hasPort || portStr == "" {
		if def == 0 {
			return "", 0, ErrMissingPort
		}
		return host, def, nil
	}
	port, err = parsePort(portStr)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, ErrMissingPort
	}
	if len(s) > 5 {
		return 0, ErrBadPort
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, ErrBadPort
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return 0, ErrBadPort
	}
	return uint16(n), nil
}

// CheckURL validates an absolute-form request target for forwarding and
// returns its host and port (the scheme's default when absent). The scheme
// must be http or https.
func CheckURL(u *url.URL) (host string, port uint16, err error) {
	var def uint16
	switch u.Scheme {
	case "http":
		def = 80
	case "https":
		def = 443
	default:
		return "", 0, ErrScheme
	}
	if u.User != nil {
		return "", 0, ErrUserinfo
	}
	return parseAuthority(u.Host, def)
}

// ValidToken reports whether s is a non-empty RFC 9110 token (tchar*,
// §5.6.2): net/http's rule for methods and field names, from
// golang.org/x/net/http/httpguts.
func ValidToken(s string) bool { return httpguts.ValidHeaderFieldName(s) }

// TokenByte reports whether c may appear in a token (tchar, RFC 9110
// §5.6.2): httpguts.IsTokenRune, a look-up in net/http's table. The fast
// request parser calls it for every byte of every field name; the table is
// faster than the switch it replaced (BenchmarkTokenByte, a 42-byte name:
// 80 ns against 124, the best of 6 runs on a loaded 2-core machine).
func TokenByte(c byte) bool { return httpguts.IsTokenRune(rune(c)) }
