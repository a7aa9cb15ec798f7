package fwdproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests here cover what an intercepting proxy does with a CONNECT whose
// client does not speak TLS: plain HTTP (WebSocket included) is served
// through the request path, anything else is tunnelled untouched; and how
// an intercepted CONNECT is accounted for.

// wsAcceptKey is the Sec-WebSocket-Accept value for key (RFC 6455 §4.2.2).
func wsAcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsWriteFrame writes one final frame with opcode op; clients mask.
func wsWriteFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	hdr := []byte{0x80 | op, 0}
	switch n := len(payload); {
	case n < 126:
		hdr[1] = byte(n)
	default:
		hdr[1] = 126
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	}
	body := payload
	if mask {
		hdr[1] |= 0x80
		var key [4]byte
		_, _ = rand.Read(key[:])
		hdr = append(hdr, key[:]...)
		body = make([]byte, len(payload))
		for i, b := range payload {
			body[i] = b ^ key[i%4]
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

// wsReadFrame reads one frame (payloads under 64 KiB) and unmasks it.
func wsReadFrame(r io.Reader) (op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	} else if n == 127 {
		return 0, nil, errors.New("frame too long for the test")
	}
	var key [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return hdr[0] & 0x0f, payload, nil
}

// wsOrigin is a minimal WebSocket echo server over plain HTTP: it greets
// with a text frame, echoes text frames prefixed with "echo: " and answers
// a close frame with one.
func wsOrigin(t testing.TB) *httptest.Server {
	return origin(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Version") != "13" {
			http.Error(w, "not a WebSocket handshake", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			wsAcceptKey(r.Header.Get("Sec-WebSocket-Key")))
		if brw.Flush() != nil || wsWriteFrame(conn, 1, []byte("hello "+r.URL.Path), false) != nil {
			return
		}
		for {
			op, payload, err := wsReadFrame(brw)
			if err != nil {
				return
			}
			if op == 8 {
				_ = wsWriteFrame(conn, 8, payload, false)
				return
			}
			if wsWriteFrame(conn, op, append([]byte("echo: "), payload...), false) != nil {
				return
			}
		}
	})
}

// wsSession runs a WebSocket handshake for path on c (a connection to
// target: a CONNECT tunnel after its 200) and exchanges a few frames.
func wsSession(t *testing.T, c io.ReadWriter, br *bufio.Reader, target, path string) {
	t.Helper()
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	mustWrite(t, c, "GET "+path+" HTTP/1.1\r\nHost: "+target+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAcceptKey(key) {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	if op, p, err := wsReadFrame(br); err != nil || op != 1 || string(p) != "hello "+path {
		t.Fatalf("greeting: %d %q %v", op, p, err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*100))
		if err := wsWriteFrame(c, 1, []byte(msg), true); err != nil {
			t.Fatal(err)
		}
		if op, p, err := wsReadFrame(br); err != nil || op != 1 || string(p) != "echo: "+msg {
			t.Fatalf("frame %d: %d %q %v", i, op, p, err)
		}
	}
	if err := wsWriteFrame(c, 8, []byte{0x03, 0xe8}, true); err != nil {
		t.Fatal(err)
	}
	if op, _, err := wsReadFrame(br); err != nil || op != 8 {
		t.Fatalf("close: %d %v", op, err)
	}
}

// h2Connect opens a CONNECT stream to target through the HTTP/2 front.
func h2Connect(t testing.TB, tr *http.Transport, front, target string) (*pipeConn, *bufio.Reader) {
	t.Helper()
	pr, pw := io.Pipe()
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: front}, Host: target, Header: http.Header{}, Body: pr}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	c := &pipeConn{r: resp.Body, w: pw}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// newLoggedProxy returns a Proxy logging JSON into the returned buffer.
func newLoggedProxy(t testing.TB, opts ...Option) (*Proxy, *syncBuffer) {
	t.Helper()
	var buf syncBuffer
	p, err := New(append([]Option{WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))), WithAllowPrivate(), allowAnyConnectPort()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p, &buf
}

// serveLoopback serves p on 127.0.0.1 until the test ends.
func serveLoopback(t testing.TB, p *Proxy) *testProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(l) }()
	t.Cleanup(func() {
		_ = p.Shutdown(context.Background())
		<-done
	})
	return &testProxy{Proxy: p, URL: &url.URL{Scheme: "http", Host: l.Addr().String()}, Addr: l.Addr().String()}
}

