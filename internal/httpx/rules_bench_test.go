package httpx

import (
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// tokenByteSwitch is the tchar test that TokenByte was before it became
// httpguts.IsTokenRune, kept as the reference for TestTokenByte and
// BenchmarkTokenByte.
func tokenByteSwitch(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHostnameLoop is ValidHostname before it became CheckHostname (it
// took 254 bytes without a trailing dot), kept as the reference for
// BenchmarkValidHostname.
func validHostnameLoop(h string) bool {
	if len(h) == 0 || len(h) > 254 || h == "." {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// TestTokenByte: TokenByte (net/http's table) and ValidToken accept the
// bytes the switch they replaced accepted, all 256 of them.
func TestTokenByte(t *testing.T) {
	for c := range 256 {
		if got, want := TokenByte(byte(c)), tokenByteSwitch(byte(c)); got != want {
			t.Errorf("TokenByte(%q) = %v, want %v", byte(c), got, want)
		}
		s := "a" + string([]byte{byte(c)})
		if got, want := ValidToken(s), tokenByteSwitch(byte(c)); got != want {
			t.Errorf("ValidToken(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestHostHeaderRule: httpguts.ValidHostHeader, net/http's check of a Host
// field, accepts exactly RFC 3986's host and port characters (unreserved,
// sub-delims, ':', '[', ']' and '%'), the rule the own HTTP/1.1 loop's
// validHostHeader copies; the loop can call it instead.
func TestHostHeaderRule(t *testing.T) {
	ref := func(c byte) bool {
		isAlnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		return isAlnum || strings.IndexByte("-._~"+"!$&'()*+,;="+":[]%", c) >= 0
	}
	for c := range 256 {
		s := "a" + string([]byte{byte(c)}) + "b"
		if got, want := httpguts.ValidHostHeader(s), ref(byte(c)); got != want {
			t.Errorf("httpguts.ValidHostHeader(%q) = %v, want %v", s, got, want)
		}
	}
	if !httpguts.ValidHostHeader("") {
		t.Error("an empty Host field is refused")
	}
}

// BenchmarkTokenByte scans a field name byte by byte, as the fast request
// parser does, with TokenByte and with the switch it replaced.
func BenchmarkTokenByte(b *testing.B) {
	name := "Accept-Encoding-X-Forwarded-For-User_Agent"
	for _, bc := range []struct {
		name string
		f    func(byte) bool
	}{{"switch", tokenByteSwitch}, {"httpguts", TokenByte}} {
		b.Run(bc.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				for i := 0; i < len(name); i++ {
					if bc.f(name[i]) {
						n++
					}
				}
			}
			if n == 0 {
				b.Fatal("no token bytes")
			}
		})
	}
}

// BenchmarkValidHostname checks typical URL hosts with ValidHostname (the
// one rule, CheckHostname) and with the loop it replaced.
func BenchmarkValidHostname(b *testing.B) {
	hosts := []string{"example.com", "www.Example.co.uk", "127.0.0.1", "api-gateway.us-east-1.amazonaws.com"}
	for _, bc := range []struct {
		name string
		f    func(string) bool
	}{{"loop", validHostnameLoop}, {"CheckHostname", ValidHostname}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				for _, h := range hosts {
					if !bc.f(h) {
						b.Fatal(h)
					}
				}
			}
		})
	}
}
