package fwdproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Relayed responses through Serve's loop: hook panics and answers, large
// bodies (spliced), header fields a hook breaks, and the upstream's header
// map adopted as the client's.

// TestLoopHandlerPanic: a panic while serving a request (here from a
// request hook) closes that client's connection without a response and
// leaves other connections alone; hooks' answers and refusals are framed
// like any response.
func TestLoopHandlerPanic(t *testing.T) {
	o, host := pathOrigin(t)
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})) // no access log
	tp := startProxy(t, WithLogger(logger), WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		switch out.URL.Path {
		case "/panic":
			panic("hook exploded")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/nil-map":
			var m map[string]int
			//lint:ignore SA5000 a runtime error, not a panic call, is what this case is about
			m["x"]++
		case "/status-0":
			return &http.Response{StatusCode: 0, Body: http.NoBody}, nil
		case "/hook":
			return &http.Response{StatusCode: 202, Header: http.Header{"X-Hook": {"yes"}}, ContentLength: -1,
				Body: io.NopCloser(strings.NewReader("from the hook"))}, nil
		case "/deny":
			return nil, Deny(429, "slow down")
		case "/short":
			return &http.Response{StatusCode: 200, ContentLength: 10, Body: io.NopCloser(strings.NewReader("short"))}, nil
		}
		return nil, nil
	}))
	bystander, bbr := tp.rawConn(t)
	roundTrip := func(when string) {
		t.Helper()
		mustWrite(t, bystander, rawGet(o, host, "/ok", ""))
		if r := readWire(t, bbr, "GET"); r.status != 200 || string(r.body) != "GET /ok" {
			t.Fatalf("bystander %s: %d %q", when, r.status, r.body)
		}
	}
	roundTrip("before")
	for _, tc := range []struct {
		path   string
		status int // 0: the connection is closed without a response
		body   string
		logged bool
		short  bool // the body is shorter than its Content-Length: closed after it
	}{
		{path: "/panic", logged: true},
		{path: "/abort"},
		{path: "/nil-map", logged: true},
		{path: "/status-0", logged: true},
		{path: "/hook", status: 202, body: "from the hook"},
		{path: "/deny", status: 429, body: "slow down"},
		{path: "/short", status: 200, body: "short", short: true},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			logBefore := strings.Count(buf.String(), "panic serving request")
			c, br := tp.rawConn(t)
			mustWrite(t, c, rawGet(o, host, tc.path, "")+rawGet(o, host, "/after", ""))
			switch {
			case tc.status == 0:
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
					t.Errorf("read %q, %v; want the connection closed without a response", b, err)
				}
			case tc.short:
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				if resp.ContentLength != 10 || string(b) != tc.body || err != io.ErrUnexpectedEOF {
					t.Errorf("got length %d, body %q, %v; want the connection closed after %q", resp.ContentLength, b, err, tc.body)
				}
			default:
				r := readWire(t, br, "GET")
				if r.status != tc.status || strings.TrimSpace(string(r.body)) != tc.body {
					t.Errorf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
				}
				if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "GET /after" {
					t.Errorf("pipelined request after it: %d %q", r.status, r.body)
				}
			}
			roundTrip("after " + tc.path)
			if tc.logged {
				eventually(t, "the panic logged", func() bool {
					return strings.Count(buf.String(), "panic serving request") > logBefore
				})
			} else if strings.Count(buf.String(), "panic serving request") > logBefore {
				t.Errorf("logged a panic: %s", buf.String())
			}
			c.Close()
			wantOpenConns(t, tp.Proxy, 1) // the bystander
		})
	}
}

