package policy

import (
	"fmt"
	"net/netip"
	"strconv"
)

// PortRange is an inclusive range of TCP ports, Lo <= Hi, both at least 1.
// A single port is {443, 443}.
type PortRange struct {
	Lo, Hi uint16
}

// Config lists the access rules. The zero Config allows every host, plain
// HTTP to any port, and CONNECT to port 443 only.
type Config struct {
	AllowHosts []string       // host patterns (see Pattern); if any allow rule is set, targets must match one
	DenyHosts  []string       // host patterns that are always refused
	AllowCIDRs []netip.Prefix // destination ranges; if any allow rule is set, targets must match one
	DenyCIDRs  []netip.Prefix // destination ranges that are always refused

	// Ports limits plain (absolute-form) requests; empty means any port.
	Ports []PortRange
	// ConnectPorts limits CONNECT tunnels; empty means 443 only. A tunnel
	// carries any protocol, so its ports are opened one by one.
	ConnectPorts []PortRange
	// ConnectPortHint, when set, is appended to the refusal of a CONNECT
	// port, to say how to open one (" (allow with …)").
	ConnectPortHint string
}

// Rules is a compiled, immutable Config, safe for concurrent use. Its host
// and CIDR lists are two Matchers, the matcher the interception bypass uses
// too.
type Rules struct {
	allow, deny         Matcher
	ports, connectPorts []PortRange // ports nil: any
	connectPortHint     string
}

// NewRules validates and compiles c.
func NewRules(c Config) (*Rules, error) {
	r := &Rules{connectPorts: []PortRange{{443, 443}}, connectPortHint: c.ConnectPortHint}
	var err error
	if r.allow, err = newMatcher(c.AllowHosts, c.AllowCIDRs, "allowed CIDRs"); err != nil {
		return nil, err
	}
	if r.deny, err = newMatcher(c.DenyHosts, c.DenyCIDRs, "denied CIDRs"); err != nil {
		return nil, err
	}
	for _, ranges := range [][]PortRange{c.Ports, c.ConnectPorts} {
		for _, p := range ranges {
			if p.Lo == 0 || p.Lo > p.Hi {
				return nil, fmt.Errorf("policy: invalid port range %d-%d", p.Lo, p.Hi)
			}
		}
	}
	if len(c.Ports) > 0 {
		r.ports = append([]PortRange(nil), c.Ports...)
	}
	if len(c.ConnectPorts) > 0 {
		r.connectPorts = append([]PortRange(nil), c.ConnectPorts...)
	}
	return r, nil
}

// Check decides whether a request may reach host:port; connect is true for
// a CONNECT tunnel. ip is the destination address, or the zero netip.Addr
// before the host is resolved. A host that is an IP literal should be passed
// as ip too (ParseHost), since host patterns never match addresses.
//
// The rules are applied in this order; the first that decides wins:
//
//  1. host matches a deny-host pattern: deny.
//  2. ip is known and within a deny-CIDR (directly or by the IPv4 address it
//     embeds, see PrefixSet.Lookup): deny.
//  3. port is not allowed for this kind of request: deny.
//  4. if any allow-host or allow-CIDR rule exists, host must match an
//     allow-host pattern or ip an allow-CIDR, else deny. While ip is unknown,
//     a host that matches no allow-host pattern passes this step if
//     allow-CIDRs exist, because they cannot be judged yet.
//  5. allow.
//
// So a call without ip refuses early what the name and port already decide,
// and the proxy must call Check again with every resolved address it dials.
// Deny rules beat allow rules. Check allocates only to build a denial reason,
// a short text such as "host denied by rule *.example.com" or
// "port 25 not allowed for CONNECT".
func (r *Rules) Check(host string, ip netip.Addr, port uint16, connect bool) (ok bool, reason string) {
	if p, ok := r.deny.hosts.match(host); ok {
		return false, "host denied by rule " + p
	}
	if ip.IsValid() {
		if p, ok := r.deny.cidrs.Lookup(ip); ok {
			return false, "address " + ip.String() + " denied by rule " + p.String()
		}
	}
	ports, kind := r.ports, ""
	if connect {
		ports, kind = r.connectPorts, " for CONNECT"+r.connectPortHint
	}
	if ports != nil && !inRanges(ports, port) {
		return false, "port " + strconv.Itoa(int(port)) + " not allowed" + kind
	}
	if r.allow.Empty() {
		return true, ""
	}
	if !ip.IsValid() {
		// The CIDRs cannot be judged yet: only the hosts can refuse.
		if _, ok := r.allow.hosts.match(host); ok || r.allow.cidrs.Len() > 0 {
			return true, ""
		}
	} else if r.allow.Match(host, ip) {
		return true, ""
	}
	return false, "not in allow list"
}

func inRanges(ranges []PortRange, port uint16) bool {
	for _, p := range ranges {
		if p.Lo <= port && port <= p.Hi {
			return true
		}
	}
	return false
}

// Matcher matches a destination against host patterns (see Pattern) and
// CIDR ranges, as Rules match their deny or allow lists. It is immutable and
// safe for concurrent use.
type Matcher struct {
	hosts hostSet
	cidrs *PrefixSet
}

// NewMatcher compiles host patterns and CIDR ranges into a Matcher.
func NewMatcher(hosts []string, cidrs []netip.Prefix) (*Matcher, error) {
	m, err := newMatcher(hosts, cidrs, "CIDRs")
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// newMatcher is NewMatcher; what names the CIDRs in an error.
func newMatcher(hosts []string, cidrs []netip.Prefix, what string) (Matcher, error) {
	hs, err := newHostSet(hosts)
	if err != nil {
		return Matcher{}, err
	}
	ps, err := NewPrefixSet(cidrs...)
	if err != nil {
		return Matcher{}, fmt.Errorf("policy: %s: %w", what, err)
	}
	return Matcher{hosts: hs, cidrs: ps}, nil
}

// Match reports whether host matches a host pattern or ip (when valid) lies
// in a CIDR range, directly or by the IPv4 address it embeds. As for
// Rules.Check, a host that is an IP literal should be passed as ip too.
func (m *Matcher) Match(host string, ip netip.Addr) bool {
	if _, ok := m.hosts.match(host); ok {
		return true
	}
	if ip.IsValid() {
		_, ok := m.cidrs.Lookup(ip)
		return ok
	}
	return false
}

// Empty reports whether m has no pattern and no range: it matches nothing.
func (m *Matcher) Empty() bool { return m.hosts.len() == 0 && m.cidrs.Len() == 0 }
