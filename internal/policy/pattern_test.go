package policy

import (
	"strings"
	"testing"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"example.com", "example.com"},
		{"Example.COM.", "example.com"},
		{"*.example.com", "*.example.com"},
		{"*.Example.com.", "*.example.com"},
		{"*.com", "*.com"},
		{"localhost", "localhost"},
		{"_acme-challenge.example.com", "_acme-challenge.example.com"},
		{"xn--nxasmq6b.example", "xn--nxasmq6b.example"},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com"},
		{strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "a"}, // 253 bytes
		{"*.127.0.0.1", "*.127.0.0.1"},

		{"", ""},
		{".", ""},
		{"*", ""},
		{"*.", ""},
		{"**.example.com", ""},
		{"*example.com", ""},
		{"a.*.example.com", ""},
		{"*.*.example.com", ""},
		{".example.com", ""},
		{"example..com", ""},
		{"example.com..", ""},
		{"exa mple.com", ""},
		{"exa/mple.com", ""},
		{"example.com:443", ""},
		{"bücher.example", ""},
		{strings.Repeat("a", 64) + ".com", ""},
		{strings.Repeat("a.", 127), "a" + strings.Repeat(".a", 126)}, // 253 bytes + trailing dot
		{strings.Repeat("a.", 127) + "a", ""},                        // 255 bytes
		{"127.0.0.1", ""},
		{"0x7f000001", ""},
		{"0X7F000001", ""},
		{"\u212a.example", ""},        // KELVIN SIGN: strings.ToLower made it "k.example"
		{"*.\u212aelvin.example", ""}, // and this "*.kelvin.example"
		{"a.b-", "a.b-"},              // CheckHostname takes labels ending in '-'
		{"UPPER.Example", "upper.example"},
		{"2130706433", ""},
		{"::1", ""},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.in)
		if (err == nil) != (tt.want != "") || (err == nil && p.String() != tt.want) {
			t.Errorf("ParsePattern(%q) = %q, %v; want %q", tt.in, p, err, tt.want)
		}
	}
}

func TestHostSetMatch(t *testing.T) {
	s, err := newHostSet([]string{"example.com", "*.example.org", "*.b.example.net", "a.b.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, want string // want "" for no match
	}{
		{"example.com", "example.com"},
		{"EXAMPLE.com.", "example.com"},
		{"www.example.com", ""},
		{"example.com.evil", ""},
		{"notexample.com", ""},
		{"example.org", ""},
		{"www.example.org", "*.example.org"},
		{"a.b.c.Example.ORG.", "*.example.org"},
		{"wwwexample.org", ""},
		{"example.org.", ""},
		{".example.org", "*.example.org"}, // not a valid name, but ends in ".example.org"
		{"a.b.example.net", "a.b.example.net"},
		{"c.b.example.net", "*.b.example.net"},
		{"x.a.b.example.net", "*.b.example.net"},
		{"b.example.net", ""},
		{"", ""},
		{".", ""},
		{"." + strings.Repeat("a", 260) + ".example.org", ""},
	}
	for _, tt := range tests {
		got, ok := s.match(tt.host)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("match(%q) = %q, %v; want %q", tt.host, got, ok, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { s.match("Deep.Sub.Example.Org") }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
	var empty hostSet
	if _, ok := empty.match("example.com"); ok {
		t.Error("empty set matched")
	}
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzMatch: no panics; a match of "*.x" means the host ends with ".x", and
// an exact match equals the pattern, both ignoring ASCII case and a trailing
// dot (a Unicode case fold such as U+212A KELVIN SIGN to "k" must not match).
func FuzzMatch(f *testing.F) {
	f.Add("*.example.com", "a.example.com")
	f.Add("example.com", "EXAMPLE.COM.")
	f.Add("*.a", "a")
	f.Add("*.b.c", ".b.c")
	f.Add("k", "\u212a")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		s, err := newHostSet([]string{pattern})
		if err != nil {
			t.Fatalf("newHostSet(%q): %v after ParsePattern accepted it", pattern, err)
		}
		got, ok := s.match(host)
		h := strings.TrimSuffix(host, ".")
		var want bool
		if p.wildcard {
			want = len(h) > len(p.name) && asciiLower(h[len(h)-len(p.name)-1:]) == "."+p.name
		} else {
			want = asciiLower(h) == p.name
		}
		if len(h) > maxName {
			want = false
		}
		if ok != want || (ok && got != p.String()) {
			t.Fatalf("pattern %q, host %q: match = %q, %v; want %v", pattern, host, got, ok, want)
		}
	})
}