// TestLoopLargeBody: a 1 MiB body crosses the loop intact, whether its
// length is known (spliced on Linux) or not, and the connection stays in
// step after it.
func TestLoopLargeBody(t *testing.T) {
	const size = 1 << 20
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = io.Copy(w, newPattern(7, size))
	})
	host := o.Listener.Addr().String()
	short := rawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		_, _ = io.Copy(c, newPattern(7, size/2))
	})
	_, want, _ := sum(newPattern(7, size))
	var logBuf syncBuffer
	logged := startProxy(t, WithLogger(slog.New(slog.NewJSONHandler(&logBuf, nil))))
	plain := startProxy(t)
	for _, tc := range []struct {
		name    string
		tp      *testProxy
		query   string
		proto   string
		chunked bool
	}{
		{"content-length", plain, "", "HTTP/1.1", false},
		{"content-length, access log on", logged, "", "HTTP/1.1", false},
		{"chunked", plain, "?chunked=1", "HTTP/1.1", true},
		{"chunked, access log on", logged, "?chunked=1", "HTTP/1.1", true},
		{"content-length, HTTP/1.0", plain, "", "HTTP/1.0", false},
		{"unknown length, HTTP/1.0", plain, "?chunked=1", "HTTP/1.0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tc.tp.rawConn(t)
			keep := ""
			if tc.proto == "HTTP/1.0" {
				keep = "Connection: keep-alive\r\n"
			}
			req := "GET " + o.URL + "/" + tc.query + " " + tc.proto + "\r\nHost: " + host + "\r\n" + keep + "\r\n"
			mustWrite(t, c, req+req)
			r := readWire(t, br, "GET")
			n, s, _ := sum(bytes.NewReader(r.body))
			if r.status != 200 || n != size || s != want {
				t.Fatalf("got %d, %d bytes, checksum match %v", r.status, n, s == want)
			}
			if r.chunked != tc.chunked {
				t.Errorf("chunked = %v", r.chunked)
			}
			if r.toEOF {
				if tc.query == "" {
					t.Error("a body of known length delimited by closing the connection")
				}
				return
			}
			if r := readWire(t, br, "GET"); r.status != 200 || len(r.body) != size {
				t.Fatalf("second response: %d, %d bytes", r.status, len(r.body))
			}
			if tc.tp == logged {
				recs := records(t, &logBuf, "request", 2)
				for _, rec := range recs[len(recs)-2:] {
					if rec["bytes_out"] != float64(size) {
						t.Errorf("access log bytes_out = %v, want %d", rec["bytes_out"], size)
					}
				}
				logBuf.Reset()
			}
		})
	}
	t.Run("origin cuts it short", func(t *testing.T) {
		c, br := plain.rawConn(t)
		mustWrite(t, c, get(strings.TrimPrefix(short, "http://")))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil || n >= size {
			t.Errorf("read %d bytes, %v; want the connection cut short", n, err)
		}
		wantClosed(t, c, br)
	})
}

// TestLoopHeaderFieldsSanitized: header fields a hook puts in a response
// cannot break the response's framing: values with CR or LF are flattened
// and fields whose name is not a token are dropped, as net/http does.
func TestLoopHeaderFieldsSanitized(t *testing.T) {
	o, host := pathOrigin(t)
	tp := startProxy(t, WithResponseHook(func(ctx context.Context, resp *http.Response) error {
		resp.Header["X-Value"] = []string{"a\r\nX-Injected-By-Value: 1"}
		resp.Header["X-Name\r\nX-Injected-By-Name"] = []string{"2"}
		resp.Header["Bad Name"] = []string{"3"}
		resp.Header["X-Colon:"] = []string{"4"}
		return nil
	}))
	for _, tc := range []struct{ name, req, body string }{
		{
			name: "net/http", body: "POST 1 x",
			req: "POST " + o + "/echo HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 1\r\n\r\nx",
		},
		{name: "loop", req: rawGet(o, host, "/cl", ""), body: "hello world"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tp.rawConn(t)
			mustWrite(t, c, tc.req+rawGet(o, host, "/next", ""))
			tpr := textproto.NewReader(br)
			var lines []string
			for {
				line, err := tpr.ReadLine()
				if err != nil {
					t.Fatal(err)
				}
				if line == "" {
					break
				}
				lines = append(lines, line)
			}
			var cl int
			for _, line := range lines[1:] {
				name, value, ok := strings.Cut(line, ":")
				if !ok || strings.ContainsAny(name, " \t") || strings.HasPrefix(line, "X-Injected") || strings.HasPrefix(line, "X-Colon") {
					t.Errorf("header line %q", line)
				}
				if name == "X-Value" && !strings.HasPrefix(strings.TrimSpace(value), "a ") {
					t.Errorf("X-Value: %q", value)
				}
				if name == "Content-Length" {
					cl, _ = strconv.Atoi(strings.TrimSpace(value))
				}
			}
			body := make([]byte, cl)
			if _, err := io.ReadFull(br, body); err != nil || string(body) != tc.body {
				t.Fatalf("body %q, %v; header %q", body, err, lines)
			}
			if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "GET /next" {
				t.Fatalf("next response: %d %q", r.status, r.body)
			}
		})
	}
}

