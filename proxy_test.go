package fwdproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  Option
	}{
		{"nil option", nil},
		{"negative dial timeout", WithDialTimeout(-time.Second)},
		{"zero response header timeout", WithResponseHeaderTimeout(0)},
		{"zero tunnel idle", WithTunnelIdleTimeout(0)},
		{"zero body idle", WithBodyIdleTimeout(0)},
		{"negative body idle", WithBodyIdleTimeout(-time.Second)},
		{"per host above total", WithMaxIdleConns(10, 5)},
		{"zero per host", WithMaxIdleConns(0, 5)},
		{"tiny header limit", WithMaxHeaderBytes(10)},
		{"empty pseudonym", WithVia("")},
		{"pseudonym with space", WithVia("my proxy")},
		{"nil fallback", WithFallback(nil)},
		{"nil logger", WithLogger(nil)},
		{"nil connect hook", WithConnectHook(nil)},
		{"nil request hook", WithRequestHook(nil)},
		{"nil response hook", WithResponseHook(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.opt)
			if err == nil || p != nil {
				t.Fatalf("New = %v, %v; want an error", p, err)
			}
		})
	}
	if _, err := New(WithVia("edge-1"), WithMaxIdleConns(8, 8)); err != nil {
		t.Fatalf("valid options: %v", err)
	}
}

// TestForwardHeaders checks the RFC 9110 intermediary rules on the way up
// and down: hop-by-hop fields removed, Via added, repeated fields kept in
// order, Accept-Encoding and encoded bodies untouched.
func TestForwardHeaders(t *testing.T) {
	var seen http.Header
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(strings.Repeat("compressible ", 100)))
	_ = zw.Close()
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		h := w.Header()
		h["Set-Cookie"] = []string{"a=1", "b=2", "c=3"}
		h.Set("Connection", "X-Hop-Resp")
		h.Set("X-Hop-Resp", "secret")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Content-Encoding", "gzip")
		_, _ = w.Write(gz.Bytes())
	})
	tp := startProxy(t, WithVia("testproxy"))
	req, _ := http.NewRequest("GET", o.URL+"/path?q=1", nil)
	req.Header["X-Multi"] = []string{"one", "two", "three"}
	req.Header.Set("Accept-Encoding", "gzip, br")
	req.Header.Set("Connection", "X-Hop-Req, keep-alive")
	req.Header.Set("X-Hop-Req", "must go")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Proxy-Authorization", "Basic dXNlcjpwYXNz")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("Via", "1.1 earlier")
	resp, err := tp.client(t, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	for _, k := range []string{"X-Hop-Req", "Proxy-Connection", "Proxy-Authorization", "Keep-Alive"} {
		if v, ok := seen[k]; ok {
			t.Errorf("origin received hop-by-hop %s: %q", k, v)
		}
	}
	checks := []struct {
		what      string
		got, want []string
	}{
		{"request X-Multi", seen["X-Multi"], []string{"one", "two", "three"}},
		{"request Accept-Encoding", seen["Accept-Encoding"], []string{"gzip, br"}},
		{"request Te", seen["Te"], []string{"trailers"}},
		{"request Via", seen["Via"], []string{"1.1 earlier", "1.1 testproxy"}},
		{"response Set-Cookie", resp.Header["Set-Cookie"], []string{"a=1", "b=2", "c=3"}},
		{"response Via", resp.Header["Via"], []string{"1.1 testproxy"}},
		{"response X-Hop-Resp", resp.Header["X-Hop-Resp"], nil},
		{"response Keep-Alive", resp.Header["Keep-Alive"], nil},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if !bytes.Equal(body, gz.Bytes()) {
		t.Errorf("gzip body changed in transit: %d bytes, want %d", len(body), gz.Len())
	}
}

// patternReader yields a deterministic pseudo-random byte stream.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newPattern(seed byte, n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{seed}), n: n}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, _ := r.rng.Read(p)
	r.n -= int64(n)
	return n, nil
}

func sum(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return n, s, err
}

