package policy

import (
	"fmt"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// maxName is the longest host name, without a trailing dot, that a pattern
// can be or match (RFC 1035 §2.3.4).
const maxName = httpx.MaxHostname

// Pattern is a parsed host pattern. The grammar has two forms, both ASCII,
// case-insensitive and indifferent to one trailing dot:
//
//	example.com     exactly the host example.com
//	*.example.com   any host below example.com at any depth (a.example.com,
//	                a.b.example.com), but not example.com itself
//
// A name is what httpx.CheckHostname accepts, the proxy's one host-name rule:
// 1 to 253 bytes of dot-separated labels of 1 to 63 letters, digits, '-'
// and '_'. '*' may only be the whole first label. IP addresses are not
// patterns: rule them with CIDRs, which also catch the numeric spellings of
// an address (see ParseHost).
type Pattern struct {
	name     string // lower case, no trailing dot, no "*." prefix
	wildcard bool
}

// ParsePattern parses a host pattern (see Pattern).
func ParsePattern(s string) (Pattern, error) {
	name, wildcard := strings.CutPrefix(s, "*.")
	// Patterns' own rule: no other '*' (CheckHostname would call it an
	// invalid character; this says where one may go).
	if strings.IndexByte(name, '*') >= 0 {
		return Pattern{}, fmt.Errorf("policy: invalid host pattern %q: '*' is allowed only as the whole first label, followed by a dot", s)
	}
	// The one host-name rule, which allows one trailing dot. The name is
	// then ASCII (so ToLower folds it byte for byte: no KELVIN SIGN
	// becomes a 'k') and is kept without the dot.
	if _, err := httpx.CheckHostname(name); err != nil {
		return Pattern{}, fmt.Errorf("policy: invalid host pattern %q: %w", s, err)
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if _, isIP := ParseHost(name); isIP && !wildcard {
		return Pattern{}, fmt.Errorf("policy: invalid host pattern %q: an IP address; use a CIDR rule", s)
	}
	return Pattern{name: name, wildcard: wildcard}, nil
}

// String returns the pattern in canonical form: lower case, no trailing dot.
func (p Pattern) String() string {
	if p.wildcard {
		return "*." + p.name
	}
	return p.name
}

// hostSet matches a host against many patterns with one map look-up per
// label and no allocation.
type hostSet struct {
	exact, suffix map[string]string // name → the pattern's String
}

func newHostSet(patterns []string) (hostSet, error) {
	s := hostSet{exact: map[string]string{}, suffix: map[string]string{}}
	for _, text := range patterns {
		p, err := ParsePattern(text)
		if err != nil {
			return hostSet{}, err
		}
		if p.wildcard {
			s.suffix[p.name] = p.String()
		} else {
			s.exact[p.name] = p.String()
		}
	}
	return s, nil
}

func (s hostSet) len() int { return len(s.exact) + len(s.suffix) }

// match returns the pattern that host matches, compared ASCII
// case-insensitively and without one trailing dot. A host longer than a DNS
// name can be matches nothing. host is expected to be a validated host name;
// if it is not, a wildcard still matches whenever host ends in "."+suffix.
func (s hostSet) match(host string) (pattern string, ok bool) {
	host = strings.TrimSuffix(host, ".")
	if s.len() == 0 || host == "" || len(host) > maxName {
		return "", false
	}
	var buf [maxName]byte
	name := buf[:len(host)]
	for i := 0; i < len(host); i++ {
		c := host[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		name[i] = c
	}
	if p, ok := s.exact[string(name)]; ok {
		return p, true
	}
	for i, c := range name {
		if c == '.' {
			if p, ok := s.suffix[string(name[i+1:])]; ok {
				return p, true
			}
		}
	}
	return "", false
}
