package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLoopResponseInvalidLength: a Content-Length the handler set that is
// not a length (ServeHTTP never sets one, but a ResponseWriter must not
// trust it) is left out, and the body is framed by one the writer computes
// or by chunking, never by two conflicting fields.
func TestLoopResponseInvalidLength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
	}{
		{"small body, length computed", "hello", false},
		{"large body, chunked", strings.Repeat("x", 3*bufferBeforeChunking), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			sc := &srvConn{s: &Server{}, c: server, tcp: server}
			req, _ := http.NewRequest("GET", "http://example.test/", nil)
			w := &srvResponse{sc: sc, req: req, header: make(http.Header), cl: -1}
			w.Header()["Content-Length"] = []string{"bogus"}
			w.WriteHeader(200)
			if _, err := io.WriteString(w, tc.body); err != nil {
				t.Fatal(err)
			}
			w.finish()
			resp, err := http.ReadResponse(bufio.NewReader(client), req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != tc.body {
				t.Fatalf("body %d bytes, %v; want %d bytes", len(b), err, len(tc.body))
			}
			if cl := resp.Header.Values("Content-Length"); len(cl) > 1 || (len(cl) == 1 && cl[0] != strconv.Itoa(len(tc.body))) {
				t.Errorf("Content-Length fields %q", cl)
			}
			if got := len(resp.TransferEncoding) > 0; got != tc.chunked {
				t.Errorf("chunked = %v, want %v", got, tc.chunked)
			}
		})
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestLoopResponseInformational: a 1xx other than 101 goes out at once
// with the header as it is, and the final response follows on the same
// connection.
func TestLoopResponseInformational(t *testing.T) {
	client, server := tcpPair(t)
	sc := &srvConn{s: &Server{}, c: server, tcp: server}
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	w := &srvResponse{sc: sc, req: req, header: make(http.Header), cl: -1}
	w.Header().Set("Link", "</style.css>; rel=preload")
	w.WriteHeader(http.StatusEarlyHints)
	br := bufio.NewReader(client)
	tpr := textproto.NewReader(br)
	line, err := tpr.ReadLine()
	if err != nil || line != "HTTP/1.1 103 Early Hints" {
		t.Fatalf("first line %q, %v", line, err)
	}
	h, err := tpr.ReadMIMEHeader()
	if err != nil || h.Get("Link") != "</style.css>; rel=preload" {
		t.Fatalf("1xx header %v, %v", h, err)
	}
	w.Header().Del("Link")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "final")
	w.finish()
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "final" || resp.Header.Get("Link") != "" {
		t.Errorf("final response %d %q %v", resp.StatusCode, b, resp.Header)
	}
}

// TestResponseAdoptHeader: the loop's writer takes a header map as its
// own only while its header is untouched.
func TestResponseAdoptHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(w *srvResponse)
		h      http.Header
		adopt  bool
	}{
		{"untouched", func(*srvResponse) {}, http.Header{}, true},
		{"nil map", func(*srvResponse) {}, nil, false},
		{"header asked for", func(w *srvResponse) { w.Header() }, http.Header{}, false},
		{"status set", func(w *srvResponse) { w.status = http.StatusOK }, http.Header{}, false},
		{"hijacked", func(w *srvResponse) { w.hijacked = true }, http.Header{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &srvResponse{cl: -1}
			tc.before(w)
			var a HeaderAdopter = w
			if got := a.AdoptHeader(tc.h); got != tc.adopt {
				t.Errorf("AdoptHeader = %v, want %v", got, tc.adopt)
			}
		})
	}
}

// TestDateCache: the Date value is formatted once a second, per Server.
func TestDateCache(t *testing.T) {
	var a, b dateCache
	now := time.Unix(1_700_000_000, 0)
	if got, want := a.format(now), now.UTC().Format(http.TimeFormat); got != want {
		t.Fatalf("format = %q, want %q", got, want)
	}
	first := a.p.Load()
	if a.format(now.Add(999 * time.Millisecond)); a.p.Load() != first {
		t.Error("reformatted within the same second")
	}
	if got := a.format(now.Add(time.Second)); got != now.Add(time.Second).UTC().Format(http.TimeFormat) || a.p.Load() == first {
		t.Errorf("next second: %q", got)
	}
	if b.p.Load() != nil {
		t.Error("one Server's cache filled another's")
	}
}