// TestInterceptWebSocket: plain ws:// through CONNECT with interception on
// (as browsers send it) completes its handshake and exchanges frames both
// ways, five times over, on HTTP/1.1 CONNECTs and on an HTTP/2 CONNECT
// stream; the upgrade goes through the request path (request hook, access
// log).
func TestInterceptWebSocket(t *testing.T) {
	o := wsOrigin(t)
	target := o.Listener.Addr().String()
	ca, _ := newTestCA(t)
	var hooked atomic.Int64
	p, buf := newLoggedProxy(t, WithInterception(ca), WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		if out.URL.String() == "http://"+target+"/chat" && out.Header.Get("Upgrade") == "websocket" {
			hooked.Add(1)
		}
		return nil, nil
	}))
	tp := serveLoopback(t, p)
	for i := range 5 {
		t.Run(fmt.Sprintf("h1 %d", i), func(t *testing.T) {
			c, br := tp.connect(t, target, "")
			wsSession(t, c, br, target, "/chat")
		})
	}
	t.Run("h2 CONNECT", func(t *testing.T) {
		tr, front := h2Front(t, p)
		c, br := h2Connect(t, tr, front, target)
		defer func() {
			if t.Failed() {
				t.Log(buf.String())
			}
		}()
		wsSession(t, c, br, target, "/chat")
	})
	if n := hooked.Load(); n != 6 {
		t.Errorf("request hook saw %d upgrades, want 6", n)
	}
	recs := connectRecords(t, buf, 6)
	for _, r := range recs {
		if r["status"] != float64(200) || r["requests"] != float64(1) || r["error"] != nil {
			t.Errorf("CONNECT record %v, want status 200, requests 1, no error", r)
		}
	}
	var upgrades int
	for _, r := range records(t, buf, "tunnel", 6) {
		if r["method"] == "GET" && r["url"] == "http://"+target+"/chat" && r["status"] == float64(101) {
			upgrades++
		}
	}
	if upgrades != 6 {
		t.Errorf("%d upgraded GET records, want 6; log:\n%s", upgrades, buf.String())
	}
}

// TestInterceptPlainHTTP: plain HTTP to a non-default port through CONNECT
// with interception on, from curl -p and by hand over HTTP/1.1 and HTTP/2
// CONNECTs, is served through the request path: hooks change it, access
// rules judge each request, and the access log has a record per request
// and one for the CONNECT.
func TestInterceptPlainHTTP(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain %s %s hook=%s", r.Method, r.URL.Path, r.Header.Get("X-Hook"))
	})
	target := o.Listener.Addr().String()
	ca, _ := newTestCA(t)
	var mu sync.Mutex
	var seen []string
	p, buf := newLoggedProxy(t, WithInterception(ca),
		WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
			mu.Lock()
			seen = append(seen, out.Method+" "+out.URL.String())
			mu.Unlock()
			out.Header.Set("X-Hook", "yes")
			return nil, nil
		}),
		WithResponseHook(func(ctx context.Context, resp *http.Response) error {
			resp.Header.Set("X-Seen", "1")
			return nil
		}),
		WithAccessHook(func(_ context.Context, a Access) error {
			if !a.Connect && a.Method == http.MethodDelete {
				return Deny(http.StatusForbidden, "no deletes")
			}
			return nil
		}))
	tp := serveLoopback(t, p)
	exchange := func(t *testing.T, c io.Writer, br *bufio.Reader, method, path string, status int) {
		t.Helper()
		mustWrite(t, c, method+" "+path+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("%s %s: %d %q, want %d", method, path, resp.StatusCode, b, status)
		}
		if status == 200 && (string(b) != "plain "+method+" "+path+" hook=yes" || resp.Header.Get("X-Seen") != "1") {
			t.Errorf("%s %s: %q X-Seen=%q", method, path, b, resp.Header.Get("X-Seen"))
		}
	}
	t.Run("curl -p", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not installed")
		}
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "-p", "-x", tp.URL.String(), "http://"+target+"/curl").CombinedOutput()
		if err != nil || string(out) != "plain GET /curl hook=yes" {
			t.Errorf("curl -p: %v %q", err, out)
		}
	})
	t.Run("h1 CONNECT", func(t *testing.T) {
		c, br := tp.connect(t, target, "")
		exchange(t, c, br, "GET", "/a", 200)
		exchange(t, c, br, "DELETE", "/a", 403)
		exchange(t, c, br, "GET", "/b", 200)
		c.Close()
	})
	t.Run("h2 CONNECT", func(t *testing.T) {
		tr, front := h2Front(t, p)
		c, br := h2Connect(t, tr, front, target)
		exchange(t, c, br, "POST", "/h2", 200)
		c.Close()
	})
	mu.Lock()
	got := strings.Join(seen, ", ")
	mu.Unlock()
	want := "GET http://" + target + "/a, GET http://" + target + "/b, POST http://" + target + "/h2"
	n := 4
	if _, err := exec.LookPath("curl"); err == nil {
		want = "GET http://" + target + "/curl, " + want
		n++
	}
	if got != want {
		t.Errorf("request hook saw %q, want %q", got, want)
	}
	quiesce(t, p)
	var requests []string
	for _, r := range records(t, buf, "request", n) {
		requests = append(requests, fmt.Sprintf("%v %v %v", r["method"], r["url"], r["status"]))
	}
	for _, w := range []string{"GET http://" + target + "/a 200", "DELETE http://" + target + "/a 403", "POST http://" + target + "/h2 200"} {
		if !strings.Contains(strings.Join(requests, "\n"), w) {
			t.Errorf("no request record %q among %q", w, requests)
		}
	}
	var counts []string
	for _, r := range connectRecords(t, buf, n-2) {
		if r["status"] != float64(200) || r["error"] != nil || r["bytes_in"].(float64) <= 0 || r["bytes_out"].(float64) <= 0 {
			t.Errorf("CONNECT record %v, want status 200, bytes both ways, no error", r)
		}
		counts = append(counts, fmt.Sprint(r["requests"]))
	}
	slices.Sort(counts)
	if s := strings.Join(counts, " "); !strings.HasSuffix(s, "1 3") {
		t.Errorf("CONNECT records count requests %q, want 3 (h1) and 1 (h2) among them", s)
	}
}

