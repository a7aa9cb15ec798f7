package policy

import (
	"net/netip"
	"strings"
)

// ParseHost recognises an IP literal in a URL host or CONNECT target the way
// browsers (WHATWG URL host parsing) and inet_aton-based resolvers do, so
// that a numeric host is judged as the address a client or resolver would
// use instead of being sent to DNS. It accepts:
//
//   - IPv6 with or without brackets, with a zone id ("fe80::1%eth0"); inside
//     brackets a zone may be percent-encoded per RFC 6874 ("[fe80::1%25eth0]");
//   - IPv4 in one to four dot-separated parts, each decimal, octal (leading
//     0) or hexadecimal (leading 0x), where the last part fills the
//     remaining bytes: "127.0.0.1", "127.1", "0x7f.1", "0177.0.0.1",
//     "2130706433", "0x7f000001", "017700000001"; one trailing dot is
//     allowed ("127.0.0.1.").
//
// A part out of range ("256.0.0.1", "1.2.3.256", "4294967296"), a bad digit
// ("08.0.0.1") or anything else yields isIP false: such a host is a name.
// Bracketed IPv4 ("[127.0.0.1]") is not an IP literal.
func ParseHost(host string) (ip netip.Addr, isIP bool) {
	if strings.HasPrefix(host, "[") {
		if len(host) < 2 || host[len(host)-1] != ']' {
			return netip.Addr{}, false
		}
		host = strings.Replace(host[1:len(host)-1], "%25", "%", 1)
		return parseIPv6(host)
	}
	if strings.IndexByte(host, ':') >= 0 {
		return parseIPv6(host)
	}
	return parseIPv4(host)
}

func parseIPv6(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is6() {
		return netip.Addr{}, false
	}
	return ip, true
}

// parseIPv4 follows the WHATWG URL Standard's IPv4 parser (and inet_aton).
func parseIPv4(s string) (netip.Addr, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return netip.Addr{}, false
	}
	var parts [4]uint32
	n := 0
	for {
		if n == len(parts) {
			return netip.Addr{}, false
		}
		part, rest, more := strings.Cut(s, ".")
		v, ok := parseIPv4Number(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if !more {
			break
		}
		s = rest
	}
	var v uint32
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	last := parts[n-1]
	if n > 1 && last>>(8*(5-n)) != 0 {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses one part: "0x" or "0X" starts hexadecimal (and
// "0x" alone is 0, as in WHATWG and inet_aton), another leading 0 octal.
func parseIPv4Number(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		var d uint64
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return uint32(v), true
}
