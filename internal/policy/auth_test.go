package policy

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseBasic(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		header     string
		user, pass string
		ok         bool
	}{
		{"Basic " + b64([]byte("alice:secret")), "alice", "secret", true},
		{"basic " + b64([]byte("alice:secret")), "alice", "secret", true},
		{"BASIC\t" + b64([]byte("alice:secret")), "alice", "secret", true},
		{"  Basic   " + b64([]byte("alice:secret")) + " \t", "alice", "secret", true},
		{"Basic " + b64([]byte("alice:se:cr:et")), "alice", "se:cr:et", true},
		{"Basic " + b64([]byte(":pw")), "", "pw", true},
		{"Basic " + b64([]byte("user:")), "user", "", true},
		{"Basic " + b64([]byte("ü:pässwörd")), "ü", "pässwörd", true},
		{"Basic " + b64([]byte("a:b")), "a", "b", true}, // "YTpi", no padding needed

		{"", "", "", false},
		{"Basic", "", "", false},
		{"Basic ", "", "", false},
		{"Basic" + b64([]byte("a:b")), "", "", false},
		{"Bearer " + b64([]byte("a:b")), "", "", false},
		{"Digest " + b64([]byte("a:b")), "", "", false},
		{"Basic " + b64([]byte("nocolon")), "", "", false},
		{"Basic " + strings.TrimRight(b64([]byte("alice:pw")), "="), "", "", false}, // missing padding
		{"Basic " + b64([]byte("alice:pw")) + "=", "", "", false},
		{"Basic YWxpY2U6cHd=", "", "", false}, // non-canonical trailing bits
		{"Basic YWxp Y2U6cHc=", "", "", false},
		{"Basic YWxp\nY2U6cHc=", "", "", false},
		{"Basic YWxp\rY2U6cHc=", "", "", false},
		{"Basic " + base64.URLEncoding.EncodeToString([]byte("a?>:b")), "", "", false},
		{"Basic !!!!", "", "", false},
		{"Basic " + b64([]byte("al\x00ice:pw")), "", "", false},
		{"Basic " + b64([]byte("alice:p\nw")), "", "", false},
		{"Basic " + b64([]byte("alice:p\x7fw")), "", "", false},
		{"Basic " + b64([]byte("alice:p\tw")), "", "", false},
	}
	for _, tt := range tests {
		user, pass, ok := ParseBasic(tt.header)
		if user != tt.user || pass != tt.pass || ok != tt.ok {
			t.Errorf("ParseBasic(%q) = %q, %q, %v; want %q, %q, %v", tt.header, user, pass, ok, tt.user, tt.pass, tt.ok)
		}
	}
}

// FuzzParseBasic: no panics; accepted credentials hold no ':' in the user and
// no control characters, and their canonical encoding parses back equal.
func FuzzParseBasic(f *testing.F) {
	f.Add("Basic YWxpY2U6c2VjcmV0")
	f.Add("basic\t\tYTpi ")
	f.Add("Basic YWxpY2U6cHd=")
	f.Add("Basic")
	f.Fuzz(func(t *testing.T, header string) {
		user, pass, ok := ParseBasic(header)
		if !ok {
			if user != "" || pass != "" {
				t.Fatalf("ParseBasic(%q) returned credentials with ok false", header)
			}
			return
		}
		if strings.Contains(user, ":") {
			t.Fatalf("ParseBasic(%q): user %q holds a colon", header, user)
		}
		for _, c := range []byte(user + pass) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("ParseBasic(%q) = %q, %q: control character", header, user, pass)
			}
		}
		again := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		if u, p, ok := ParseBasic(again); !ok || u != user || p != pass {
			t.Fatalf("round trip of %q, %q: %q, %q, %v", user, pass, u, p, ok)
		}
	})
}
