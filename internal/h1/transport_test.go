package h1

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCanSend: which requests the Transport sends itself, and the
// "host:port" it dials for them (the proxy's fast-path test).
func TestCanSend(t *testing.T) {
	mk := func(method, target string, mod func(*http.Request)) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		r.Body = http.NoBody
		r.RequestURI = ""
		if mod != nil {
			mod(r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		key  string // "" for the transport
	}{
		{"GET with port", mk("GET", "http://example.com:8080/x", nil), "example.com:8080"},
		{"GET default port", mk("GET", "http://example.com/x", nil), "example.com:80"},
		{"empty port", mk("GET", "http://example.com:/x", nil), "example.com:80"},
		{"IPv6 literal", mk("HEAD", "http://[::1]/x", nil), "[::1]:80"},
		{"DELETE", mk("DELETE", "http://example.com/x", nil), "example.com:80"},
		{"https", mk("GET", "https://example.com/x", nil), ""},
		{"body", mk("POST", "http://example.com/x", func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader("x"))
			r.ContentLength = 1
		}), ""},
		{"chunked body", mk("POST", "http://example.com/x", func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader("x"))
			r.ContentLength = -1
		}), ""},
		{"upgrade", mk("GET", "http://example.com/x", func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }), ""},
		{"expect", mk("GET", "http://example.com/x", func(r *http.Request) { r.Header.Set("Expect", "100-continue") }), ""},
		{"trailer", mk("GET", "http://example.com/x", func(r *http.Request) { r.Trailer = http.Header{"X": nil} }), ""},
		{"non-ASCII host", mk("GET", "http://b\u00fccher.example/x", nil), ""},
		{"zone", mk("GET", "http://[fe80::1%25eth0]:80/x", nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, ok := CanSend(tc.req)
			if ok != (tc.key != "") || key != tc.key {
				t.Errorf("CanSend = %q, %v; want %q", key, ok, tc.key)
			}
		})
	}
}
