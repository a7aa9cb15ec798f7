package policy

import (
	"fmt"
	"net/netip"
)

// PrefixSet is an immutable set of CIDR prefixes. Used as the guard's
// allowlist (WithAllowedCIDRs), its Classify lets the ranges the user opened
// through before the deny classification. A nil *PrefixSet is an empty set.
type PrefixSet struct {
	v4, v6 []netip.Prefix
}

// NewPrefixSet returns the set of the given prefixes. Host bits are masked
// off (10.1.2.3/8 means 10.0.0.0/8), and a prefix inside ::ffff:0:0/96 is
// stored as the IPv4 prefix it maps. An invalid prefix is an error.
func NewPrefixSet(prefixes ...netip.Prefix) (*PrefixSet, error) {
	s := &PrefixSet{}
	for i, p := range prefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("policy: prefix %d (%v) is invalid", i, p)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			s.v4 = append(s.v4, p)
		} else {
			s.v6 = append(s.v6, p)
		}
	}
	return s, nil
}

// Len returns the number of prefixes in s.
func (s *PrefixSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.v4) + len(s.v6)
}

// Lookup returns the first prefix of s that contains ip, ignoring its zone.
// An IPv6 address that embeds an IPv4 address (see Classify) also matches
// through the embedded destination address, so 10.0.0.0/8 contains
// ::ffff:10.1.2.3 and 2002:a01:203::1; for Teredo the destination is the
// client address, not the server. Lookup does not allocate.
func (s *PrefixSet) Lookup(ip netip.Addr) (netip.Prefix, bool) {
	if s == nil {
		return netip.Prefix{}, false
	}
	ip = ip.WithZone("")
	if ip.Is6() {
		for _, p := range s.v6 {
			if p.Contains(ip) {
				return p, true
			}
		}
		dst, _, ok := embedded(ip)
		if !ok {
			return netip.Prefix{}, false
		}
		ip = dst
	}
	for _, p := range s.v4 {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Classify is Classify with s as an allowlist: an address that s contains
// (as Lookup matches it) is Public whatever its class. It does not allocate.
func (s *PrefixSet) Classify(ip netip.Addr) Class {
	if _, ok := s.Lookup(ip); ok {
		return Public
	}
	return Classify(ip)
}
