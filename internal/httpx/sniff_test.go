package httpx

import (
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Protocol
	}{
		{"", SniffMore},
		{"\x16", SniffMore},
		{"\x16\x03", SniffTLS},
		{"\x16\x03\x01\x02\x00\x01", SniffTLS},
		{"\x16\x02", SniffOther},
		{"G", SniffMore},
		{"GET", SniffMore},
		{"GET ", SniffMore},
		{"GET /chat", SniffMore},
		{"GET /chat ", SniffMore},
		{"GET /chat HTTP/1", SniffMore},
		{"GET /chat HTTP/1.1", SniffMore},
		{"GET /chat HTTP/1.1\r", SniffMore},
		{"GET /chat HTTP/1.1\r\n", SniffHTTP1},
		{"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", SniffHTTP1},
		{"POST http://a/b HTTP/1.0\n", SniffHTTP1},
		{"M-SEARCH * HTTP/1.1\r\n", SniffHTTP1},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", SniffOther}, // HTTP/2 prior knowledge
		{"GET /a b HTTP/1.1\r\n", SniffOther},
		{"GET  / HTTP/1.1\r\n", SniffOther},
		{"GET / HTTP/1.1\n\n", SniffHTTP1},
		{"GET / HTTP/1.1\rX", SniffOther},
		{"GET / HTTP/1.x\r\n", SniffOther},
		{"GET /\x00 HTTP/1.1\r\n", SniffOther},
		{"GET /\r\n", SniffOther},
		{" GET / HTTP/1.1\r\n", SniffOther},
		{"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n", SniffOther},
		{"EHLO", SniffMore}, // could still be a method
		{"EHLO example.com\r\n", SniffOther},
		{"\x00\x00\x00\x0c", SniffOther},
		{"\x05\x01\x00", SniffOther},                     // SOCKS5
		{"GET /" + strings.Repeat("a", 100), SniffOther}, // over the limit
		{strings.Repeat("A", 100), SniffOther},
	} {
		if got := Sniff([]byte(tc.in), 64); got != tc.want {
			t.Errorf("Sniff(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