// TestLargeBodies moves a 32 MiB binary upload and a 256 MiB download
// through the proxy and compares checksums.
func TestLargeBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("large transfer")
	}
	const upSize, downSize = 32 << 20, 256 << 20
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			n, s, err := sum(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %x", n, s)
		case "/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			if r.URL.Query().Get("chunked") == "" {
				w.Header().Set("Content-Length", fmt.Sprint(downSize))
			}
			_, _ = io.Copy(w, newPattern(2, downSize))
		}
	})
	c := startProxy(t).client(t, nil)

	_, want, _ := sum(newPattern(1, upSize))
	resp, err := c.Post(o.URL+"/upload", "image/x-anything", newPattern(1, upSize))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if wantS := fmt.Sprintf("%d %x", upSize, want); string(got) != wantS {
		t.Errorf("upload: origin saw %q, want %q", got, wantS)
	}

	_, want, _ = sum(newPattern(2, downSize))
	for _, q := range []string{"", "?chunked=1"} {
		resp, err = c.Get(o.URL + "/download" + q)
		if err != nil {
			t.Fatal(err)
		}
		n, s, err := sum(resp.Body)
		resp.Body.Close()
		if err != nil || n != downSize || s != want {
			t.Errorf("download%s: %d bytes, err %v, checksum match %v", q, n, err, s == want)
		}
	}
}

// TestStreamingFlush: the first event must reach the client while the
// origin is still holding the response open.
func TestStreamingFlush(t *testing.T) {
	for _, tc := range []struct{ name, ctype, length string }{
		{"event-stream with length", "text/event-stream", "1000"},
		{"chunked", "application/json", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			o := origin(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				if tc.length != "" {
					w.Header().Set("Content-Length", tc.length)
				}
				_, _ = io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			resp, err := startProxy(t).client(t, nil).Get(o.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got := make(chan string, 1)
			go func() {
				b := make([]byte, len("data: first\n\n"))
				_, err := io.ReadFull(resp.Body, b)
				if err != nil {
					got <- err.Error()
				}
				got <- string(b)
			}()
			select {
			case s := <-got:
				if s != "data: first\n\n" {
					t.Errorf("first event = %q", s)
				}
			case <-time.After(10 * time.Second):
				t.Error("first event did not arrive while the origin held the response open")
			}
			close(release)
		})
	}
}

func TestTrailersBothWays(t *testing.T) {
	var gotReqTrailer atomic.Value
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		gotReqTrailer.Store(r.Trailer.Get("X-Req-Checksum"))
		w.Header().Set("Trailer", "X-Resp-Checksum")
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Resp-Checksum", "resp-sum")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	c := startProxy(t).client(t, nil)
	req, _ := http.NewRequest("POST", o.URL, io.NopCloser(strings.NewReader("payload")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req-Checksum": {"req-sum"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if v, _ := gotReqTrailer.Load().(string); v != "req-sum" {
		t.Errorf("origin saw request trailer %q, want req-sum", v)
	}
	if v := resp.Trailer.Get("X-Resp-Checksum"); v != "resp-sum" {
		t.Errorf("client saw response trailer %q, want resp-sum", v)
	}
	if v := resp.Trailer.Get("X-Late"); v != "late" {
		t.Errorf("client saw undeclared trailer %q, want late", v)
	}
}

// TestUpgrade relays a 101 switch to an echo protocol.
func TestUpgrade(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
	tp := startProxy(t)
	c, br := tp.rawConn(t)
	mustWrite(t, c, "GET "+o.URL+"/ws HTTP/1.1\r\nHost: "+o.Listener.Addr().String()+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo" || resp.Header.Get("Via") == "" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", "world, again"} {
		mustWrite(t, c, msg)
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(br, b); err != nil || string(b) != msg {
			t.Fatalf("echo = %q, %v; want %q", b, err, msg)
		}
	}
}

// TestExpectContinue: the client's body is released only after the origin
// agreed, and a refusal reaches the client without the body being sent.
func TestExpectContinue(t *testing.T) {
	var bodies atomic.Int32
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "100-continue" {
			http.Error(w, "expect header lost", 400)
			return
		}
		if r.URL.Path == "/refuse" {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		b, _ := io.ReadAll(r.Body)
		bodies.Add(1)
		_, _ = w.Write(b)
	})
	tp := startProxy(t)
	host := o.Listener.Addr().String()

	c, br := tp.rawConn(t)
	mustWrite(t, c, "POST "+o.URL+"/accept HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("want 100 Continue first, got %v %v", resp, err)
	}
	mustWrite(t, c, "hello")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("accept: %d %q", resp.StatusCode, b)
	}

	c2, br2 := tp.rawConn(t)
	mustWrite(t, c2, "POST "+o.URL+"/refuse HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("refuse: got %d, want 413 without a 100 first", resp.StatusCode)
	}
	if n := bodies.Load(); n != 1 {
		t.Errorf("origin read %d bodies, want 1", n)
	}
}

