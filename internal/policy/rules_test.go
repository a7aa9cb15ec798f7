package policy

import (
	"net/netip"
	"testing"
)

func TestCheck(t *testing.T) {
	pfx := netip.MustParsePrefix
	restricted := Config{
		AllowHosts:   []string{"*.example.com", "api.example.org"},
		DenyHosts:    []string{"bad.example.com", "*.internal.example.com"},
		AllowCIDRs:   []netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8::/32")},
		DenyCIDRs:    []netip.Prefix{pfx("203.0.113.128/25")},
		Ports:        []PortRange{{80, 80}, {8000, 8999}},
		ConnectPorts: []PortRange{{443, 443}, {8443, 8443}},
	}
	hostsOnly := Config{AllowHosts: []string{"*.example.com"}}
	cidrsOnly := Config{AllowCIDRs: []netip.Prefix{pfx("198.51.100.0/24")}}
	denyOnly := Config{DenyHosts: []string{"*.example.com"}, DenyCIDRs: []netip.Prefix{pfx("10.0.0.0/8")}}

	tests := []struct {
		name    string
		cfg     Config
		host    string
		ip      string // "" for not yet resolved
		port    uint16
		connect bool
		reason  string // "" means allowed
	}{
		{"zero config: plain any port", Config{}, "example.net", "", 25, false, ""},
		{"zero config: CONNECT 443", Config{}, "example.net", "192.0.2.1", 443, true, ""},
		{"zero config: CONNECT 22", Config{}, "example.net", "", 22, true, "port 22 not allowed for CONNECT"},
		{"hint: CONNECT 22", Config{ConnectPortHint: " (hint)"}, "example.net", "", 22, true, "port 22 not allowed for CONNECT (hint)"},
		{"hint: not for plain ports", Config{Ports: []PortRange{{80, 80}}, ConnectPortHint: " (hint)"}, "example.net", "", 22, false, "port 22 not allowed"},

		{"1 deny-host beats allow-host", restricted, "bad.example.com", "203.0.113.1", 443, true, "host denied by rule bad.example.com"},
		{"1 deny-host wildcard, case and dot", restricted, "A.Internal.Example.com.", "", 443, true, "host denied by rule *.internal.example.com"},
		{"1 deny-host before port", restricted, "bad.example.com", "", 25, true, "host denied by rule bad.example.com"},
		{"2 deny-CIDR beats allow-host", restricted, "www.example.com", "203.0.113.200", 443, true, "address 203.0.113.200 denied by rule 203.0.113.128/25"},
		{"2 deny-CIDR by embedded IPv4", restricted, "www.example.com", "::ffff:203.0.113.200", 443, true, "address ::ffff:203.0.113.200 denied by rule 203.0.113.128/25"},
		{"2 deny-CIDR before port", restricted, "www.example.com", "203.0.113.200", 25, true, "address 203.0.113.200 denied by rule 203.0.113.128/25"},
		{"3 port before allow list", restricted, "other.net", "", 25, false, "port 25 not allowed"},
		{"3 CONNECT port", restricted, "www.example.com", "", 80, true, "port 80 not allowed for CONNECT"},
		{"3 plain port range", restricted, "www.example.com", "", 8080, false, ""},
		{"3 plain port range upper edge", restricted, "www.example.com", "", 8999, false, ""},
		{"3 plain port past range", restricted, "www.example.com", "", 9000, false, "port 9000 not allowed"},
		{"3 CONNECT extra port", restricted, "www.example.com", "", 8443, true, ""},
		{"4 allow-host", restricted, "www.example.com", "192.0.2.1", 443, true, ""},
		{"4 allow-host exact", restricted, "API.example.org", "192.0.2.1", 80, false, ""},
		{"4 wildcard excludes the apex", restricted, "example.com", "192.0.2.1", 443, true, "not in allow list"},
		{"4 allow-CIDR", restricted, "other.net", "203.0.113.5", 443, true, ""},
		{"4 allow-CIDR IPv6", restricted, "other.net", "2001:db8::5", 443, true, ""},
		{"4 allow-CIDR by embedded IPv4", restricted, "other.net", "64:ff9b::cb00:7105", 443, true, ""},
		{"4 not in allow list", restricted, "other.net", "192.0.2.1", 443, true, "not in allow list"},
		{"4 unresolved passes while CIDRs pending", restricted, "other.net", "", 443, true, ""},
		{"4 hosts only: unresolved decided", hostsOnly, "other.net", "", 443, true, "not in allow list"},
		{"4 hosts only: resolved", hostsOnly, "other.net", "192.0.2.1", 443, true, "not in allow list"},
		{"4 hosts only: match", hostsOnly, "a.example.com", "", 443, true, ""},
		{"4 CIDRs only: pending", cidrsOnly, "x.net", "", 443, true, ""},
		{"4 CIDRs only: match", cidrsOnly, "x.net", "198.51.100.1", 443, true, ""},
		{"4 CIDRs only: miss", cidrsOnly, "x.net", "198.51.101.1", 443, true, "not in allow list"},
		{"5 deny only: other allowed", denyOnly, "example.net", "192.0.2.1", 443, true, ""},
		{"5 deny only: CIDR", denyOnly, "example.net", "10.1.1.1", 80, false, "address 10.1.1.1 denied by rule 10.0.0.0/8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRules(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var ip netip.Addr
			if tt.ip != "" {
				ip = netip.MustParseAddr(tt.ip)
			}
			ok, reason := r.Check(tt.host, ip, tt.port, tt.connect)
			if ok != (tt.reason == "") || reason != tt.reason {
				t.Errorf("Check(%q, %v, %d, %v) = %v, %q; want reason %q", tt.host, ip, tt.port, tt.connect, ok, reason, tt.reason)
			}
		})
	}
}

