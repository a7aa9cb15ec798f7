package policy

import (
	"encoding/binary"
	"net/netip"
)

// The address classifier serves the proxy's private-address guard. The
// proxy resolves a name, classifies every candidate address with Classify
// (or PrefixSet.Classify, which honours the ranges the user opened) and
// dials only addresses judged Public, so a DNS answer that changes between
// check and dial cannot slip through.
//
// The ranges follow the IANA registries:
//   - IPv4 Special-Purpose Address Registry
//     https://www.iana.org/assignments/iana-ipv4-special-registry/
//   - IPv6 Special-Purpose Address Registry
//     https://www.iana.org/assignments/iana-ipv6-special-registry/
//   - Internet Protocol Version 6 Address Space: outside 2000::/3 and the
//     ranges listed here, all IPv6 space is reserved by the IETF
//     https://www.iana.org/assignments/ipv6-address-space/
//   - IPv4 and IPv6 multicast address spaces (RFC 5771, RFC 4291).
//
// The guard is deliberately stricter than the registries' "globally
// reachable" column in a few places: all of 192.0.0.0/24 is denied although
// two anycast addresses in it are global, and both ORCHID blocks are denied.

// Class is the category of a destination address. Only Public may be dialed.
// The zero value is Invalid, so a Class that was never set denies.
type Class uint8

// Address classes. Every class except Public is denied by the guard.
const (
	Invalid            Class = iota // not an IP address (the zero netip.Addr)
	Public                          // none of the ranges below: may be dialed
	Unspecified                     // 0.0.0.0/8 "this network", ::/128
	Loopback                        // 127.0.0.0/8, ::1/128
	Private                         // RFC 1918: 10/8, 172.16/12, 192.168/16
	LinkLocal                       // 169.254.0.0/16, fe80::/10
	CGNAT                           // RFC 6598 shared address space 100.64.0.0/10
	UniqueLocal                     // RFC 4193 fc00::/7
	SiteLocal                       // fec0::/10, deprecated by RFC 3879
	Multicast                       // 224.0.0.0/4, ff00::/8
	Broadcast                       // limited broadcast 255.255.255.255
	Reserved                        // 240.0.0.0/4 and IANA-reserved IPv6 space
	ProtocolAssignment              // IETF protocol assignments 192.0.0.0/24, 2001::/23
	Benchmarking                    // RFC 2544 198.18.0.0/15, RFC 5180 2001:2::/48
	Documentation                   // RFC 5737, RFC 3849 2001:db8::/32, RFC 9637 3fff::/20
	DiscardOnly                     // RFC 6666 100::/64
	ORCHID                          // RFC 4843 2001:10::/28, RFC 7343 2001:20::/28
)

var classNames = [...]string{
	Invalid:            "invalid address",
	Public:             "public",
	Unspecified:        "unspecified",
	Loopback:           "loopback",
	Private:            "private (RFC 1918)",
	LinkLocal:          "link-local",
	CGNAT:              "CGNAT",
	UniqueLocal:        "unique-local",
	SiteLocal:          "site-local",
	Multicast:          "multicast",
	Broadcast:          "broadcast",
	Reserved:           "reserved",
	ProtocolAssignment: "IETF protocol assignment",
	Benchmarking:       "benchmarking",
	Documentation:      "documentation",
	DiscardOnly:        "discard-only",
	ORCHID:             "ORCHID",
}

// String returns a short reason such as "loopback" or "private (RFC 1918)".
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown class"
}

// Denied reports whether the guard refuses addresses of class c.
func (c Class) Denied() bool { return c != Public }

// rangeClass is a prefix as two 64-bit halves and masks, in the 16-byte form
// (IPv4 as ::ffff:a.b.c.d), so matching is a few integer operations.
type rangeClass struct {
	hi, lo, maskHi, maskLo uint64
	c                      Class
}

func entry(prefix string, c Class) rangeClass {
	p := netip.MustParsePrefix(prefix)
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	hi, lo := halves(p.Addr())
	mhi, mlo := ^uint64(0), ^uint64(0)
	if bits < 64 {
		mhi, mlo = ^(^uint64(0) >> bits), 0
	} else if bits < 128 {
		mlo = ^(^uint64(0) >> (bits - 64))
	}
	return rangeClass{hi & mhi, lo & mlo, mhi, mlo, c}
}