// TestBodylessFraming: HEAD, 204 and 304 responses carry no body, and the
// keep-alive connection stays usable behind them.
func TestBodylessFraming(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1000")
			if r.Method != "HEAD" {
				_, _ = w.Write(make([]byte, 1000))
			}
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(304)
		default:
			_, _ = io.WriteString(w, "next")
		}
	})
	tp := startProxy(t)
	c, br := tp.rawConn(t)
	host := o.Listener.Addr().String()
	for _, tc := range []struct {
		method, path string
		status       int
		length       string
	}{
		{"HEAD", "/head", 200, "1000"},
		{"GET", "/204", 204, ""},
		{"GET", "/304", 304, ""},
	} {
		mustWrite(t, c, tc.method+" "+o.URL+tc.path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"+
			"GET "+o.URL+"/next HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		req := &http.Request{Method: tc.method}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Length") != tc.length {
			t.Errorf("%s %s: %d CL %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Length"))
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %s %s: %v", tc.method, tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "next" {
			t.Fatalf("after %s %s the next response was %q: framing broken", tc.method, tc.path, b)
		}
	}
}

func TestMaxForwards(t *testing.T) {
	var hits atomic.Int32
	var seen atomic.Value
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		seen.Store(r.Header.Get("Max-Forwards"))
	})
	c := startProxy(t).client(t, nil)
	for _, tc := range []struct {
		method, mf   string
		wantHits     int32
		wantForward  string
		wantType     string
		wantInBody   string
		wantNotInBod string
	}{
		{"TRACE", "0", 0, "", "message/http", "X-Probe: yes", "Cookie"},
		{"OPTIONS", "0", 0, "", "", "", ""},
		{"TRACE", "3", 1, "2", "", "", ""},
		{"OPTIONS", "1", 1, "0", "", "", ""},
		{"GET", "0", 1, "0", "", "", ""}, // only TRACE and OPTIONS honour it
	} {
		hits.Store(0)
		seen.Store("")
		req, _ := http.NewRequest(tc.method, o.URL+"/x", nil)
		req.Header.Set("Max-Forwards", tc.mf)
		req.Header.Set("X-Probe", "yes")
		req.Header.Set("Cookie", "session=secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := tc.method + " Max-Forwards " + tc.mf
		if resp.StatusCode != 200 || hits.Load() != tc.wantHits {
			t.Errorf("%s: status %d, origin hits %d (want %d)", name, resp.StatusCode, hits.Load(), tc.wantHits)
		}
		if tc.wantHits > 0 && seen.Load() != tc.wantForward {
			t.Errorf("%s: origin saw Max-Forwards %q, want %q", name, seen.Load(), tc.wantForward)
		}
		if tc.wantType != "" && resp.Header.Get("Content-Type") != tc.wantType {
			t.Errorf("%s: Content-Type %q", name, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(b), tc.wantInBody) || (tc.wantNotInBod != "" && strings.Contains(string(b), tc.wantNotInBod)) {
			t.Errorf("%s: body %q", name, b)
		}
		if tc.method == "OPTIONS" && tc.wantHits == 0 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s: no Allow header", name)
		}
	}
}

