package policy

import (
	"net/netip"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		host string
		want string // "" when not an IP literal
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F000001", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0x7f.0.1", "127.0.0.1"},
		{"10.0x10203", "10.1.2.3"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"0xffffffff", "255.255.255.255"},
		{"037777777777", "255.255.255.255"},
		{"1.2.65535", "1.2.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"0000000000000000000001", "0.0.0.1"},
		{"[::1]", "::1"},
		{"::1", "::1"},
		{"[::ffff:127.0.0.1]", "::ffff:127.0.0.1"},
		{"[::ffff:7f00:1]", "::ffff:127.0.0.1"},
		{"[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"},
		{"2002:7f00:1::", "2002:7f00:1::"},
		{"[fe80::1%25eth0]", "fe80::1%eth0"},
		{"[fe80::1%eth0]", "fe80::1%eth0"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"[2001:DB8::1]", "2001:db8::1"},

		{"", ""},
		{".", ""},
		{"127.0.0.1..", ""},
		{"1..1", ""},
		{".1", ""},
		{"256.0.0.1", ""},
		{"1.2.3.256", ""},
		{"1.2.256.0", ""},
		{"1.2.65536", ""},
		{"1.16777216", ""},
		{"4294967296", ""},
		{"0x100000000", ""},
		{"040000000000", ""},
		{"99999999999999999999999", ""},
		{"08.0.0.1", ""},
		{"0x7g", ""},
		{"1.2.3.4.5", ""},
		{"1e3", ""},
		{"-1", ""},
		{"+1", ""},
		{"1.2.3.4 ", ""},
		{"example.com", ""},
		{"1.2.3.example", ""},
		{"0x7f.example", ""},
		{"[127.0.0.1]", ""},
		{"[::1", ""},
		{"[", ""},
		{"[]", ""},
		{"::1]", ""},
		{"[::1]:443", ""},
		{"1.2.3.4%eth0", ""},
		{"[fe80::1%25]", ""},
		{"::ffff:01.2.3.4", ""},
		{":::", ""},
	}
	for _, tt := range tests {
		ip, ok := ParseHost(tt.host)
		if ok != (tt.want != "") || (ok && ip != netip.MustParseAddr(tt.want)) {
			t.Errorf("ParseHost(%q) = %v, %v; want %q", tt.host, ip, ok, tt.want)
		}
	}
}

// FuzzParseHost: no panics; an IP literal classifies without panicking and its
// canonical text form parses back to the same address.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "0x7f000001", "2130706433", "017700000001",
		"127.1", "0x7f.1", "127.0.0.1.", "[::ffff:127.0.0.1]", "[fe80::1%25eth0]",
		"fe80::1%eth0", "2002:7f00:1::", "example.com", "1.2.3.256", "0x", "[]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		ip, ok := ParseHost(host)
		if !ok {
			if ip.IsValid() {
				t.Fatalf("ParseHost(%q) = %v with isIP false", host, ip)
			}
			return
		}
		if c := Classify(ip); c == Invalid {
			t.Fatalf("ParseHost(%q) = %v classifies as invalid", host, ip)
		}
		back, ok := ParseHost(ip.String())
		if !ok || back != ip {
			t.Fatalf("ParseHost(%q) = %v, but ParseHost(%q) = %v, %v", host, ip, ip.String(), back, ok)
		}
	})
}
