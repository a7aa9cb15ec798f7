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

	"github.com/fwdproxy/fwdproxy/internal/h1"
)

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

// eventually polls cond until it holds or 5 s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

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

// TestPoolReuse: sequential requests of every bodyless kind share one
// upstream connection, which stays in the pool.
func TestPoolReuse(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		case "/empty":
			w.Header().Set("Content-Length", "0")
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			for i := 0; i < 3; i++ {
				_, _ = io.WriteString(w, "chunk ")
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Sum", "3")
		case "/big":
			_, _ = w.Write(make([]byte, 1<<20))
		default:
			_, _ = io.WriteString(w, "hello")
		}
	})
	tp := startProxy(t)
	c := tp.client(t, nil)
	paths := []string{"/", "/204", "/304", "/empty", "/chunked", "/big", "/", "/chunked"}
	for i := 0; i < 3; i++ {
		for _, path := range paths {
			resp, body := mustGet(t, c, o.URL+path)
			if resp.StatusCode >= 400 {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
			switch path {
			case "/chunked":
				if body != "chunk chunk chunk " || resp.Trailer.Get("X-Sum") != "3" {
					t.Errorf("chunked: %q, trailer %q", body, resp.Trailer.Get("X-Sum"))
				}
			case "/big":
				if len(body) != 1<<20 {
					t.Errorf("big: %d bytes", len(body))
				}
			}
		}
		req, _ := http.NewRequest("HEAD", o.URL+"/big", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := o.opened.Load(); n != 1 {
		t.Errorf("origin saw %d connections for %d sequential requests; want 1", n, 3*(len(paths)+1))
	}
	eventually(t, "the connection to be idle", func() bool {
		h, total := tp.idleConns(o.key())
		return h == 1 && total == 1
	})
}

// TestPoolIdleLimits: connections in use are not limited; idle ones are,
// per host and in total: a burst beyond the limits is kept while it is
// reused, trimmed once it has sat unused for the trim delay (here 1 s), and
// idle connections expire.
func TestPoolIdleLimits(t *testing.T) {
	const n = 6
	var release chan struct{}
	var arrived sync.WaitGroup
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			arrived.Done()
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}
	o1, o2 := newCountingOrigin(t, h), newCountingOrigin(t, h)
	tp := startProxy(t, WithMaxIdleConns(2, 3), WithIdleConnTimeout(2500*time.Millisecond))
	c := tp.client(t, nil)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = n
	burst := func() {
		t.Helper()
		release = make(chan struct{})
		arrived.Add(2 * n)
		var done sync.WaitGroup
		for _, o := range []*countingOrigin{o1, o2} {
			for i := 0; i < n; i++ {
				done.Add(1)
				go func() {
					defer done.Done()
					resp, err := c.Get(o.URL + "/wait")
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
		}
		arrived.Wait()
		if a, b := o1.opened.Load(), o2.opened.Load(); a != n || b != n {
			t.Errorf("in use at once: %d and %d connections, want %d each (no limit on busy ones, reuse of idle ones)", a, b, n)
		}
		close(release)
		done.Wait()
	}
	burst()
	// At once a second burst: every connection is reused, none redialed.
	burst()
	start := time.Now()
	eventually(t, "idle limits", func() bool {
		h1, total := tp.idleConns(o1.key())
		h2, _ := tp.idleConns(o2.key())
		return h1 <= 2 && h2 <= 2 && total == 3 && o1.closed.Load()+o2.closed.Load() == 2*n-3
	})
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("surplus idle connections closed after %v, want about 1 s", d)
	}
	// The idle ones expire.
	eventually(t, "idle timeout", func() bool {
		_, total := tp.idleConns("")
		return total == 0 && o1.closed.Load()+o2.closed.Load() == 2*n
	})
	// And the pool works after it emptied itself.
	mustGet(t, c, o1.URL)
	eventually(t, "one idle connection", func() bool {
		_, total := tp.idleConns("")
		return total == 1
	})
}

// TestPoolIdleClosedByOrigin: a pooled connection that the origin closed
// while it was idle is noticed before use, so every request, replayable or
// not, goes out on a new connection.
func TestPoolIdleClosedByOrigin(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Method)
	})
	tp := startProxy(t)
	for _, method := range []string{"GET", "HEAD", "DELETE", "POST"} {
		t.Run(method, func(t *testing.T) {
			c, br := tp.rawConn(t)
			send := func() *http.Response {
				mustWrite(t, c, method+" "+o.URL+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp
			}
			if resp := send(); resp.StatusCode != 200 {
				t.Fatalf("first request: %d", resp.StatusCode)
			}
			eventually(t, "an idle upstream connection", func() bool {
				h, _ := tp.idleConns(o.key())
				return h == 1
			})
			opened, closed := o.opened.Load(), o.closed.Load()
			o.CloseClientConnections()
			eventually(t, "the origin to close it", func() bool { return o.closed.Load() == closed+1 })
			time.Sleep(20 * time.Millisecond) // let the FIN arrive
			if resp := send(); resp.StatusCode != 200 {
				t.Errorf("after the origin closed the idle connection: %d, want 200", resp.StatusCode)
			}
			if got := o.opened.Load() - opened; got != 1 {
				t.Errorf("%d new connections, want 1", got)
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

// TestPoolNeverReusesUnsafely: a connection is closed, not pooled, when
// the origin sent more than one response, asked to close, or the body was
// cut short; the next request then gets its own response.
func TestPoolNeverReusesUnsafely(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first string
		late  string // sent 50 ms after first
	}{
		{"body behind a 204, late", "HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"},
		{"body behind a 304, late", "HTTP/1.1 304 Not Modified\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"},
		{"extra response behind the first", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", ""},
		{"extra bytes behind a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", ""},
		{"extra bytes behind a 204", "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", ""},
		{"Connection: close", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfirst", ""},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nfirst", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns atomic.Int32
			u := rawOrigin(t, func(n int, c net.Conn, br *bufio.Reader) {
				conns.Add(1)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if n == 0 && i == 0 {
						_, _ = io.WriteString(c, tc.first)
						if tc.late != "" {
							time.Sleep(50 * time.Millisecond)
							_, _ = io.WriteString(c, tc.late)
						}
					} else {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
					}
				}
			})
			tp := startProxy(t)
			c := tp.client(t, nil)
			resp, _ := mustGet(t, c, u+"/1")
			if resp.StatusCode/100 != 2 && resp.StatusCode != 304 {
				t.Fatalf("first: %d", resp.StatusCode)
			}
			if tc.late != "" {
				time.Sleep(150 * time.Millisecond)
			}
			resp, body := mustGet(t, c, u+"/2")
			if body != "second" {
				t.Errorf("second request got %d %q, want \"second\"", resp.StatusCode, body)
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("origin saw %d connections, want 2", n)
			}
		})
	}
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

// TestH1BodyAfterError: once a body has failed (origin gone mid-body) or
// been closed, further reads keep failing and never touch the pooled
// reader the body used, which another request may be using by then.
func TestH1BodyAfterError(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 5000))
		w.(http.Flusher).Flush()
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	for _, closeFirst := range []bool{false, true} {
		out, _ := http.NewRequest("GET", o.URL+"/", nil)
		out.Body = http.NoBody
		resp, err := p.roundTrip(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Body.(*h1.Body); !ok {
			t.Fatalf("body is %T, want the fast path's", resp.Body)
		}
		var first error
		if closeFirst {
			resp.Body.Close()
		} else {
			_, first = io.ReadAll(resp.Body)
			if first == nil {
				t.Fatal("truncated body read without error")
			}
		}
		for i := 0; i < 3; i++ {
			if n, err := resp.Body.Read(make([]byte, 10)); n != 0 || err == nil || err == io.EOF {
				t.Errorf("closeFirst=%v: read after the end = %d, %v; want 0 and an error", closeFirst, n, err)
			}
		}
		resp.Body.Close()
	}
	if h, _ := p.idleConns(o.key()); h != 0 {
		t.Errorf("%d idle connections after failed exchanges, want 0", h)
	}
}