// TestSmugglingDefences covers RFC 9112 §6.1: a request with both
// Content-Length and Transfer-Encoding is read by its chunked framing, and
// the connection is closed after it, so a request pipelined behind it never
// reaches the origin. Conflicting lengths and unknown codings are refused.
func TestSmugglingDefences(t *testing.T) {
	var paths []string
	var bodies []string
	hits := make(chan struct{}, 10)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		paths = append(paths, r.URL.Path)
		bodies = append(bodies, string(b))
		hits <- struct{}{}
	})
	tp := startProxy(t)
	host := o.Listener.Addr().String()

	c, br := tp.rawConn(t)
	mustWrite(t, c, "POST "+o.URL+"/first HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n0\r\n\r\n"+
		"GET "+o.URL+"/smuggled HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Error("response to a CL+TE request does not close the connection")
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Error("a second response arrived on the connection")
	}
	select {
	case <-hits:
	case <-time.After(10 * time.Second):
		t.Fatalf("the origin never saw the request (status %d)", resp.StatusCode)
	}
	time.Sleep(50 * time.Millisecond)
	if len(paths) != 1 || paths[0] != "/first" || bodies[0] != "hello" {
		t.Errorf("origin saw %q with bodies %q, want only /first with \"hello\"", paths, bodies)
	}

	for _, tc := range []struct{ name, headers string }{
		{"conflicting lengths", "Content-Length: 4\r\nContent-Length: 5\r\n"},
		{"unknown coding", "Transfer-Encoding: gzip, chunked\r\n"},
		{"bad length", "Content-Length: -1\r\n"},
	} {
		c, br := tp.rawConn(t)
		mustWrite(t, c, "POST "+o.URL+"/bad HTTP/1.1\r\nHost: "+host+"\r\n"+tc.headers+"\r\nabcd")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.StatusCode != 400 && resp.StatusCode != 501 {
			t.Errorf("%s: status %d, want 400 or 501", tc.name, resp.StatusCode)
		}
	}
	if len(paths) != 1 {
		t.Errorf("origin saw %q; refused requests must not be forwarded", paths)
	}
}

func TestErrorMapping(t *testing.T) {
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := closed.Addr().String()
	closed.Close()
	slow := origin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	tp := startProxy(t, WithResponseHeaderTimeout(200*time.Millisecond))
	c := tp.client(t, nil)
	for _, tc := range []struct {
		name, url  string
		status     int
		wantReason string
	}{
		{"refused", "http://" + refused + "/", 502, "refused"},
		{"response header timeout", slow.URL, 504, "timed out"},
		{"unsupported scheme", "ftp://" + refused + "/file", 400, "only http and https"},
		{"bad port", "http://127.0.0.1:99999/", 400, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tp.rawConn(t)
			mustWrite(t, c, "GET "+tc.url+" HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.wantReason) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, b, tc.status, tc.wantReason)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
		})
	}
	// Through Go's client too: the status reaches it.
	resp, _ := mustGet(t, c, "http://"+refused+"/")
	if resp.StatusCode != 502 {
		t.Errorf("Go client: status %d, want 502", resp.StatusCode)
	}
}

// TestUpstreamFailsMidBody: when the origin dies mid-body the client must
// see an error, not a clean short body.
func TestUpstreamFailsMidBody(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		o := origin(t, func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", "100000")
			}
			_, _ = w.Write(make([]byte, 5000))
			w.(http.Flusher).Flush()
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
		})
		resp, err := startProxy(t).client(t, nil).Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("chunked=%v: truncated body read without error", chunked)
		}
	}
}

// TestClientGoneCancelsUpstream: a client that disconnects cancels the
// upstream request.
func TestClientGoneCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	tp := startProxy(t)
	c, _ := tp.rawConn(t)
	mustWrite(t, c, "GET "+o.URL+" HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("origin request not cancelled after the client went away")
	}
}

