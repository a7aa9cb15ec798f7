package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	c := &http.Client{Transport: newTestTransport(t, nil)}
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
		h, total := c.Transport.(*Transport).IdleConns(o.key())
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
	tr := newTestTransport(t, func(st *TransportSettings) {
		st.MaxIdleConnsPerHost, st.MaxIdleConns = 2, 3
		st.IdleConnTimeout = 2500 * time.Millisecond
	})
	c := &http.Client{Transport: tr}
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
		h1, total := tr.IdleConns(o1.key())
		h2, _ := tr.IdleConns(o2.key())
		return h1 <= 2 && h2 <= 2 && total == 3 && o1.closed.Load()+o2.closed.Load() == 2*n-3
	})
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("surplus idle connections closed after %v, want about 1 s", d)
	}
	// The idle ones expire.
	eventually(t, "idle timeout", func() bool {
		_, total := tr.IdleConns("")
		return total == 0 && o1.closed.Load()+o2.closed.Load() == 2*n
	})
	// And the pool works after it emptied itself.
	mustGet(t, c, o1.URL)
	eventually(t, "one idle connection", func() bool {
		_, total := tr.IdleConns("")
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
	tr := newTestTransport(t, nil)
	for _, method := range []string{"GET", "HEAD", "DELETE", "POST"} {
		t.Run(method, func(t *testing.T) {
			send := func() *http.Response {
				req, _ := http.NewRequest(method, o.URL+"/", nil)
				resp, err := tr.RoundTrip(req)
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
				h, _ := tr.IdleConns(o.key())
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
			c := &http.Client{Transport: newTestTransport(t, nil)}
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

// TestBodyAfterError: once a body has failed (origin gone mid-body) or
// been closed, further reads keep failing and never touch the pooled
// reader the body used, which another request may be using by then.
func TestBodyAfterError(t *testing.T) {
	o := newCountingOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 5000))
		w.(http.Flusher).Flush()
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	tr := newTestTransport(t, nil)
	for _, closeFirst := range []bool{false, true} {
		out, _ := http.NewRequest("GET", o.URL+"/", nil)
		out.Body = http.NoBody
		resp, err := tr.RoundTrip(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Body.(*Body); !ok {
			t.Fatalf("body is %T, want the Transport's", resp.Body)
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
	if h, _ := tr.IdleConns(o.key()); h != 0 {
		t.Errorf("%d idle connections after failed exchanges, want 0", h)
	}
}
