package fwdproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the own HTTP/1.1 transport behind the Proxy: what the client
// sees of it (the same request as http.Transport sends, 502 and 504 for its
// failures), and how the proxy ends its exchanges (a client gone, Shutdown).
// The transport's and the pool's mechanics alone are tested in internal/h1.

// idleConns reports the own transport's idle upstream connections to addr
// ("host:port") and in all.
func (p *Proxy) idleConns(addr string) (host, total int) { return p.cfg.Load().up.h1.IdleConns(addr) }

// countingOrigin is an httptest origin that counts the connections it
// accepted and those that were closed.
type countingOrigin struct {
	*httptest.Server
	opened, closed atomic.Int32
}

func newCountingOrigin(t testing.TB, h http.HandlerFunc) *countingOrigin {
	t.Helper()
	o := &countingOrigin{}
	o.Server = httptest.NewUnstartedServer(h)
	o.Config.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			o.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			o.closed.Add(1)
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

func (o *countingOrigin) key() string { return o.Listener.Addr().String() }

// TestFastPathSendsWhatTheTransportSends: the origin sees the same request
// from the fast path as from http.Transport (forced by
// WithProxyFromEnvironment; no proxy is set for loopback).
func TestFastPathSendsWhatTheTransportSends(t *testing.T) {
	type seen struct {
		Method, URI, Host, Proto string
		Header                   http.Header
		ContentLength            int64
		TE                       []string
	}
	got := make(chan seen, 1)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.RequestURI, r.Host, r.Proto, r.Header, r.ContentLength, r.TransferEncoding}
	})
	fast := startProxy(t, WithVia("same"))
	slow := startProxy(t, WithVia("same"), WithProxyFromEnvironment())
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
	}{
		{"GET", "GET", "/a?b=c&d", http.Header{"X-Multi": {"1", "2"}, "Accept": {"*/*"}}},
		{"GET without User-Agent", "GET", "/", http.Header{"User-Agent": nil}},
		{"GET with empty User-Agent", "GET", "/", http.Header{"User-Agent": {""}}},
		{"HEAD", "HEAD", "/h", nil},
		{"DELETE", "DELETE", "/d", http.Header{"Idempotency-Key": {"k1"}}},
		{"OPTIONS", "OPTIONS", "/o", nil},
		{"POST without body", "POST", "/p", nil},
		{"escaped path", "GET", "/a%2Fb/c%20d", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var views [2]seen
			for i, tp := range []*testProxy{fast, slow} {
				c, br := tp.rawConn(t)
				var b strings.Builder
				b.WriteString(tc.method + " " + o.URL + tc.path + " HTTP/1.1\r\nHost: " + o.Listener.Addr().String() + "\r\n")
				for k, vv := range tc.header {
					for _, v := range vv {
						b.WriteString(k + ": " + v + "\r\n")
					}
				}
				if _, ok := tc.header["User-Agent"]; !ok {
					b.WriteString("User-Agent: test-agent\r\n")
				}
				b.WriteString("\r\n")
				mustWrite(t, c, b.String())
				resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				select {
				case views[i] = <-got:
				case <-time.After(5 * time.Second):
					t.Fatal("origin saw no request")
				}
			}
			if !reflect.DeepEqual(views[0], views[1]) {
				t.Errorf("fast path sent\n%+v\ntransport sent\n%+v", views[0], views[1])
			}
		})
	}
}

