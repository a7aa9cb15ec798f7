package mitm

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// ErrInvalidHost is returned, wrapped, for a host that is neither an IP
// address nor a valid DNS name.
var ErrInvalidHost = errors.New("mitm: invalid host")

// normalizeHost returns the cache key for host: lowercase without a
// trailing dot for names; for IP addresses (brackets allowed) the canonical
// form without zone, IPv4-mapped IPv6 as IPv4, and the address itself.
//
// A name must pass httpx.CheckHostname, the proxy's one host-name rule,
// which is also what a certificate's DNS name needs: at most 253 bytes,
// labels of 1 to 63 letters, digits, '-' or '_' (seen in real host names).
// Internationalised names must be in their ASCII (xn--) form, as SNI
// carries them.
func normalizeHost(host string) (string, netip.Addr, error) {
	h := strings.TrimSuffix(host, ".")
	if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if maybeIP(h) {
		if ip, err := netip.ParseAddr(h); err == nil {
			ip = ip.WithZone("").Unmap()
			return ip.String(), ip, nil
		}
	}
	// CheckHostname allows one trailing dot; that one is gone, so a dot
	// still at the end is an empty label.
	if _, err := httpx.CheckHostname(h); err != nil || strings.HasSuffix(h, ".") {
		return "", netip.Addr{}, fmt.Errorf("%w %q", ErrInvalidHost, host)
	}
	// The name is ASCII now, so this folds byte for byte (folding first
	// turned U+212A KELVIN SIGN into a valid 'k').
	return strings.ToLower(h), netip.Addr{}, nil
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
