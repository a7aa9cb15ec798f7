package httpx

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
		err  error
	}{
		{"example.com:443", "example.com", 443, nil},
		{"EXAMPLE.com.:8443", "EXAMPLE.com.", 8443, nil},
		{"127.0.0.1:1", "127.0.0.1", 1, nil},
		{"[::1]:443", "::1", 443, nil},
		{"[2001:db8::1]:65535", "2001:db8::1", 65535, nil},
		{"under_score.example:80", "under_score.example", 80, nil},
		{"", "", 0, ErrBadHost},
		{"example.com", "", 0, ErrMissingPort},
		{"example.com:", "", 0, ErrMissingPort},
		{"example.com:0", "", 0, ErrBadPort},
		{"example.com:65536", "", 0, ErrBadPort},
		{"example.com:+80", "", 0, ErrBadPort},
		{"example.com:https", "", 0, ErrBadPort},
		{"example.com:000443", "", 0, ErrBadPort},
		{"::1:443", "", 0, ErrBadHost},
		{"[::1]", "", 0, ErrMissingPort},
		{"[::1]443", "", 0, ErrBadHost},
		{"[::1", "", 0, ErrBadHost},
		{"[fe80::1%eth0]:443", "", 0, ErrBadHost},
		{"[127.0.0.1]:443", "", 0, ErrBadHost},
		{"exa mple.com:443", "", 0, ErrBadHost},
		{"a..b:443", "", 0, ErrBadHost},
		{".:443", "", 0, ErrBadHost},
		{":443", "", 0, ErrBadHost},
		{"user@host:443", "", 0, ErrBadHost},
		{strings.Repeat("a", 64) + ".com:443", "", 0, ErrBadHost},
		// 253 bytes is the longest name (RFC 1035), with or without the
		// trailing dot; 254 without a dot was taken before CheckHostname.
		{strings.Repeat("a.", 126) + "a:443", strings.Repeat("a.", 126) + "a", 443, nil},
		{strings.Repeat("a.", 127) + ":443", strings.Repeat("a.", 127), 443, nil},
		{strings.Repeat("a.", 126) + "aa:443", "", 0, ErrBadHost},
		{"\u212aelvin.example:443", "", 0, ErrBadHost},
	}
	for _, tt := range tests {
		host, port, err := ParseTarget(tt.in)
		if host != tt.host || port != tt.port || !errors.Is(err, tt.err) {
			t.Errorf("ParseTarget(%q) = %q, %d, %v; want %q, %d, %v", tt.in, host, port, err, tt.host, tt.port, tt.err)
		}
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
		err  error
	}{
		{"http://example.com/x", "example.com", 80, nil},
		{"https://example.com/x", "example.com", 443, nil},
		{"http://example.com:8080/x", "example.com", 8080, nil},
		{"http://example.com:/x", "example.com", 80, nil},
		{"http://[::1]/x", "::1", 80, nil},
		{"https://[::1]:8443/x", "::1", 8443, nil},
		{"ftp://example.com/x", "", 0, ErrScheme},
		{"http://user:pw@example.com/", "", 0, ErrUserinfo},
		{"http:///path", "", 0, ErrBadHost},
		{"http://example.com:99999/", "", 0, ErrBadPort},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tt.in, err)
		}
		host, port, err := CheckURL(u)
		if host != tt.host || port != tt.port || !errors.Is(err, tt.err) {
			t.Errorf("CheckURL(%q) = %q, %d, %v; want %q, %d, %v", tt.in, host, port, err, tt.host, tt.port, tt.err)
		}
	}
}

func TestTokens(t *testing.T) {
	var got []string
	Tokens([]string{" keep-alive ,Upgrade", "", ",, X-Foo\t"}, func(tok string) bool {
		got = append(got, tok)
		return true
	})
	if strings.Join(got, "|") != "keep-alive|Upgrade|X-Foo" {
		t.Errorf("Tokens = %q", got)
	}
	if !HasToken([]string{"close, UPGRADE"}, "upgrade") || HasToken([]string{"upgrades"}, "upgrade") {
		t.Error("HasToken")
	}
}

func TestHopByHopAndToken(t *testing.T) {
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		if !IsHopByHop(k) {
			t.Errorf("%s should be hop-by-hop", k)
		}
	}
	for _, k := range []string{"Content-Length", "Via", "Authorization", "Cookie", "Accept-Encoding"} {
		if IsHopByHop(k) {
			t.Errorf("%s should be end-to-end", k)
		}
	}
	for s, want := range map[string]bool{"fwdproxy-1a2b": true, "a.b_c~!": true, "": false, "a b": false, "a,b": false, "(x)": false} {
		if ValidToken(s) != want {
			t.Errorf("ValidToken(%q) != %v", s, want)
		}
	}
}

// FuzzParseTarget: no panics; an accepted target round-trips through
// net.JoinHostPort and agrees with net.SplitHostPort.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:443", "127.0.0.1:80", "[::1", "a:b:c", ":0", "[]:1", "x:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := ParseTarget(s)
		if err != nil {
			if host != "" || port != 0 {
				t.Fatalf("error %v with results %q %d", err, host, port)
			}
			return
		}
		if port == 0 || host == "" {
			t.Fatalf("accepted %q with host %q port %d", s, host, port)
		}
		h2, p2, err := net.SplitHostPort(net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil || h2 != host || p2 != strconv.Itoa(int(port)) {
			t.Fatalf("%q does not round-trip: %q %q %v", s, h2, p2, err)
		}
		h3, _, err := ParseTarget(net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil || h3 != host {
			t.Fatalf("%q: re-parse gave %q, %v", s, h3, err)
		}
	})
}

// FuzzCheckURL: no panics on any absolute URL; accepted URLs have an
// http(s) scheme, no userinfo and a usable host and port.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"http://example.com/", "https://[::1]:8443/x", "ftp://x/", "http://u@h/", "http://h:/", "http://%41/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		host, port, err := CheckURL(u)
		if err != nil {
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || host == "" || port == 0 {
			t.Fatalf("accepted %q: scheme %q host %q port %d", s, u.Scheme, host, port)
		}
	})
}

func TestFramingLookAlike(t *testing.T) {
	for _, tc := range []struct {
		k, field string
	}{
		{"Transfer_encoding", "Transfer-Encoding"},
		{"Transfer_Encoding", "Transfer-Encoding"},
		{"TRANSFER_ENCODING", "Transfer-Encoding"},
		{"Content_length", "Content-Length"},
		{"Content_Length", "Content-Length"},
		{"Proxy_connection", "Proxy-Connection"},
		{"Keep_alive", "Keep-Alive"},
		{"Proxy_authorization", "Proxy-Authorization"},
		{"Proxy_authenticate", "Proxy-Authenticate"},
		{"Transfer-Encoding", ""}, // the real fields are not look-alikes
		{"Content-Length", ""},
		{"content-length", ""},
		{"Host", ""},
		{"X_forwarded_for", ""},
		{"Content_type", ""},
		{"Content__length", ""},
		{"Content_lengths", ""},
		{"_", ""},
		{"", ""},
	} {
		field, ok := FramingLookAlike(tc.k)
		if field != tc.field || ok != (tc.field != "") {
			t.Errorf("FramingLookAlike(%q) = %q, %v; want %q", tc.k, field, ok, tc.field)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		FramingLookAlike("User-Agent")
		FramingLookAlike("Transfer_Encoding")
	}); n != 0 {
		t.Errorf("FramingLookAlike allocates %v times", n)
	}
}
