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

// Rules is a compiled, immutable Config, safe for concurrent use.
type Rules struct {
	allowHosts, denyHosts hostSet
	allowCIDRs, denyCIDRs *PrefixSet
	ports, connectPorts   []PortRange // ports nil: any
	connectPortHint       string
}

// NewRules validates and compiles c.
func NewRules(c Config) (*Rules, error) {
	r := &Rules{connectPorts: []PortRange{{443, 443}}, connectPortHint: c.ConnectPortHint}
	var err error
	if r.allowHosts, err = newHostSet(c.AllowHosts); err != nil {
		return nil, err
	}
	if r.denyHosts, err = newHostSet(c.DenyHosts); err != nil {
		return nil, err
	}
	if r.allowCIDRs, err = NewPrefixSet(c.AllowCIDRs...); err != nil {
		return nil, fmt.Errorf("policy: allowed CIDRs: %w", err)
	}
	if r.denyCIDRs, err = NewPrefixSet(c.DenyCIDRs...); err != nil {
		return nil, fmt.Errorf("policy: denied CIDRs: %w", err)
	}
	for _, p := range append(c.Ports, c.ConnectPorts...) {
		if p.Lo == 0 || p.Lo > p.Hi {
			return nil, fmt.Errorf("policy: invalid port range %d-%d", p.Lo, p.Hi)
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
	if p, ok := r.denyHosts.match(host); ok {
		return false, "host denied by rule " + p
	}
	if ip.IsValid() {
		if p, ok := r.denyCIDRs.Lookup(ip); ok {
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
	if r.allowHosts.len() == 0 && r.allowCIDRs.Len() == 0 {
		return true, ""
	}
	if _, ok := r.allowHosts.match(host); ok {
		return true, ""
	}
	if !ip.IsValid() {
		if r.allowCIDRs.Len() > 0 {
			return true, ""
		}
	} else if _, ok := r.allowCIDRs.Lookup(ip); ok {
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
	hs, err := newHostSet(hosts)
	if err != nil {
		return nil, err
	}
	ps, err := NewPrefixSet(cidrs...)
	if err != nil {
		return nil, fmt.Errorf("policy: CIDRs: %w", err)
	}
	return &Matcher{hosts: hs, cidrs: ps}, nil
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
