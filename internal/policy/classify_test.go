package policy

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		ip   string
		want Class
	}{
		// IPv4: inside and just outside each range.
		{"0.0.0.0", Unspecified},
		{"0.255.255.255", Unspecified},
		{"1.0.0.0", Public},
		{"9.255.255.255", Public},
		{"10.0.0.0", Private},
		{"10.255.255.255", Private},
		{"11.0.0.0", Public},
		{"100.63.255.255", Public},
		{"100.64.0.0", CGNAT},
		{"100.127.255.255", CGNAT},
		{"100.128.0.0", Public},
		{"126.255.255.255", Public},
		{"127.0.0.1", Loopback},
		{"127.255.255.255", Loopback},
		{"128.0.0.0", Public},
		{"169.253.255.255", Public},
		{"169.254.0.0", LinkLocal},
		{"169.254.169.254", LinkLocal},
		{"169.255.0.0", Public},
		{"172.15.255.255", Public},
		{"172.16.0.0", Private},
		{"172.31.255.255", Private},
		{"172.32.0.0", Public},
		{"191.255.255.255", Public},
		{"192.0.0.0", ProtocolAssignment},
		{"192.0.0.255", ProtocolAssignment},
		{"192.0.1.0", Public},
		{"192.0.2.0", Documentation},
		{"192.0.2.255", Documentation},
		{"192.0.3.0", Public},
		{"192.88.98.255", Public},
		{"192.88.99.1", Reserved},
		{"192.88.100.0", Public},
		{"192.167.255.255", Public},
		{"192.168.0.0", Private},
		{"192.168.255.255", Private},
		{"192.169.0.0", Public},
		{"198.17.255.255", Public},
		{"198.18.0.0", Benchmarking},
		{"198.19.255.255", Benchmarking},
		{"198.20.0.0", Public},
		{"198.51.99.255", Public},
		{"198.51.100.0", Documentation},
		{"198.51.100.255", Documentation},
		{"198.51.101.0", Public},
		{"203.0.112.255", Public},
		{"203.0.113.0", Documentation},
		{"203.0.113.255", Documentation},
		{"203.0.114.0", Public},
		{"223.255.255.255", Public},
		{"224.0.0.0", Multicast},
		{"239.255.255.255", Multicast},
		{"240.0.0.0", Reserved},
		{"255.255.255.254", Reserved},
		{"255.255.255.255", Broadcast},
		{"8.8.8.8", Public},

		// IPv6 ranges.
		{"::", Unspecified},
		{"::1", Loopback},
		{"::2", Unspecified}, // IPv4-compatible 0.0.0.2
		{"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved},
		{"fe80::", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal},
		{"fec0::", SiteLocal},
		{"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SiteLocal},
		{"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved},
		{"fc00::", UniqueLocal},
		{"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UniqueLocal},
		{"fe00::", Reserved},
		{"ff00::", Multicast},
		{"ff02::1", Multicast},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast},
		{"100::", DiscardOnly},
		{"100::ffff:ffff:ffff:ffff", DiscardOnly},
		{"100:0:0:1::", Reserved},
		{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Public},
		{"2001:db8::", Documentation},
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Documentation},
		{"2001:db9::", Public},
		{"3fff::", Documentation},
		{"3fff:fff::", Documentation},
		{"3fff:1000::", Public},
		{"5f00::1", Reserved},
		{"2001:2::", Benchmarking},
		{"2001:2:0:ffff::", Benchmarking},
		{"2001:2:1::", ProtocolAssignment},
		{"2001:10::", ORCHID},
		{"2001:1f:ffff::", ORCHID},
		{"2001:20::1", ORCHID},
		{"2001:2f:ffff::", ORCHID},
		{"2001:30::1", Public},
		{"2001:1::1", Public},
		{"2001:1::4", ProtocolAssignment},
		{"2001:3::1", Public},
		{"2001:4:112::1", Public},
		{"2001:4:113::1", ProtocolAssignment},
		{"2001:1ff:ffff::", ProtocolAssignment},
		{"2001:200::", Public},
		{"2606:4700:4700::1111", Public},
		{"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved},
		{"4000::", Reserved},

		// IPv6 forms that embed an IPv4 address.
		{"::ffff:127.0.0.1", Loopback},
		{"::ffff:7f00:1", Loopback},
		{"::ffff:8.8.8.8", Public},
		{"::ffff:10.1.2.3", Private},
		{"::ffff:0:7f00:1", Loopback}, // IPv4-translated
		{"::ffff:0:808:808", Public},
		{"::7f00:1", Loopback}, // IPv4-compatible
		{"::a9fe:a9fe", LinkLocal},
		{"::808:808", Public},
		{"64:ff9b::808:808", Public},
		{"64:ff9b::a9fe:a9fe", LinkLocal},
		{"64:ff9b::7f00:1", Loopback},
		{"64:ff9b:0:0:1::7f00:1", Reserved}, // not the /96 layout
		{"64:ff9b:1::808:808", Public},
		{"64:ff9b:1::a00:1", Private},
		{"64:ff9b:1:0:0:1:0:0", Reserved}, // local-use, non-/96 layout
		{"64:ff9b:1:a00:1::", Reserved},
		{"64:ff9b:2::808:808", Reserved},
		{"2002:7f00:1::", Loopback},
		{"2002:a00:1::1", Private},
		{"2002:808:808::1", Public},
		{"2002:c000:201::", Documentation},
		// Teredo: server 65.54.227.120, client 192.0.2.45 (RFC 4380 example).
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", Documentation},
		// Server 65.54.227.120, client 8.8.8.8 (~ = f7f7:f7f7).
		{"2001:0:4136:e378::f7f7:f7f7", Public},
		// Client 127.0.0.1 (~ = 80ff:fffe).
		{"2001:0:4136:e378::80ff:fffe", Loopback},
		// Server 10.0.0.1, client 8.8.8.8.
		{"2001:0:a00:1::f7f7:f7f7", Private},

		{"", Invalid},
	}
	for _, tt := range tests {
		var ip netip.Addr
		if tt.ip != "" {
			ip = netip.MustParseAddr(tt.ip)
		}
		if got := Classify(ip); got != tt.want {
			t.Errorf("Classify(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
}

func TestClassString(t *testing.T) {
	for c := Invalid; c <= ORCHID; c++ {
		if s := c.String(); s == "" || s == "unknown class" {
			t.Errorf("Class(%d).String() = %q", c, s)
		}
		if c.Denied() != (c != Public) {
			t.Errorf("Class(%d).Denied() = %v", c, c.Denied())
		}
	}
	if s := Class(200).String(); s != "unknown class" {
		t.Errorf("Class(200).String() = %q", s)
	}
	var zero Class
	if !zero.Denied() {
		t.Error("the zero Class must deny")
	}
}

var allocAddrs = []netip.Addr{
	netip.MustParseAddr("8.8.8.8"),
	netip.MustParseAddr("10.1.2.3"),
	netip.MustParseAddr("2606:4700:4700::1111"),
	netip.MustParseAddr("fe80::1%eth0"),
	netip.MustParseAddr("::ffff:127.0.0.1"),
	netip.MustParseAddr("2001:0:4136:e378::f7f7:f7f7"),
}

func TestClassifyNoAlloc(t *testing.T) {
	set, err := NewPrefixSet(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range allocAddrs {
		if n := testing.AllocsPerRun(100, func() { Classify(ip) }); n != 0 {
			t.Errorf("Classify(%v) allocates %v times", ip, n)
		}
		if n := testing.AllocsPerRun(100, func() { set.Classify(ip) }); n != 0 {
			t.Errorf("PrefixSet.Classify(%v) allocates %v times", ip, n)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Classify(allocAddrs[i%len(allocAddrs)])
	}
}

func TestPrefixSet(t *testing.T) {
	set, err := NewPrefixSet(
		netip.MustParsePrefix("10.1.2.3/8"), // masked to 10.0.0.0/8
		netip.MustParsePrefix("::ffff:192.168.1.0/120"),
		netip.MustParsePrefix("fd00::/8"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 3 {
		t.Errorf("Len = %d, want 3", set.Len())
	}
	tests := []struct {
		ip     string
		prefix string // "" when no match
		class  Class  // set.Classify
	}{
		{"10.1.2.3", "10.0.0.0/8", Public},
		{"11.0.0.1", "", Public},
		{"172.16.0.1", "", Private},
		{"::ffff:10.1.2.3", "10.0.0.0/8", Public},
		{"::ffff:0:a01:203", "10.0.0.0/8", Public},
		{"64:ff9b::a01:203", "10.0.0.0/8", Public},
		{"2002:a01:203::1", "10.0.0.0/8", Public},
		{"2001:0:4136:e378::f5fe:fdfc", "10.0.0.0/8", Public}, // Teredo client 10.1.2.3
		{"2001:0:a00:1::f7f7:f7f7", "", Private},              // only the server is 10/8
		{"192.168.1.7", "192.168.1.0/24", Public},
		{"192.168.2.7", "", Private},
		{"fd12::1", "fd00::/8", Public},
		{"fd12::1%eth0", "fd00::/8", Public},
		{"fc00::1", "", UniqueLocal},
		{"127.0.0.1", "", Loopback},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		p, ok := set.Lookup(ip)
		if ok != (tt.prefix != "") || (ok && p.String() != tt.prefix) {
			t.Errorf("Lookup(%s) = %v, %v; want %q", tt.ip, p, ok, tt.prefix)
		}
		if got := set.Classify(ip); got != tt.class {
			t.Errorf("set.Classify(%s) = %v, want %v", tt.ip, got, tt.class)
		}
	}

	var none *PrefixSet
	if none.Len() != 0 {
		t.Error("nil set has a length")
	}
	if _, ok := none.Lookup(netip.MustParseAddr("10.0.0.1")); ok {
		t.Error("nil set contains 10.0.0.1")
	}
	if c := none.Classify(netip.MustParseAddr("10.0.0.1")); c != Private {
		t.Errorf("nil set Classify = %v", c)
	}
	if c := none.Classify(netip.Addr{}); c != Invalid {
		t.Errorf("Classify(zero Addr) = %v", c)
	}
	if _, err := NewPrefixSet(netip.Prefix{}); err == nil {
		t.Error("NewPrefixSet accepted an invalid prefix")
	}
}
