package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the loop's mechanics through real sockets, with a test handler
// in the proxy's place (the root package tests the loop with the Proxy
// behind it). Each speaks HTTP by hand so that it sees the bytes the loop
// sends, and tells the loop's answers from net/http's (after a hand-off) by
// counting the connections the loop holds.

// TestLoopKeepAlive: requests one after another and pipelined on one
// connection are all served by the loop, in order.
func TestLoopKeepAlive(t *testing.T) {
	ts := startServer(t, http.HandlerFunc(pathHandler), nil, nil)
	for _, tc := range []struct {
		name   string
		writes [][]string // paths; each inner list goes out in one write
	}{
		{"one after another", [][]string{{"/a"}, {"/b"}, {"/c"}, {"/d"}}},
		{"pipelined pair", [][]string{{"/first", "/second"}}},
		{"pipelined five, then one more", [][]string{{"/1", "/2", "/3", "/4", "/5"}, {"/6"}}},
		{"pipelined behind streamed responses", [][]string{{"/flush", "/trailer", "/cl", "/z"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := ts.rawConn(t)
			for _, paths := range tc.writes {
				var b strings.Builder
				for _, p := range paths {
					b.WriteString(rawGet(p, ""))
				}
				mustWrite(t, c, b.String())
				for _, p := range paths {
					r := readWire(t, br, "GET")
					want := "GET " + p
					switch p {
					case "/flush":
						want = "part1part2"
					case "/trailer":
						want = "body"
					case "/cl":
						want = "hello world"
					}
					if r.status != 200 || string(r.body) != want {
						t.Fatalf("response to %s: %d %q, want 200 %q", p, r.status, r.body, want)
					}
					if r.header.Get("Connection") == "close" {
						t.Fatalf("response to %s closes the connection", p)
					}
				}
				if n := ts.LoopConns(); n != 1 {
					t.Fatalf("the loop holds %d connections, want this one", n)
				}
			}
			c.Close()
			ts.wantLoopConns(t, 0)
			ts.wantOpenConns(t, 0)
		})
	}
}

// TestLoopMalformedLikeNetHTTP: whatever the loop does not take goes to
// net/http, whose answer the client gets.
func TestLoopMalformedLikeNetHTTP(t *testing.T) {
	var h hitCounter
	ref := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ref.Close)
	ts := startServer(t, &h, nil, nil)
	abs := "http://127.0.0.1:1/"
	for _, tc := range []struct{ name, req string }{
		{"bad Content-Length", "GET " + abs + " HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"},
		{"two Content-Lengths", "GET " + abs + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"unknown coding", "GET " + abs + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"HTTP/3.0", "GET " + abs + " HTTP/3.0\r\nHost: x\r\n\r\n"},
		{"no version", "GET " + abs + "\r\nHost: x\r\n\r\n"},
		{"space in a field name", "GET " + abs + " HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"},
		{"space before the colon", "GET " + abs + " HTTP/1.1\r\nHost : x\r\n\r\n"},
		{"NUL in a value", "GET " + abs + " HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"},
		{"bad method", "G(T " + abs + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"leading empty line", "\r\nGET " + abs + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"fold on the first field", "GET " + abs + " HTTP/1.1\r\n Host: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := rawStatus(t, ref.Listener.Addr().String(), tc.req)
			if want == 200 {
				t.Fatal("net/http accepts it")
			}
			before := h.hits.Load()
			got := rawStatus(t, ts.Addr, tc.req)
			if got != want {
				t.Errorf("got %d, net/http answers %d", got, want)
			}
			if h.hits.Load() != before {
				t.Error("the handler was reached")
			}
		})
	}
}

// headerOfSize returns a GET request for target whose header block,
// empty line included, is n bytes long.
func headerOfSize(t testing.TB, target string, n int) string {
	t.Helper()
	head := "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\nX-Pad: "
	pad := n - len(head) - len("\r\n\r\n")
	if pad < 0 {
		t.Fatalf("header block cannot be %d bytes", n)
	}
	return head + strings.Repeat("p", pad) + "\r\n\r\n"
}