// TestPoolStaleConnRetry: when the origin closes a reused connection on
// receiving the request, before any byte of response, a replayable request
// is retried once on a new connection; others fail with 502, as with
// http.Transport.
func TestPoolStaleConnRetry(t *testing.T) {
	for _, tc := range []struct {
		method, header string
		status         int
		conns          int32
	}{
		{"GET", "", 200, 2},
		{"HEAD", "", 200, 2},
		{"OPTIONS", "", 200, 2},
		{"DELETE", "Idempotency-Key: 1\r\n", 200, 2},
		{"DELETE", "", 502, 1},
		{"POST", "", 502, 1},
	} {
		t.Run(tc.method+" "+strings.TrimSpace(tc.header), func(t *testing.T) {
			var conns atomic.Int32
			u := rawOrigin(t, func(n int, c net.Conn, br *bufio.Reader) {
				conns.Add(1)
				for i := 0; ; i++ {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if n == 0 && i == 1 {
						return // closes as the second request arrives
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			tp := startProxy(t)
			c, br := tp.rawConn(t)
			for i := 0; i < 2; i++ {
				mustWrite(t, c, tc.method+" "+u+"/ HTTP/1.1\r\nHost: x\r\n"+tc.header+"\r\n")
				resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				want := 200
				if i == 1 {
					want = tc.status
				}
				if resp.StatusCode != want {
					t.Errorf("request %d: %d, want %d", i+1, resp.StatusCode, want)
				}
			}
			if n := conns.Load(); n != tc.conns {
				t.Errorf("origin saw %d connections, want %d", n, tc.conns)
			}
		})
	}
}

// rawOrigin serves each connection with serve, for responses that no
// well-behaved server sends.
func rawOrigin(t testing.TB, serve func(n int, c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// TestPoolBodyNotRead: a client that leaves before the body ends makes the
// proxy close the upstream connection instead of pooling or draining it.
func TestPoolBodyNotRead(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/small" {
				_, _ = io.WriteString(w, "small")
				return
			}
			if !chunked {
				w.Header().Set("Content-Length", "67108864")
			}
			buf := make([]byte, 64<<10)
			for i := 0; i < 1024; i++ {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		})
		tp := startProxy(t)
		c, br := tp.rawConn(t)
		mustWrite(t, c, "GET "+o.URL+"/big HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		eventually(t, "the upstream connection to be closed", func() bool { return o.closed.Load() == 1 })
		if h, _ := tp.idleConns(o.key()); h != 0 {
			t.Errorf("chunked=%v: %d idle connections, want 0", chunked, h)
		}
		_, body := mustGet(t, tp.client(t, nil), o.URL+"/small")
		if body != "small" || o.opened.Load() != 2 {
			t.Errorf("chunked=%v: next request got %q on %d connections", chunked, body, o.opened.Load())
		}
	}
}

// TestPoolTimeouts: the response header timeout covers the wait for the
// header only, answers 504 and drops the connection; a slow body is fine.
func TestPoolTimeouts(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-header":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		case "/slow-body":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "01234")
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
			_, _ = io.WriteString(w, "56789")
		}
	})
	tp := startProxy(t, WithResponseHeaderTimeout(200*time.Millisecond))
	c := tp.client(t, nil)
	resp, body := mustGet(t, c, o.URL+"/slow-header")
	if resp.StatusCode != 504 || !strings.Contains(body, "timed out") {
		t.Errorf("slow header: %d %q, want 504", resp.StatusCode, body)
	}
	eventually(t, "the timed-out connection to be closed", func() bool { return o.closed.Load() == 1 })
	resp, body = mustGet(t, c, o.URL+"/slow-body")
	if resp.StatusCode != 200 || body != "0123456789" {
		t.Errorf("slow body: %d %q", resp.StatusCode, body)
	}
}

// TestPoolCancelMidBody: a client that goes away while the origin holds the
// body open cancels the upstream read at once.
func TestPoolCancelMidBody(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		gone := make(chan struct{})
		o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", "1000000")
			}
			// Enough to get past every buffer on the way, so the client
			// sees the header.
			_, _ = w.Write(make([]byte, 64<<10))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				close(gone)
			case <-time.After(10 * time.Second):
			}
		})
		tp := startProxy(t)
		c, br := tp.rawConn(t)
		mustWrite(t, c, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(br, nil); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
			t.Fatalf("chunked=%v: upstream not closed after the client left mid-body", chunked)
		}
	}
}

// TestPoolClosedOnShutdown: Shutdown closes the idle upstream connections.
func TestPoolClosedOnShutdown(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()})}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-served
	eventually(t, "the idle upstream connection to be closed", func() bool { return o.closed.Load() == 1 })
}
