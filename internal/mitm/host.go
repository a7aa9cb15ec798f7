package mitm

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrInvalidHost is returned, wrapped, for a host that is neither an IP
// address nor a valid DNS name.
var ErrInvalidHost = errors.New("mitm: invalid host")

// normalizeHost returns the cache key for host: lowercase without a
// trailing dot for names; for IP addresses (brackets allowed) the canonical
// form without zone, IPv4-mapped IPv6 as IPv4, and the address itself.
func normalizeHost(host string) (string, netip.Addr, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if maybeIP(h) {
		if ip, err := netip.ParseAddr(h); err == nil {
			ip = ip.WithZone("").Unmap()
			return ip.String(), ip, nil
		}
	}
	if !validName(h) {
		return "", netip.Addr{}, fmt.Errorf("%w %q", ErrInvalidHost, host)
	}
	return h, netip.Addr{}, nil
}

// maybeIP reports whether s could be an IP address, sparing netip.ParseAddr
// (whose error allocates) on the common case of a name.
func maybeIP(s string) bool {
	if strings.IndexByte(s, ':') >= 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validName reports whether s, lowercased and without a trailing dot, is a
// DNS name usable in a certificate: at most 253 bytes, labels of 1 to 63
// letters, digits, '-' or '_' (seen in real host names). Internationalised
// names must be in their ASCII (xn--) form, as SNI carries them.
func validName(s string) bool {
	if len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			if label++; label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}