// TestLoopResponseHeaderAdopted checks that a relayed response's header is
// filtered the same whether the loop's writer takes the upstream's map as
// its own (a plain GET) or the fields are copied into a writer's map (the
// same proxy mounted on an http.Server, and a request whose handling set a
// header first), and that the map is adopted only while the writer's
// header is untouched.
func TestLoopResponseHeaderAdopted(t *testing.T) {
	var mu sync.Mutex
	var upVia [][]string // the Via each request reached the origin with
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upVia = append(upVia, r.Header["Via"])
		mu.Unlock()
		h := w.Header()
		h["Set-Cookie"] = []string{"a=1", "b=2"}
		h["Connection"] = []string{"X-Hop, Via"}
		h["X-Hop"] = []string{"secret"}
		h["Keep-Alive"] = []string{"timeout=5"}
		h["Via"] = []string{"1.1 origin-side"}
		h["X-End"] = []string{"kept"}
		_, _ = io.WriteString(w, "body")
	})
	tp := startProxy(t, WithVia("adopt"))
	mounted := httptest.NewServer(tp.Proxy)
	t.Cleanup(mounted.Close)
	mountedURL, _ := url.Parse(mounted.URL)

	get := func(proxy *url.URL, chunked bool) http.Header {
		t.Helper()
		tr := &http.Transport{Proxy: http.ProxyURL(proxy), DisableCompression: true}
		defer tr.CloseIdleConnections()
		var body io.Reader
		if chunked {
			body = io.MultiReader(strings.NewReader("x")) // unknown length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, o.URL+"/", body)
		if !chunked {
			req.Method = http.MethodGet
		}
		// Connection names Via: the client's Via is hop-by-hop and stays behind.
		req.Header["Connection"] = []string{"Via"}
		req.Header["Via"] = []string{"1.1 client-side"}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); string(b) != "body" {
			t.Fatalf("body %q", b)
		}
		h := resp.Header.Clone()
		delete(h, "Date")
		return h
	}
	want := http.Header{
		"Set-Cookie":     {"a=1", "b=2"},
		"X-End":          {"kept"},
		"Via":            {"1.1 adopt"},
		"Content-Length": {"4"},
		"Content-Type":   {"text/plain; charset=utf-8"},
	}
	loop := get(tp.URL, false)
	if !reflect.DeepEqual(loop, want) {
		t.Errorf("through the loop: %v\nwant %v", loop, want)
	}
	if h := get(mountedURL, false); !reflect.DeepEqual(h, loop) {
		t.Errorf("mounted on an http.Server: %v\nthe loop: %v", h, loop)
	}
	// A chunked request goes to net/http with Connection: close set first.
	chunked := get(tp.URL, true)
	delete(chunked, "Connection")
	if !reflect.DeepEqual(chunked, loop) {
		t.Errorf("chunked request: %v\nthe loop: %v", chunked, loop)
	}
	mu.Lock()
	for i, v := range upVia {
		if !reflect.DeepEqual(v, []string{"1.1 adopt"}) {
			t.Errorf("request %d reached the origin with Via %q, want only the proxy's", i, v)
		}
	}
	mu.Unlock()

	// The loop's writer adopts only while its header is untouched
	// (internal/h1's TestResponseAdoptHeader); the request state around a
	// writer passes the call on, and refuses for one that cannot adopt.
	for _, tc := range []struct {
		name  string
		rw    http.ResponseWriter
		h     http.Header
		adopt bool
	}{
		{"adopting writer", &adoptingWriter{ok: true}, http.Header{}, true},
		{"writer refuses", &adoptingWriter{ok: false}, http.Header{}, false},
		{"plain writer", httptest.NewRecorder(), http.Header{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &reqState{rw: tc.rw}
			if got := rs.AdoptHeader(tc.h); got != tc.adopt {
				t.Errorf("AdoptHeader = %v, want %v", got, tc.adopt)
			}
			if a, ok := tc.rw.(*adoptingWriter); ok && a.calls != 1 {
				t.Errorf("the writer was asked %d times, want once", a.calls)
			}
		})
	}
}

// adoptingWriter is an h1.HeaderAdopter that answers ok.
type adoptingWriter struct {
	httptest.ResponseRecorder
	ok    bool
	calls int
}

func (w *adoptingWriter) AdoptHeader(http.Header) bool { w.calls++; return w.ok }