// TestLoopHeaderSizes: a header block that fits the loop's 4 KiB buffer
// is served by the loop, a larger one by net/http, up to MaxHeaderBytes
// (which net/http enforces with 4 KiB of slack).
func TestLoopHeaderSizes(t *testing.T) {
	var h hitCounter
	target := "127.0.0.1:1"
	def := startServer(t, &h, nil, nil)
	small := startServer(t, &h, func(st *ServerSettings) { st.MaxHeaderBytes = 1024 }, nil)
	for _, tc := range []struct {
		name   string
		ts     *testServer
		size   int
		pieces int // written in this many parts, 10 ms apart
		status int
		loop   bool // served by the loop, not net/http
	}{
		{"3.9 KiB", def, 3994, 1, 200, true},
		{"3.9 KiB in pieces", def, 3994, 4, 200, true},
		{"4 KiB exactly", def, 4096, 1, 200, true},
		{"4 KiB and a byte", def, 4097, 1, 200, false},
		{"5 KiB", def, 5 << 10, 1, 200, false},
		{"5 KiB in pieces", def, 5 << 10, 3, 200, false},
		{"60 KiB", def, 60 << 10, 1, 200, false},
		{"limit 1 KiB, 1000 bytes", small, 1000, 1, 200, true},
		{"limit 1 KiB, 1 KiB exactly", small, 1024, 1, 200, true},
		{"limit 1 KiB, 2 KiB", small, 2 << 10, 1, 200, false},
		{"limit 1 KiB, 8 KiB", small, 8 << 10, 1, 431, false},
		{"limit 1 KiB, 8 KiB in pieces", small, 8 << 10, 3, 431, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := headerOfSize(t, target, tc.size)
			before := h.hits.Load()
			c, br := tc.ts.rawConn(t)
			for i := range tc.pieces {
				if i > 0 {
					time.Sleep(10 * time.Millisecond)
				}
				mustWrite(t, c, req[i*len(req)/tc.pieces:(i+1)*len(req)/tc.pieces])
			}
			r := readWire(t, br, "GET")
			if r.status != tc.status {
				t.Fatalf("got %d %q, want %d", r.status, r.body, tc.status)
			}
			wantHits := int64(0)
			if tc.status == 200 {
				wantHits = 1
			}
			if got := h.hits.Load() - before; got != wantHits {
				t.Errorf("handler reached %d times, want %d", got, wantHits)
			}
			if tc.status != 200 {
				return
			}
			n := 0
			if tc.loop {
				n = 1
			}
			tc.ts.wantLoopConns(t, n)
			// The connection goes on.
			mustWrite(t, c, "GET http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			if r := readWire(t, br, "GET"); r.status != 200 {
				t.Fatalf("next request: %d", r.status)
			}
		})
	}
}

// slowHandler answers /slow after 200 ms unless the request is cancelled
// first, and anything else at once.
type slowHandler struct {
	started chan struct{} // a /slow request arrived
	cancels atomic.Int32  // /slow requests cancelled
}

func newSlowHandler() *slowHandler { return &slowHandler{started: make(chan struct{}, 4)} }

