package h1

import (
	"bufio"
	"net/textproto"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// TestLoopHostFields checks hostFields on hand-made blocks.
func TestLoopHostFields(t *testing.T) {
	for _, tc := range []struct {
		in     string
		n      int
		value  string
		folded bool
	}{
		{"GET http://a/ HTTP/1.1\r\n\r\n", 0, "", false},
		{"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, "a", false},
		{"GET http://a/ HTTP/1.1\r\nhost:a\r\n\r\n", 1, "a", false},
		{"GET http://a/ HTTP/1.1\r\nHOST: \t a:80 \t\r\n\r\n", 1, "a:80", false},
		{"GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n", 1, "", false},
		{"GET http://a/ HTTP/1.1\r\nHost: a\r\nX: y\r\nHost: b\r\n\r\n", 2, "b", false},
		{"GET http://a/ HTTP/1.1\nHost: a\nHost: b\n\n", 2, "b", false},
		{"GET http://host:1/ HTTP/1.1\r\nX-Host: a\r\nHostname: b\r\n\r\n", 0, "", false},
		{"Host: a\r\nX: y\r\n\r\n", 0, "", false}, // the request line is not a field
		{"GET http://a/ HTTP/1.1\r\nX: y\r\n Host: b\r\n\r\n", 0, "", true},
		{"GET http://a/ HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 1, "a", true},
	} {
		t.Run("", func(t *testing.T) {
			n, v, folded := hostFields([]byte(tc.in))
			if n != tc.n || v != tc.value || folded != tc.folded {
				t.Errorf("hostFields(%q) = %d, %q, %v; want %d, %q, %v", tc.in, n, v, folded, tc.n, tc.value, tc.folded)
			}
		})
	}
}

// FuzzLoopHostFields compares hostFields with textproto's reading of the
// same block, wherever textproto accepts it.
func FuzzLoopHostFields(f *testing.F) {
	for _, s := range []string{
		"Host: a\r\n", "host: a\r\nHOST: b\r\n", "X: y\r\n Host: b\r\n", "Host:\r\n", "Host: [::1]:80 \r\n", "Host: a\nX: b\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fields string) {
		head := "GET http://a/ HTTP/1.1\r\n" + fields + "\r\n"
		if headerEnd([]byte(head)) != len(head) {
			return // the block ends early: not a block with these fields
		}
		h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(fields + "\r\n"))).ReadMIMEHeader()
		if err != nil {
			return
		}
		n, v, folded := hostFields([]byte(head))
		if folded {
			return // parseRequest hands folded blocks to net/http
		}
		hosts := h["Host"]
		if n != len(hosts) || (n > 0 && v != hosts[n-1]) {
			t.Fatalf("hostFields(%q) = %d, %q; textproto reads %q", head, n, v, hosts)
		}
	})
}

// refValidHost is RFC 3986's host and port characters, as net/http checks
// the Host field: unreserved, sub-delims, ':', '[', ']' and '%'.
func refValidHost(h string) bool {
	for _, c := range []byte(h) {
		isAlnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !isAlnum && !strings.ContainsRune("-._~"+"!$&'()*+,;="+":[]%", rune(c)) {
			return false
		}
	}
	return true
}

// TestLoopValidHostHeader pins the Host check the loop makes (fastRequest,
// parseRequest): httpguts.ValidHostHeader, net/http's server's own.
func TestLoopValidHostHeader(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", true},
		{"example.com", true},
		{"example.com:8080", true},
		{"[2001:db8::1]:443", true},
		{"[fe80::1%25eth0]", true},
		{"a_b-c~d", true},
		{"!$&'()*+,;=", true},
		{"a b", false},
		{"a\tb", false},
		{"a/b", false},
		{"a?b", false},
		{"a#b", false},
		{"a@b", false},
		{"a\"b", false},
		{"a\x00b", false},
		{"a\x7f", false},
		{"é.example", false},
		{"a\r", false},
	} {
		if got := httpguts.ValidHostHeader(tc.in); got != tc.want {
			t.Errorf("ValidHostHeader(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for c := range 256 {
		s := "a" + string(rune(c)) + "b"
		if c >= 0x80 {
			s = "a" + string([]byte{byte(c)}) + "b"
		}
		if got, want := httpguts.ValidHostHeader(s), refValidHost(s); got != want {
			t.Errorf("ValidHostHeader(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzLoopValidHostHeader(f *testing.F) {
	for _, s := range []string{"", "a:1", "[::1]", "a b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if got, want := httpguts.ValidHostHeader(h), refValidHost(h); got != want {
			t.Fatalf("ValidHostHeader(%q) = %v, want %v", h, got, want)
		}
	})
}
