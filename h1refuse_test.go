package fwdproxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests of what Serve's loop refuses before it reads a request
// (h1refuse.go). The proxies keep the default 10 s header timeout, and every
// answer must come well within promptly (a generous bound, not a speed
// check): before these refusals, each of these clients waited out the
// header timeout.
const promptly = 3 * time.Second

// logCapture is a logger whose lines a test can read.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (lc *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{&lc.mu, &lc.buf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func (lc *logCapture) String() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.buf.String()
}

// wantLogged waits for a log line containing every one of parts.
func (lc *logCapture) wantLogged(t testing.TB, parts ...string) {
	t.Helper()
	eventually(t, "a log line with "+strings.Join(parts, ", "), func() bool {
		for _, line := range strings.Split(lc.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	})
}

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
			var logs logCapture // a proxy each: the log line comes once a second
			tp := startProxy(t, WithLogger(logs.logger()))
			c, br := tp.rawConn(t)
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
	tp := startProxy(t, WithLogger(logs.logger()))
	t.Run("Go TLS client", func(t *testing.T) {
		c, err := net.Dial("tcp", tp.Addr)
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
		{"curl -x https://", []string{"-x", "https://" + tp.Addr, "--proxy-insecure"}, 35}, // SSL connect error
		{"curl --socks5", []string{"--socks5", tp.Addr}, 97},                               // proxy handshake error
		{"curl --socks4", []string{"--socks4", tp.Addr}, 97},
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

// curlFails runs curl, which must fail, and returns its exit code and
// standard error.
func curlFails(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := curlCommand(t, args...) // curl_test.go
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("curl %q: want a failure, got %v", args, err)
	}
	return ee.ExitCode(), stderr.String()
}

// TestLoopBareRequestLine: a request line without an HTTP version (an
// HTTP/0.9 "GET /") or with a version that is not HTTP/x.y gets net/http's
// 400 at once, as net/http's own server answers it, and the connection is
// closed; a valid request line still waits for its header fields.
func TestLoopBareRequestLine(t *testing.T) {
	tp := startProxy(t)
	for _, line := range []string{
		"GET /\r\n",
		"GET /\n",
		"GET\r\n",
		"GET http://127.0.0.1:1/\r\n",
		"GET / FOO/1.0\r\n",
		"GET / HTTP/1\r\n",
	} {
		t.Run(strings.TrimSpace(line), func(t *testing.T) {
			c, br := tp.rawConn(t)
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
		c, br := tp.rawConn(t)
		mustWrite(t, c, "GET http://127.0.0.1:1/ HTTP/1.1\r\n")
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if b, err := br.ReadByte(); !isTimeout(err) {
			t.Fatalf("read %q, %v: want no answer yet", b, err)
		}
	})
}

// TestLoopRefusesOverLimitAtAccept: with WithMaxConns connections open that
// send nothing, a further connection gets 503 at once without sending a
// byte, and is closed; the refusals are counted and logged (not once per
// connection); real clients are served again as soon as the silent ones
// close.
func TestLoopRefusesOverLimitAtAccept(t *testing.T) {
	o, host := pathOrigin(t)
	const limit = 5
	var logs logCapture
	tp := startProxy(t, WithMaxConns(limit), WithLogger(logs.logger()))
	silent := make([]net.Conn, limit)
	for i := range silent {
		c, _ := tp.rawConn(t)
		silent[i] = c
	}
	wantOpenConns(t, tp.Proxy, limit)

	const refused = 20
	for i := range refused {
		c, br := tp.rawConn(t)
		_ = c.SetReadDeadline(time.Now().Add(promptly))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("over-limit connection %d sent nothing and got: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || !strings.Contains(string(body), "WithMaxConns") {
			t.Fatalf("over the limit: %d close %v %q", resp.StatusCode, resp.Close, body)
		}
		wantClosed(t, c, br)
	}
	// Real clients over the limit are refused at once as well. curl reads
	// the 503; Go's client fails at once with "unsolicited response",
	// because the answer may arrive before it has written its request.
	if code, stderr := curlFails(t, "-f", "-x", tp.URL.String(), o+"/real"); code != 22 || !strings.Contains(stderr, "503") {
		t.Errorf("curl over the limit: exit %d %s, want 22 (HTTP error) with 503", code, stderr)
	}
	client := tp.client(t, nil)
	start := time.Now()
	if resp, err := client.Get(o + "/real"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Go client over the limit: %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d > promptly {
		t.Errorf("Go client over the limit took %v", d)
	}
	if got := tp.Stats().RefusedConnections; got != refused+2 {
		t.Errorf("Stats().RefusedConnections = %d, want %d", got, refused+2)
	}
	logs.wantLogged(t, "connection refused: too many client connections", "max_conns=5")
	if n := strings.Count(logs.String(), "connection refused"); n > 3 {
		t.Errorf("%d log lines for %d refusals in well under 3 s: want at most one a second", n, refused+2)
	}
	wantOpenConns(t, tp.Proxy, limit)

	for _, c := range silent {
		c.Close()
	}
	wantOpenConns(t, tp.Proxy, 0)
	if r, body := mustGet(t, client, o+"/again"); r.StatusCode != 200 || body != "GET /again" {
		t.Fatalf("after the silent connections closed: %d %q", r.StatusCode, body)
	}
	c, br := tp.rawConn(t)
	mustWrite(t, c, rawGet(o, host, "/raw", ""))
	if r := readWire(t, br, "GET"); r.status != 200 {
		t.Fatalf("raw client after the silent connections closed: %d", r.status)
	}
}