func TestFallbackAndProxyRequests(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "origin "+r.URL.Path)
	})
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "fallback "+r.URL.Path)
	})
	with := startProxy(t, WithFallback(fallback))
	without := startProxy(t)
	for _, tc := range []struct {
		name   string
		tp     *testProxy
		line   string
		status int
		body   string
	}{
		{"origin-form to fallback", with, "GET /healthz HTTP/1.1", 200, "fallback /healthz"},
		{"proxied /health goes upstream", with, "GET " + o.URL + "/health HTTP/1.1", 200, "origin /health"},
		{"origin-form without fallback", without, "GET /healthz HTTP/1.1", 400, "forward proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tc.tp.rawConn(t)
			mustWrite(t, c, tc.line+"\r\nHost: "+tc.tp.Addr+"\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}

func TestLoopDetection(t *testing.T) {
	var hits atomic.Int32
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	tp := startProxy(t, WithVia("loopy"))
	c := tp.client(t, nil)
	resp, body := mustGet(t, c, "http://"+tp.Addr+"/")
	if resp.StatusCode != http.StatusLoopDetected {
		t.Errorf("request to the proxy's own address: %d %q, want 508", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", o.URL, nil)
	req.Header.Set("Via", "1.1 other, 1.1 loopy (fwdproxy)")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected || hits.Load() != 0 {
		t.Errorf("Via loop: status %d, origin hits %d; want 508 and 0", resp.StatusCode, hits.Load())
	}
}

func TestHooks(t *testing.T) {
	var seenHeader atomic.Value
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		seenHeader.Store(r.Header.Get("X-Added"))
		_, _ = io.WriteString(w, "from origin")
	})
	tp := startProxy(t,
		WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
			switch out.URL.Path {
			case "/local":
				return &http.Response{StatusCode: 203, Header: http.Header{"X-Local": {"1"}},
					Body: io.NopCloser(strings.NewReader("answered locally")), ContentLength: 16}, nil
			case "/blocked":
				return nil, Deny(http.StatusUnavailableForLegalReasons, "blocked by test hook")
			case "/plain-error":
				return nil, errors.New("nope")
			}
			out.Header.Set("X-Added", "by hook")
			return nil, nil
		}),
		WithResponseHook(func(ctx context.Context, resp *http.Response) error {
			if resp.Request.URL.Path == "/bad-response" {
				return errors.New("response rejected")
			}
			resp.Header.Set("X-Seen-By-Hook", resp.Request.URL.Path)
			if resp.Request.URL.Path == "/rewrite" {
				resp.Body = io.NopCloser(strings.NewReader("rewritten"))
				resp.ContentLength = -1
			}
			return nil
		}),
	)
	c := tp.client(t, nil)
	for _, tc := range []struct {
		path, body, hookHeader string
		status                 int
	}{
		{"/normal", "from origin", "/normal", 200},
		{"/local", "answered locally", "/local", 203},
		{"/blocked", "blocked by test hook\n", "", 451},
		{"/plain-error", "nope\n", "", 403},
		{"/bad-response", "response rejected\n", "", 502},
		{"/rewrite", "rewritten", "/rewrite", 200},
	} {
		resp, body := mustGet(t, c, o.URL+tc.path)
		if resp.StatusCode != tc.status || body != tc.body || resp.Header.Get("X-Seen-By-Hook") != tc.hookHeader {
			t.Errorf("%s: %d %q hook header %q; want %d %q %q", tc.path, resp.StatusCode, body,
				resp.Header.Get("X-Seen-By-Hook"), tc.status, tc.body, tc.hookHeader)
		}
	}
	if v, _ := seenHeader.Load().(string); v != "by hook" {
		t.Errorf("origin saw X-Added %q", v)
	}
}

// TestSharedTransport: many requests through the proxy reuse a few
// upstream connections rather than opening one each.
func TestSharedTransport(t *testing.T) {
	var conns atomic.Int32
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	o.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	c := startProxy(t).client(t, nil)
	for i := 0; i < 50; i++ {
		mustGet(t, c, o.URL)
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("origin saw %d connections for 50 sequential requests; want reuse", n)
	}
}

// TestHTTPSUpstream: an absolute-form https request is forwarded over TLS,
// with HTTP/2 negotiated by ALPN, and verified: without the origin's root
// the client gets 502 naming the verification failure.
func TestHTTPSUpstream(t *testing.T) {
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s via %s", r.Proto, r.Header.Get("Via"))
	}))
	o.EnableHTTP2 = true
	o.StartTLS()
	t.Cleanup(o.Close)
	roots := x509.NewCertPool()
	roots.AddCert(o.Certificate())
	for _, tc := range []struct {
		name   string
		opts   []Option
		status int
		body   string
	}{
		{"trusted", []Option{WithUpstreamRootCAs(roots), WithVia("tlsproxy")}, 200, "HTTP/2.0 via 1.1 tlsproxy"},
		{"untrusted", nil, 502, "failed verification"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, tc.opts...)
			c, br := tp.rawConn(t)
			mustWrite(t, c, "GET "+o.URL+"/ HTTP/1.1\r\nHost: "+o.Listener.Addr().String()+"\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}
