package h1

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Tests of what the loop refuses before it reads a request (refuse.go).
// The servers keep the default 10 s header timeout, and every answer must
// come well within promptly (a generous bound, not a speed check): before
// these refusals, each of these clients waited out the header timeout.
const promptly = 3 * time.Second

// TestLoopRefusesTLSAndSOCKS: a TLS ClientHello or a SOCKS greeting on the
// plain listener is answered at once in its own protocol (a TLS alert,
// SOCKS "no acceptable methods" / "rejected"), the connection closed, and
// what the client tried logged with its address.
func TestLoopRefusesTLSAndSOCKS(t *testing.T) {
	for _, tc := range []struct {
		name, send, logged string
		want               []byte
	}{
		{"SOCKS5 greeting", "\x05\x01\x00", "SOCKS5", []byte{0x05, 0xff}},
		{"SOCKS5 greeting, two methods", "\x05\x02\x00\x02", "SOCKS5", []byte{0x05, 0xff}},
		{"SOCKS4 connect", "\x04\x01\x00\x50\x7f\x00\x00\x01user\x00", "SOCKS4", []byte{0, 0x5b, 0, 0, 0, 0, 0, 0}},
		{"TLS record, first byte only", "\x16", "TLS", []byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logCapture // a server each: the log line comes once a second
			ts := startServer(t, http.HandlerFunc(pathHandler), nil, logs.logger())
			c, br := ts.rawConn(t)
			start := time.Now()
			mustWrite(t, c, tc.send)
			_ = c.SetReadDeadline(start.Add(promptly))
			got, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("after %v: %v (read %q)", time.Since(start), err, got)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("answer %x, want %x", got, tc.want)
			}
			logs.wantLogged(t, "client spoke "+tc.logged, "client="+c.LocalAddr().String())
		})
	}
	var logs logCapture
	ts := startServer(t, http.HandlerFunc(pathHandler), nil, logs.logger())
	t.Run("Go TLS client", func(t *testing.T) {
		c, err := net.Dial("tcp", ts.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(promptly))
		err = tls.Client(c, &tls.Config{ServerName: "proxy.test"}).Handshake()
		if err == nil || !strings.Contains(err.Error(), "handshake failure") {
			t.Fatalf("handshake: %v, want the proxy's handshake_failure alert", err)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		exit int // curl's exit code
	}{
		{"curl -x https://", []string{"-x", "https://" + ts.Addr, "--proxy-insecure"}, 35}, // SSL connect error
		{"curl --socks5", []string{"--socks5", ts.Addr}, 97},                               // proxy handshake error
		{"curl --socks4", []string{"--socks4", ts.Addr}, 97},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stderr := curlFails(t, append(tc.args, "http://127.0.0.1:1/")...)
			if d := time.Since(start); d > promptly {
				t.Errorf("curl took %v", d)
			}
			if code != tc.exit {
				t.Errorf("curl exit %d, want %d: %s", code, tc.exit, stderr)
			}
		})
	}
	logs.wantLogged(t, "client spoke TLS", "use an http:// proxy URL")
}

// TestLoopBareRequestLine: a request line without an HTTP version (an
// HTTP/0.9 "GET /") or with a version that is not HTTP/x.y gets net/http's
// 400 at once, as net/http's own server answers it, and the connection is
// closed; a valid request line still waits for its header fields.
func TestLoopBareRequestLine(t *testing.T) {
	ts := startServer(t, http.HandlerFunc(pathHandler), nil, nil)
	for _, line := range []string{
		"GET /\r\n",
		"GET /\n",
		"GET\r\n",
		"GET http://127.0.0.1:1/\r\n",
		"GET / FOO/1.0\r\n",
		"GET / HTTP/1\r\n",
	} {
		t.Run(strings.TrimSpace(line), func(t *testing.T) {
			c, br := ts.rawConn(t)
			start := time.Now()
			mustWrite(t, c, line)
			_ = c.SetReadDeadline(start.Add(promptly))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("after %v: %v", time.Since(start), err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			wantClosed(t, c, br)
		})
	}
	t.Run("a valid request line waits for its fields", func(t *testing.T) {
		c, br := ts.rawConn(t)
		mustWrite(t, c, "GET http://127.0.0.1:1/ HTTP/1.1\r\n")
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if b, err := br.ReadByte(); !isTimeout(err) {
			t.Fatalf("read %q, %v: want no answer yet", b, err)
		}
	})
}