func TestNewRulesErrors(t *testing.T) {
	for name, c := range map[string]Config{
		"allow host":   {AllowHosts: []string{"a..b"}},
		"deny host":    {DenyHosts: []string{"*"}},
		"allow CIDR":   {AllowCIDRs: []netip.Prefix{{}}},
		"deny CIDR":    {DenyCIDRs: []netip.Prefix{{}}},
		"port 0":       {Ports: []PortRange{{0, 80}}},
		"reversed":     {Ports: []PortRange{{81, 80}}},
		"connect zero": {ConnectPorts: []PortRange{{}}},
	} {
		if _, err := NewRules(c); err == nil {
			t.Errorf("%s: NewRules accepted %+v", name, c)
		}
	}
}

func TestCheckAllowPathNoAlloc(t *testing.T) {
	r, err := NewRules(Config{
		AllowHosts: []string{"*.example.com"},
		DenyHosts:  []string{"bad.example.com"},
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		DenyCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.7")
	for _, host := range []string{"Www.Example.com", "other.net"} {
		n := testing.AllocsPerRun(100, func() {
			if ok, reason := r.Check(host, ip, 443, true); !ok {
				t.Fatal(reason)
			}
		})
		if n != 0 {
			t.Errorf("Check(%q) allocates %v times", host, n)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	r, err := NewRules(Config{
		AllowHosts: []string{"*.example.com", "example.org"},
		DenyHosts:  []string{"*.internal.example.com"},
		DenyCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	for b.Loop() {
		r.Check("www.api.example.com", ip, 443, true)
	}
}

func TestMatcher(t *testing.T) {
	m, err := NewMatcher([]string{"example.com", "*.corp.test"}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		ip   string
		want bool
	}{
		{"example.com", "", true},
		{"EXAMPLE.com.", "", true},
		{"a.example.com", "", false},
		{"x.y.corp.test", "", true},
		{"corp.test", "", false},
		{"10.1.2.3", "10.1.2.3", true},
		{"::ffff:10.1.2.3", "::ffff:10.1.2.3", true},
		{"11.1.2.3", "11.1.2.3", false},
		{"2001:db8::1", "2001:db8::1", true},
		{"2001:db8::2", "2001:db8::2", false},
		{"intranet", "", false},
	} {
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if got := m.Match(tc.host, ip); got != tc.want {
			t.Errorf("Match(%q, %v) = %v, want %v", tc.host, ip, got, tc.want)
		}
	}
	if m.Empty() {
		t.Error("Empty() on a full matcher")
	}
	if e, _ := NewMatcher(nil, nil); !e.Empty() || e.Match("example.com", netip.MustParseAddr("10.0.0.1")) {
		t.Error("an empty matcher matched")
	}
	if _, err := NewMatcher([]string{"a.*.b"}, nil); err == nil {
		t.Error("bad pattern accepted")
	}
}