// TestInterceptUntouched: a CONNECT whose client speaks neither TLS nor
// HTTP/1.x is tunnelled untouched, the peeked bytes first: at once when
// the client speaks first, after the peek's bound when the server does
// (the client waits for its greeting), over HTTP/1.1 and HTTP/2 CONNECTs.
func TestInterceptUntouched(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	greeter := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		if _, err := io.WriteString(c, "220 smtp.test ESMTP\r\n"); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	})
	ca, _ := newTestCA(t)
	p, buf := newLoggedProxy(t, WithInterception(ca))
	tp := serveLoopback(t, p)
	tr, front := h2Front(t, p)
	for _, tc := range []struct {
		name, target string
		h2           bool
		greeting     string // the server speaks first
		send         string
		slow         bool // the client waits for the peek's bound
	}{
		{"binary", echoAddr, false, "", "\x00\x00\x00\x10\x01binary protocol", false},
		{"line", echoAddr, false, "", "EHLO client.test\r\n", false},
		{"SSH-like", echoAddr, false, "", "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n", false},
		{"server first", greeter, false, "220 smtp.test ESMTP\r\n", "QUIT\r\n", true},
		{"binary over h2", echoAddr, true, "", "\x05\x01\x00", false},
		{"server first over h2", greeter, true, "220 smtp.test ESMTP\r\n", "QUIT\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c io.ReadWriteCloser
			var br *bufio.Reader
			if tc.h2 {
				c, br = h2Connect(t, tr, front, tc.target)
			} else {
				c, br = tp.connect(t, tc.target, "")
			}
			start := time.Now()
			if tc.greeting != "" {
				got := make([]byte, len(tc.greeting))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != tc.greeting {
					t.Fatalf("greeting %q, %v", got, err)
				}
			}
			mustWrite(t, c, tc.send)
			got := make([]byte, len(tc.send))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != tc.send {
				t.Fatalf("echo %q, %v; want %q", got, err, tc.send)
			}
			d := time.Since(start)
			if tc.slow && d < clientFirstWait*9/10 {
				t.Errorf("greeting after %v, before the peek's bound %v", d, clientFirstWait)
			}
			if !tc.slow && d >= clientFirstWait {
				t.Errorf("echo after %v: the peek waited for its bound", d)
			}
			c.Close()
		})
	}
	quiesce(t, p)
	for _, r := range connectRecords(t, buf, 6) {
		if r["status"] != float64(200) || r["error"] != nil || r["requests"] != nil || r["bytes_in"].(float64) <= 0 || r["bytes_out"].(float64) <= 0 {
			t.Errorf("CONNECT record %v, want a plain tunnel's: status 200, bytes both ways, no requests, no error", r)
		}
	}
}

// TestInterceptConnsNotCounted: the connections the interception server
// serves are not client connections of Serve's. Only the hand-off server
// counts (countConn, which knows the loop's hand-offs by their type,
// netx.Conn, as CONNECT and interception now make netx.Conns too), so an
// intercepted connection is neither counted in Stats.ActiveConnections nor
// refused past WithMaxConns.
func TestInterceptConnsNotCounted(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "inner") })
	target := o.Listener.Addr().String()
	ca, _ := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithMaxConns(1))
	c, br := tp.connect(t, target, "GET /early HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	defer c.Close()
	for i := 0; i < 2; i++ {
		if i > 0 {
			mustWrite(t, c, "GET /next HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "inner" {
			t.Fatalf("request %d inside: %d %q", i, resp.StatusCode, b)
		}
	}
	if n := tp.Stats().ActiveConnections; n != 0 {
		t.Errorf("ActiveConnections = %d with one intercepted connection open, want 0", n)
	}
}