func halves(ip netip.Addr) (hi, lo uint64) {
	a := ip.As16()
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// v4Ranges is the IPv4 special-purpose registry as the guard reads it.
// More specific entries come first; the first match wins.
var v4Ranges = [...]rangeClass{
	entry("0.0.0.0/8", Unspecified),           // RFC 791 "this network"
	entry("10.0.0.0/8", Private),              // RFC 1918
	entry("100.64.0.0/10", CGNAT),             // RFC 6598
	entry("127.0.0.0/8", Loopback),            // RFC 1122
	entry("169.254.0.0/16", LinkLocal),        // RFC 3927
	entry("172.16.0.0/12", Private),           // RFC 1918
	entry("192.0.0.0/24", ProtocolAssignment), // RFC 6890
	entry("192.0.2.0/24", Documentation),      // RFC 5737 TEST-NET-1
	entry("192.88.99.0/24", Reserved),         // RFC 7526 deprecated 6to4 relay anycast
	entry("192.168.0.0/16", Private),          // RFC 1918
	entry("198.18.0.0/15", Benchmarking),      // RFC 2544
	entry("198.51.100.0/24", Documentation),   // RFC 5737 TEST-NET-2
	entry("203.0.113.0/24", Documentation),    // RFC 5737 TEST-NET-3
	entry("224.0.0.0/4", Multicast),           // RFC 5771
	entry("255.255.255.255/32", Broadcast),    // RFC 919
	entry("240.0.0.0/4", Reserved),            // RFC 1112
}

// v6Ranges is the IPv6 special-purpose registry as the guard reads it, for
// addresses that embed no IPv4 address (see embedded). The first match wins,
// so the global exceptions inside 2001::/23 come before it.
var v6Ranges = [...]rangeClass{
	entry("::/128", Unspecified),           // RFC 4291
	entry("::1/128", Loopback),             // RFC 4291
	entry("100::/64", DiscardOnly),         // RFC 6666
	entry("2001:1::1/128", Public),         // RFC 7723 PCP anycast
	entry("2001:1::2/128", Public),         // RFC 8155 TURN anycast
	entry("2001:1::3/128", Public),         // RFC 9665 DNS-SD SRP anycast
	entry("2001:2::/48", Benchmarking),     // RFC 5180
	entry("2001:3::/32", Public),           // RFC 7450 AMT
	entry("2001:4:112::/48", Public),       // RFC 7535 AS112-v6
	entry("2001:10::/28", ORCHID),          // RFC 4843 (deprecated)
	entry("2001:20::/28", ORCHID),          // RFC 7343 ORCHIDv2
	entry("2001:30::/28", Public),          // RFC 9374 DRIP entity tags
	entry("2001::/23", ProtocolAssignment), // RFC 2928
	entry("2001:db8::/32", Documentation),  // RFC 3849
	entry("3fff::/20", Documentation),      // RFC 9637
	entry("5f00::/16", Reserved),           // RFC 9602 SRv6 SIDs
	entry("fc00::/7", UniqueLocal),         // RFC 4193
	entry("fe80::/10", LinkLocal),          // RFC 4291
	entry("fec0::/10", SiteLocal),          // RFC 3879 (deprecated)
	entry("ff00::/8", Multicast),           // RFC 4291
	entry("2000::/3", Public),              // global unicast
	entry("::/0", Reserved),                // the rest is IETF reserved
}

func lookup(ranges []rangeClass, ip netip.Addr) Class {
	hi, lo := halves(ip)
	for _, r := range ranges {
		if (hi^r.hi)&r.maskHi == 0 && (lo^r.lo)&r.maskLo == 0 {
			return r.c
		}
	}
	return Public
}

// Classify returns the class of ip. An IPv6 address that embeds an IPv4
// address is judged by the embedded address (see embedded): ::ffff:7f00:1
// is Loopback and 64:ff9b::808:808 is Public. A Teredo address is denied when
// either its client or its server address is. The zone of ip is ignored.
// Classify does not allocate.
func Classify(ip netip.Addr) Class {
	if ip.Is4() {
		return lookup(v4Ranges[:], ip)
	}
	if !ip.Is6() {
		return Invalid
	}
	dst, srv, ok := embedded(ip)
	if !ok {
		return lookup(v6Ranges[:], ip)
	}
	if c := lookup(v4Ranges[:], dst); c.Denied() {
		return c
	}
	if srv.IsValid() {
		return lookup(v4Ranges[:], srv)
	}
	return Public
}

// embedded returns the IPv4 address that the IPv6 address ip embeds, and for
// Teredo also the server address; the zone is ignored. The forms are:
//
//	::ffff:0:0/96      IPv4-mapped (RFC 4291)             bits 96-127
//	::ffff:0:0:0/96    IPv4-translated (RFC 2765)         bits 96-127
//	::/96              IPv4-compatible (RFC 4291, deprecated; not :: or ::1)
//	64:ff9b::/96       NAT64 well-known prefix (RFC 6052) bits 96-127
//	64:ff9b:1::/48     NAT64 local-use (RFC 8215)         bits 96-127, only when
//	                   bits 48-95 are zero: other RFC 6052 layouts place the
//	                   IPv4 address elsewhere, so such addresses are left to
//	                   the table, which judges them Reserved
//	2002::/16          6to4 (RFC 3056)                    bits 16-47
//	2001::/32          Teredo (RFC 4380)                  client: bits 96-127
//	                   XOR 0xffffffff; server: bits 32-63
func embedded(ip netip.Addr) (dst, srv netip.Addr, ok bool) {
	a := ip.As16()
	v4 := netip.AddrFrom4([4]byte(a[12:16]))
	switch {
	case zero(a[:10]) && a[10] == 0xff && a[11] == 0xff: // mapped
		return v4, netip.Addr{}, true
	case zero(a[:8]) && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0: // translated
		return v4, netip.Addr{}, true
	case zero(a[:12]): // compatible
		if zero(a[12:15]) && a[15] <= 1 {
			return netip.Addr{}, netip.Addr{}, false // :: and ::1
		}
		return v4, netip.Addr{}, true
	case a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b:
		if zero(a[4:12]) || (a[4] == 0 && a[5] == 1 && zero(a[6:12])) {
			return v4, netip.Addr{}, true
		}
	case a[0] == 0x20 && a[1] == 0x02: // 6to4
		return netip.AddrFrom4([4]byte(a[2:6])), netip.Addr{}, true
	case a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0: // Teredo
		client := [4]byte{^a[12], ^a[13], ^a[14], ^a[15]}
		return netip.AddrFrom4(client), netip.AddrFrom4([4]byte(a[4:8])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

func zero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