func (sh *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/slow" {
		sh.started <- struct{}{}
		select {
		case <-r.Context().Done():
			sh.cancels.Add(1)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	_, _ = io.WriteString(w, "done "+r.URL.Path)
}

// watchClientAfter sets how long a request runs before the loop watches
// its client for a disconnect; the default is longer than tests wait.
func watchClientAfter(d time.Duration) func(*ServerSettings) {
	return func(st *ServerSettings) { st.ClientWatchDelay = d }
}

// TestLoopPipelinedNotCancelled: the client watch cancels a slow request
// when its client goes away, but not when the client sends its next
// request before the answer.
func TestLoopPipelinedNotCancelled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second string        // path, or "post" for a request net/http takes
		delay  time.Duration // before the second request is sent, once the first reached the handler; <0: in the same write
	}{
		{"same write", "/fast", -1},
		{"right after", "/fast", 0},
		{"once the watch runs", "/fast", 100 * time.Millisecond},
		{"two slow ones", "/slow", 100 * time.Millisecond},
		{"two slow ones in one write", "/slow", -1},
		{"a request net/http takes", "post", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sh := newSlowHandler()
			ts := startServer(t, sh, watchClientAfter(50*time.Millisecond), nil)
			slow := rawGet("/slow", "")
			second, path := rawGet(tc.second, ""), tc.second
			if tc.second == "post" {
				second = "POST http://" + originHost + "/post HTTP/1.1\r\nHost: " + originHost + "\r\nContent-Length: 2\r\n\r\nhi"
				path = "/post"
			}
			c, br := ts.rawConn(t)
			if tc.delay < 0 {
				mustWrite(t, c, slow+second)
				<-sh.started
			} else {
				mustWrite(t, c, slow)
				<-sh.started
				time.Sleep(tc.delay)
				mustWrite(t, c, second)
			}
			for _, p := range []string{"/slow", path} {
				r := readWire(t, br, "GET")
				if r.status != 200 || string(r.body) != "done "+p {
					t.Fatalf("response to %s: %d %q", p, r.status, r.body)
				}
			}
			if n := sh.cancels.Load(); n != 0 {
				t.Errorf("%d requests cancelled", n)
			}
		})
	}
	t.Run("client gone", func(t *testing.T) {
		t.Parallel()
		sh := newSlowHandler()
		ts := startServer(t, sh, watchClientAfter(50*time.Millisecond), nil)
		c, _ := ts.rawConn(t)
		mustWrite(t, c, rawGet("/slow", ""))
		<-sh.started
		c.Close()
		eventually(t, "the request cancelled", func() bool { return sh.cancels.Load() == 1 })
	})
}

// TestLoopTimeouts: the idle timeout ends a keep-alive connection that
// waits for its next request, the header timeout one that sends it too
// slowly; neither cuts a busy connection or a slow response.
func TestLoopTimeouts(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})
	idle := startServer(t, h, func(st *ServerSettings) {
		st.IdleTimeout, st.ReadHeaderTimeout = 300*time.Millisecond, 5*time.Second
	}, nil)
	header := startServer(t, h, func(st *ServerSettings) {
		st.ReadHeaderTimeout, st.IdleTimeout = 150*time.Millisecond, 5*time.Second
	}, nil)
	served := func(t *testing.T, c net.Conn, br *bufio.Reader, path string) {
		t.Helper()
		mustWrite(t, c, rawGet(path, ""))
		if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "done "+path {
			t.Fatalf("%s: %d %q", path, r.status, r.body)
		}
	}
	closedWithin := func(t *testing.T, c net.Conn, br *bufio.Reader, start time.Time, lo, hi time.Duration) {
		t.Helper()
		wantClosed(t, c, br)
		if d := time.Since(start); d < lo || d > hi {
			t.Errorf("closed after %v, want between %v and %v", d, lo, hi)
		}
	}
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		c, br := idle.rawConn(t)
		served(t, c, br, "/a")
		closedWithin(t, c, br, time.Now(), 200*time.Millisecond, 3*time.Second)
	})
	t.Run("busy connection outlives the idle timeout", func(t *testing.T) {
		t.Parallel()
		c, br := idle.rawConn(t)
		for start := time.Now(); time.Since(start) < 600*time.Millisecond; time.Sleep(40 * time.Millisecond) {
			served(t, c, br, "/busy")
		}
	})
	t.Run("header of a later request", func(t *testing.T) {
		t.Parallel()
		c, br := header.rawConn(t)
		served(t, c, br, "/a")
		time.Sleep(200 * time.Millisecond) // longer than the header timeout: idle time is not header time
		start := time.Now()
		mustWrite(t, c, "GET http://"+originHost+"/b HTTP/1.1\r\nHost: "+originHost+"\r\n")
		closedWithin(t, c, br, start, 50*time.Millisecond, 3*time.Second)
	})
	t.Run("slow response", func(t *testing.T) {
		t.Parallel()
		c, br := header.rawConn(t)
		served(t, c, br, "/slow")
		served(t, c, br, "/after")
	})
}
