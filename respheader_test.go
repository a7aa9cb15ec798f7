package fwdproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// bigHeadOrigin answers GET or POST /<n> with a response head of about n
// bytes (filler fields of 1000 bytes), over HTTP/1.1 from a raw server and
// over HTTP/2 from a TLS one. It returns both addresses.
func bigHeadOrigin(t *testing.T) (h1Addr, h2Addr string, opt Option) {
	t.Helper()
	size := func(path string) int {
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "/"))
		return n
	}
	h1Addr = tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			bw := bufio.NewWriterSize(c, 64<<10)
			_, _ = bw.WriteString("HTTP/1.1 200 OK\r\n")
			for n := size(req.URL.Path); n > 0; n -= 1000 {
				_, _ = bw.WriteString("X-Filler: " + strings.Repeat("f", 988) + "\r\n")
			}
			_, _ = bw.WriteString("Content-Length: 2\r\n\r\nok")
			if bw.Flush() != nil {
				return
			}
		}
	})
	o, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		for i, n := 0, size(r.URL.Path); n > 0; i, n = i+1, n-1000 {
			w.Header().Set("X-Filler-"+strconv.Itoa(i), strings.Repeat("f", 980))
		}
		_, _ = io.WriteString(w, "ok")
	})
	return h1Addr, o.Listener.Addr().String(), WithUpstreamRootCAs(roots)
}

// TestResponseHeaderLimit: a response head over the default limit is
// answered 502 naming the limit on every upstream path (the own client,
// the transport over HTTP/1.1 and over HTTP/2), and one under it passes.
func TestResponseHeaderLimit(t *testing.T) {
	h1Addr, h2Addr, roots := bigHeadOrigin(t)
	tp := startProxy(t, roots)
	for _, path := range []struct {
		name, method, scheme, addr string
	}{
		{"own client", "GET", "http", h1Addr},
		{"transport HTTP/1.1", "POST", "http", h1Addr},
		{"transport HTTP/2", "GET", "https", h2Addr},
	} {
		for _, tc := range []struct {
			size   int
			status int
		}{
			{200 << 10, 200},
			{2 << 20, 502},
		} {
			t.Run(path.name+"/"+strconv.Itoa(tc.size), func(t *testing.T) {
				u := path.scheme + "://" + path.addr + "/" + strconv.Itoa(tc.size)
				req := path.method + " " + u + " HTTP/1.1\r\nHost: " + path.addr + "\r\n"
				if path.method == "POST" {
					req += "Content-Length: 1\r\n\r\nx"
				} else {
					req += "\r\n"
				}
				before := tp.Stats().Errors.Upstream
				c, br := tp.rawConn(t)
				mustWrite(t, c, req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d (%q), want %d", resp.StatusCode, b, tc.status)
				}
				if tc.status == 502 {
					if !strings.Contains(string(b), "response header over "+strconv.Itoa(DefaultMaxResponseHeaderBytes)+" bytes (the WithMaxResponseHeaderBytes limit)") {
						t.Errorf("reason %q does not name the limit", b)
					}
					if after := tp.Stats().Errors.Upstream; after != before+1 {
						t.Errorf("upstream errors %d -> %d", before, after)
					}
				} else if string(b) != "ok" {
					t.Errorf("body %q", b)
				}
			})
		}
	}
}

// TestResponseHeaderLimitOption: WithMaxResponseHeaderBytes sets the limit
// on every upstream path, and is validated.
func TestResponseHeaderLimitOption(t *testing.T) {
	h1Addr, h2Addr, roots := bigHeadOrigin(t)
	tp := startProxy(t, roots, WithMaxResponseHeaderBytes(16<<10))
	for _, u := range []string{"http://" + h1Addr, "https://" + h2Addr} {
		for _, tc := range []struct {
			size, status int
		}{{8 << 10, 200}, {20 << 10, 502}, {32 << 10, 502}} {
			addr := strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
			c, br := tp.rawConn(t)
			mustWrite(t, c, "GET "+u+"/"+strconv.Itoa(tc.size)+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || tc.status == 502 && !strings.Contains(string(b), "response header over 16384 bytes (the WithMaxResponseHeaderBytes limit)") {
				t.Errorf("%s, %d-byte head: %d %q, want %d", u, tc.size, resp.StatusCode, b, tc.status)
			}
		}
	}
	for _, n := range []int{0, 1023, 1<<30 + 1} {
		if _, err := New(WithMaxResponseHeaderBytes(n)); err == nil {
			t.Errorf("WithMaxResponseHeaderBytes(%d) accepted", n)
		}
	}
}
