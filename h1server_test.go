package fwdproxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
)

// Tests of Serve's own HTTP/1.1 loop (internal/h1), through real sockets.
// Each speaks HTTP by hand so that it sees the bytes the loop sends, and
// tells the loop's answers from net/http's (after a hand-off) by counting
// the connections the loop holds.

// loopConns counts the client connections p's loops hold now: open ones
// not handed off to net/http, hijacked or closed.
func loopConns(p *Proxy) int {
	p.mu.Lock()
	loops := make([]*h1.Server, 0, len(p.loops))
	for s := range p.loops {
		loops = append(loops, s)
	}
	p.mu.Unlock()
	n := 0
	for _, s := range loops {
		n += s.LoopConns()
	}
	return n
}

// wantLoopConns waits until p's loops hold n connections.
func wantLoopConns(t testing.TB, p *Proxy, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d connections in the loop (have %d)", n, loopConns(p)), func() bool { return loopConns(p) == n })
}

// wantOpenConns waits until p counts n open client connections.
func wantOpenConns(t testing.TB, p *Proxy, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d open client connections (have %d)", n, p.conns.Load()), func() bool { return p.conns.Load() == n })
}

// wireResponse is a response as it came over the wire.
type wireResponse struct {
	proto   string
	status  int
	header  textproto.MIMEHeader // every field as sent, Transfer-Encoding and repeats included
	body    []byte
	chunked bool
	toEOF   bool // no length: the body ended with the connection
	trailer textproto.MIMEHeader
}

// readWire reads one response to a request with the given method off br,
// framing the body as the header says, strictly.
func readWire(t testing.TB, br *bufio.Reader, method string) *wireResponse {
	t.Helper()
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("reading the status line: %v", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if err != nil || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
		t.Fatalf("bad status line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("reading the header after %q: %v", line, err)
	}
	r := &wireResponse{proto: proto, status: status, header: h}
	te, cl := h.Values("Transfer-Encoding"), h.Values("Content-Length")
	if len(te) > 0 && len(cl) > 0 {
		t.Fatalf("response has both Transfer-Encoding %q and Content-Length %q", te, cl)
	}
	if len(cl) > 1 {
		t.Fatalf("response has %d Content-Length fields: %q", len(cl), cl)
	}
	switch {
	case method == http.MethodHead || status == 204 || status == 304 || status/100 == 1:
	case len(te) > 0:
		if len(te) != 1 || te[0] != "chunked" || proto != "HTTP/1.1" {
			t.Fatalf("%s response with Transfer-Encoding %q", proto, te)
		}
		r.chunked = true
		for {
			line, err := tp.ReadLine()
			if err != nil {
				t.Fatalf("reading a chunk size: %v", err)
			}
			n, err := strconv.ParseUint(line, 16, 31)
			if err != nil {
				t.Fatalf("bad chunk size line %q", line)
			}
			if n == 0 {
				if r.trailer, err = tp.ReadMIMEHeader(); err != nil {
					t.Fatalf("reading the trailer: %v", err)
				}
				break
			}
			chunk := make([]byte, n+2)
			if _, err := io.ReadFull(br, chunk); err != nil {
				t.Fatalf("reading a chunk of %d bytes: %v", n, err)
			}
			if !bytes.HasSuffix(chunk, []byte("\r\n")) {
				t.Fatalf("chunk of %d bytes not followed by CRLF", n)
			}
			r.body = append(r.body, chunk[:n]...)
		}
	case len(cl) == 1:
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 {
			t.Fatalf("bad Content-Length %q", cl[0])
		}
		r.body = make([]byte, n)
		if _, err := io.ReadFull(br, r.body); err != nil {
			t.Fatalf("reading a body of %d bytes: %v", n, err)
		}
	default:
		r.toEOF = true
		if r.body, err = io.ReadAll(br); err != nil {
			t.Fatalf("reading a body to the end of the connection: %v", err)
		}
	}
	return r
}

// wantClosed checks that the proxy closed c (after what br already holds
// was read).
func wantClosed(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := br.ReadByte()
	if err == nil {
		t.Fatalf("connection still open: read %q", b)
	}
	if isTimeout(err) {
		t.Fatal("connection still open 5 s later")
	}
}

// pathOrigin answers with the request's path, or what the test asks for
// at a few paths.
func pathOrigin(t testing.TB) (o string, host string) {
	t.Helper()
	s := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cl":
			w.Header().Set("Content-Length", "11")
			_, _ = io.WriteString(w, "hello world")
		case "/flush":
			_, _ = io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
		case "/head":
			w.Header().Set("Content-Length", "1000")
			if r.Method != http.MethodHead {
				_, _ = w.Write(make([]byte, 1000))
			}
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(304)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "s1")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s %d %s", r.Method, len(b), b)
		default:
			_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
		}
	})
	return s.URL, s.Listener.Addr().String()
}

func rawGet(o, host, path, extra string) string {
	return "GET " + o + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "\r\n"
}

// TestLoopKeepAlive: requests one after another and pipelined on one
// connection are all served by the loop, in order.
func TestLoopKeepAlive(t *testing.T) {
	o, host := pathOrigin(t)
	tp := startProxy(t)
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
			c, br := tp.rawConn(t)
			for _, paths := range tc.writes {
				var b strings.Builder
				for _, p := range paths {
					b.WriteString(rawGet(o, host, p, ""))
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
				if n := loopConns(tp.Proxy); n != 1 {
					t.Fatalf("the loop holds %d connections, want this one", n)
				}
			}
			c.Close()
			wantLoopConns(t, tp.Proxy, 0)
			wantOpenConns(t, tp.Proxy, 0)
		})
	}
}

// TestLoopHandoffMidConnection: a request the loop does not take, between
// two it does, is handed with the bytes already read to net/http, which
// serves the rest of the connection.
func TestLoopHandoffMidConnection(t *testing.T) {
	o, host := pathOrigin(t)
	tp := startProxy(t)
	big := strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB: beyond any buffer
	post := func(body string) string {
		return "POST " + o + "/echo HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	chunked := "POST " + o + "/echo HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
	for _, tc := range []struct {
		name      string
		handoff   string // the request net/http takes
		wantBody  string // the origin's echo of it
		pipelined bool
		closes    bool // the proxy closes the connection after it
		loop      bool // not handed off after all
	}{
		{name: "small body", handoff: post("hello world"), wantBody: "POST 11 hello world"},
		{name: "small body pipelined", handoff: post("hello world"), wantBody: "POST 11 hello world", pipelined: true},
		{name: "large body", handoff: post(big), wantBody: "POST 262144 " + big},
		{name: "large body pipelined", handoff: post(big), wantBody: "POST 262144 " + big, pipelined: true},
		// A chunked request closes the connection (TestSmugglingDefences).
		{name: "chunked body pipelined", handoff: chunked, wantBody: "POST 11 hello world", pipelined: true, closes: true},
		{name: "expect", handoff: "GET " + o + "/x HTTP/1.1\r\nHost: " + host + "\r\nExpect: 100-continue\r\n\r\n", wantBody: "GET /x"},
		{name: "upgrade the origin ignores", handoff: "GET " + o + "/u HTTP/1.1\r\nHost: " + host + "\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n", wantBody: "GET /u"},
		{name: "empty body: the loop's", handoff: post(""), wantBody: "POST 0 ", loop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tp.rawConn(t)
			steps := []string{rawGet(o, host, "/before", ""), tc.handoff, rawGet(o, host, "/after", "")}
			wants := []string{"GET /before", tc.wantBody, "GET /after"}
			if tc.pipelined {
				mustWrite(t, c, strings.Join(steps, ""))
			}
			for i, step := range steps {
				if !tc.pipelined {
					mustWrite(t, c, step)
				}
				r := readWire(t, br, "GET")
				if r.status == 100 {
					r = readWire(t, br, "GET")
				}
				if r.status != 200 || string(r.body) != wants[i] {
					t.Fatalf("response %d: %d %.80q, want 200 %.80q", i, r.status, r.body, wants[i])
				}
				if i == 1 && tc.closes {
					wantClosed(t, c, br)
					return
				}
				if !tc.pipelined {
					want := 1 // served by the loop, then by net/http
					if i > 0 && !tc.loop {
						want = 0
					}
					wantLoopConns(t, tp.Proxy, want)
				}
			}
			wantOpenConns(t, tp.Proxy, 1)
			c.Close()
			wantOpenConns(t, tp.Proxy, 0)
		})
	}
}

// TestLoopOriginForm: origin-form requests are handed off, so that a
// fallback handler may do anything; without one they get 400.
func TestLoopOriginForm(t *testing.T) {
	o, host := pathOrigin(t)
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "fallback "+r.Method+" "+r.URL.Path+" "+string(b))
	})
	with := startProxy(t, WithFallback(fallback))
	without := startProxy(t)
	for _, tc := range []struct {
		name   string
		tp     *testProxy
		req    string
		status int
		body   string
		last   bool // the connection ends after it
	}{
		{"GET with fallback", with, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "fallback GET /healthz ", false},
		{"POST with fallback", with, "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 200, "fallback POST /form abc", false},
		{"HTTP/1.0 with fallback", with, "GET /v HTTP/1.0\r\n\r\n", 200, "fallback GET /v ", true},
		{"GET without fallback", without, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "forward proxy", false},
		{"OPTIONS * (net/http's own answer)", without, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, "", false},
		// The HTTP/2 preface is not the loop's either; this server does not
		// speak HTTP/2 in clear, and the rest of the preface is garbage.
		{"HTTP/2 preface", without, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "forward proxy", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tc.tp.rawConn(t)
			mustWrite(t, c, tc.req)
			r := readWire(t, br, "GET")
			if r.status != tc.status || !strings.Contains(string(r.body), tc.body) {
				t.Fatalf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
			}
			wantLoopConns(t, tc.tp.Proxy, 0) // net/http has it
			if tc.last {
				return
			}
			// The connection goes on, proxy requests included.
			mustWrite(t, c, rawGet(o, host, "/next", ""))
			if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "GET /next" {
				t.Fatalf("proxy request after it: %d %q", r.status, r.body)
			}
		})
	}
}

// TestLoopFraming: how srvResponse frames each kind of response body, and
// that the connection stays usable after each.
func TestLoopFraming(t *testing.T) {
	o, host := pathOrigin(t)
	tp := startProxy(t, WithDenyHosts("denied.test"))
	denied := "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n"
	for _, tc := range []struct {
		name    string
		method  string
		req     string
		status  int
		cl      string // the Content-Length field; "" for none, "-" for the body's length
		chunked bool
		body    string
		trailer map[string]string
		header  map[string]string
	}{
		{name: "origin's Content-Length", req: rawGet(o, host, "/cl", ""), status: 200, cl: "11", body: "hello world"},
		{name: "unknown length, streamed", req: rawGet(o, host, "/flush", ""), status: 200, chunked: true, body: "part1part2"},
		{name: "proxy error: length computed", req: denied, status: 403, cl: "-", body: "access denied"},
		{name: "HEAD keeps Content-Length", method: "HEAD", req: "HEAD " + o + "/head HTTP/1.1\r\nHost: " + host + "\r\n\r\n", status: 200, cl: "1000"},
		{name: "204", req: rawGet(o, host, "/204", ""), status: 204},
		{name: "304", req: rawGet(o, host, "/304", ""), status: 304, header: map[string]string{"Etag": `"v1"`}},
		{
			name: "trailers", req: rawGet(o, host, "/trailer", ""), status: 200, chunked: true, body: "body",
			header:  map[string]string{"Trailer": "X-Sum"},
			trailer: map[string]string{"X-Sum": "s1", "X-Late": "late"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := cmp.Or(tc.method, "GET")
			c, br := tp.rawConn(t)
			// The next request rides behind: it is answered only if this
			// response was framed right.
			mustWrite(t, c, tc.req+rawGet(o, host, "/next", ""))
			r := readWire(t, br, method)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.body) || (tc.body == "" && len(r.body) > 0) {
				t.Errorf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
			}
			switch cl := r.header.Get("Content-Length"); {
			case tc.cl == "-" && cl != strconv.Itoa(len(r.body)):
				t.Errorf("Content-Length %q for a body of %d bytes", cl, len(r.body))
			case tc.cl != "-" && cl != tc.cl:
				t.Errorf("Content-Length %q, want %q", cl, tc.cl)
			}
			if r.chunked != tc.chunked || r.toEOF {
				t.Errorf("chunked %v, to EOF %v; want chunked %v", r.chunked, r.toEOF, tc.chunked)
			}
			if _, err := http.ParseTime(r.header.Get("Date")); err != nil {
				t.Errorf("Date %q: %v", r.header.Get("Date"), err)
			}
			if r.header.Get("Via") == "" {
				t.Error("no Via")
			}
			for k, v := range tc.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			for k, v := range tc.trailer {
				if got := r.trailer.Get(k); got != v {
					t.Errorf("trailer %s: %q, want %q (trailer %v)", k, got, v, r.trailer)
				}
			}
			if len(tc.trailer) == 0 && len(r.trailer) > 0 {
				t.Errorf("unexpected trailer %v", r.trailer)
			}
			if next := readWire(t, br, "GET"); next.status != 200 || string(next.body) != "GET /next" {
				t.Fatalf("next response: %d %q", next.status, next.body)
			}
			if n := loopConns(tp.Proxy); n != 1 {
				t.Errorf("the loop holds %d connections, want this one", n)
			}
			c.Close()
			wantLoopConns(t, tp.Proxy, 0)
		})
	}
}

// TestLoopHTTP10: HTTP/1.0 clients get HTTP/1.0 responses, keep-alive
// only when they ask for it and the body has a length, and a body of
// unknown length ended by closing the connection.
func TestLoopHTTP10(t *testing.T) {
	o, host := pathOrigin(t)
	tp := startProxy(t, WithDenyHosts("denied.test"))
	for _, tc := range []struct {
		name      string
		path      string // on the origin, or a full URL
		keepAlive bool   // the client asks for it
		status    int
		body      string
		stays     bool // the connection stays open for another request
	}{
		{name: "close", path: "/cl", status: 200, body: "hello world"},
		{name: "keep-alive", path: "/cl", keepAlive: true, status: 200, body: "hello world", stays: true},
		{name: "keep-alive, proxy error", path: "http://denied.test/", keepAlive: true, status: 403, body: "access denied", stays: true},
		{name: "keep-alive, unknown length", path: "/flush", keepAlive: true, status: 200, body: "part1part2"},
		{name: "close, unknown length", path: "/flush", status: 200, body: "part1part2"},
		{name: "keep-alive, trailers dropped", path: "/trailer", keepAlive: true, status: 200, body: "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.path
			if strings.HasPrefix(tc.path, "/") {
				target = o + tc.path
			}
			req := "GET " + target + " HTTP/1.0\r\n"
			if tc.keepAlive {
				req += "Connection: keep-alive\r\n"
			}
			req += "\r\n"
			c, br := tp.rawConn(t)
			mustWrite(t, c, req)
			r := readWire(t, br, "GET")
			if r.proto != "HTTP/1.0" || r.status != tc.status || !strings.Contains(string(r.body), tc.body) {
				t.Fatalf("got %s %d %q, want HTTP/1.0 %d %q", r.proto, r.status, r.body, tc.status, tc.body)
			}
			if r.chunked {
				t.Fatal("chunked response to an HTTP/1.0 client")
			}
			if got := r.header.Get("Connection"); tc.stays != (got == "keep-alive") || (tc.stays && len(r.header.Values("Connection")) != 1) {
				t.Errorf("Connection %q; stays open %v", r.header.Values("Connection"), tc.stays)
			}
			if !tc.stays {
				if !r.toEOF {
					wantClosed(t, c, br)
				}
				return
			}
			if r.toEOF {
				t.Fatal("keep-alive response delimited by closing the connection")
			}
			mustWrite(t, c, "GET "+o+"/again HTTP/1.0\r\nConnection: keep-alive\r\nHost: "+host+"\r\n\r\n")
			if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "GET /again" {
				t.Fatalf("second request: %d %q", r.status, r.body)
			}
			mustWrite(t, c, "GET "+o+"/last HTTP/1.0\r\n\r\n")
			if r := readWire(t, br, "GET"); r.status != 200 || string(r.body) != "GET /last" || r.header.Get("Connection") != "" {
				t.Fatalf("last request: %d %q Connection %q", r.status, r.body, r.header.Get("Connection"))
			}
			wantClosed(t, c, br)
		})
	}
}

// TestLoopConnectionClose: a client's Connection: close is answered with
// Connection: close, then the connection is closed, and nothing pipelined
// behind the request is served.
func TestLoopConnectionClose(t *testing.T) {
	var hits atomic.Int32
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/flush" {
			_, _ = io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
		}
		_, _ = io.WriteString(w, "done")
	})
	host := o.Listener.Addr().String()
	tp := startProxy(t, WithDenyHosts("denied.test"))
	for _, tc := range []struct {
		name, req, body string
		hits            int32
	}{
		{"length", rawGet(o.URL, host, "/cl", "Connection: close\r\n"), "done", 1},
		{"chunked", rawGet(o.URL, host, "/flush", "Connection: close\r\n"), "part1done", 1},
		{"proxy error", "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n", "access denied", 0},
		{"token among others", rawGet(o.URL, host, "/cl", "Connection: x-foo, Close\r\nX-Foo: 1\r\n"), "done", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			c, br := tp.rawConn(t)
			mustWrite(t, c, tc.req+rawGet(o.URL, host, "/pipelined", ""))
			r := readWire(t, br, "GET")
			if !strings.Contains(string(r.body), tc.body) || r.header.Get("Connection") != "close" || len(r.header.Values("Connection")) != 1 {
				t.Errorf("got %d %q Connection %q, want %q and Connection: close", r.status, r.body, r.header.Values("Connection"), tc.body)
			}
			wantClosed(t, c, br)
			time.Sleep(20 * time.Millisecond)
			if got := hits.Load() - before; got != tc.hits {
				t.Errorf("origin hit %d times, want %d (the pipelined request must not be served)", got, tc.hits)
			}
		})
	}
	wantOpenConns(t, tp.Proxy, 0)
}

// rawStatus sends raw to addr on a new connection and returns the status
// of the answer, or 0 if the connection is closed without one. With the
// address of a plain http.Server, it is net/http's answer.
func rawStatus(t testing.TB, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	mustWrite(t, c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(raw + " x")[0]})
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLoopHostChecks: the Host checks net/http makes, made by the loop on
// the raw header block, answer exactly as net/http does; a request net/http
// refuses never reaches the origin.
func TestLoopHostChecks(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	target := "127.0.0.1:" + port
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	ref := origin(t, func(w http.ResponseWriter, r *http.Request) {})
	tp := startProxy(t)
	line := "GET http://" + target + "/ HTTP/1.1\r\n"
	for _, tc := range []struct {
		name    string
		req     string
		status  int
		handoff bool // accepted, but served by net/http
	}{
		{name: "one Host", req: line + "Host: " + target + "\r\n\r\n", status: 200},
		{name: "Host differs from the target", req: line + "Host: elsewhere.test\r\n\r\n", status: 200},
		{name: "empty Host", req: line + "Host:\r\n\r\n", status: 200},
		{name: "lower-case host", req: line + "host: " + target + "\r\n\r\n", status: 200},
		{name: "bare LF line ends", req: "GET http://" + target + "/ HTTP/1.1\nHost: x\n\n", status: 200},
		{name: "no Host, HTTP/1.1", req: line + "\r\n", status: 400},
		{name: "no Host, HTTP/1.0", req: "GET http://" + target + "/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", status: 200},
		{name: "two Host fields", req: line + "Host: a\r\nHost: a\r\n\r\n", status: 400},
		{name: "two Host fields, cases differ", req: line + "host: a\r\nHOST: b\r\n\r\n", status: 400},
		{name: "two Host fields, HTTP/1.0", req: "GET http://" + target + "/ HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", status: 400},
		{name: "space in Host", req: line + "Host: a b\r\n\r\n", status: 400},
		{name: "slash in Host", req: line + "Host: a/b\r\n\r\n", status: 400},
		{name: "IPv6 literal and zone", req: line + "Host: [fe80::1%25eth0]:80\r\n\r\n", status: 200},
		{name: "Host-like field", req: line + "Host: x\r\nX-Host: a b\r\nHostname: a b\r\n\r\n", status: 200},
		{name: "Host folded into another field", req: line + "X: y\r\n Host: a b\r\nHost: x\r\n\r\n", status: 200, handoff: true},
		{name: "Host continued on an obs-fold line", req: line + "Host: a\r\n b\r\n\r\n", status: 400},
		{name: "CONNECT without Host", req: "CONNECT " + echoAddr + " HTTP/1.1\r\n\r\n", status: 200},
		{name: "CONNECT with two Host fields", req: "CONNECT " + echoAddr + " HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if want := rawStatus(t, ref.Listener.Addr().String(), tc.req); want != tc.status {
				t.Fatalf("net/http answers %d, the table says %d", want, tc.status)
			}
			before := hits.Load()
			c, br := tp.rawConn(t)
			mustWrite(t, c, tc.req)
			resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tc.req)[0]})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("got %d %q, want %d", resp.StatusCode, b, tc.status)
			}
			if strings.HasPrefix(tc.req, "CONNECT") && tc.status == 200 {
				mustWrite(t, c, "ping")
				b := make([]byte, 4)
				if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
					t.Fatalf("tunnel echo: %q %v", b, err)
				}
			}
			if tc.status != 200 && hits.Load() != before {
				t.Error("a refused request reached the origin")
			}
			// What net/http accepts the loop serves itself (a tunnel stays
			// with the loop's goroutine), but for obsolete line folding; the
			// rest went to net/http.
			n := 0
			if tc.status == 200 && !tc.handoff {
				n = 1
			}
			wantLoopConns(t, tp.Proxy, n)
			c.Close()
			wantLoopConns(t, tp.Proxy, 0)
		})
	}
}

// TestLoopMalformedLikeNetHTTP: whatever the loop does not take goes to
// net/http, whose answer the client gets.
func TestLoopMalformedLikeNetHTTP(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	target := "127.0.0.1:" + port
	ref := origin(t, func(w http.ResponseWriter, r *http.Request) {})
	tp := startProxy(t)
	abs := "http://" + target + "/"
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
			before := hits.Load()
			got := rawStatus(t, tp.Addr, tc.req)
			if got != want {
				t.Errorf("got %d, net/http answers %d", got, want)
			}
			if hits.Load() != before {
				t.Error("the origin was reached")
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
// is served by the loop, a larger one by net/http, up to
// WithMaxHeaderBytes (which net/http enforces with 4 KiB of slack).
func TestLoopHeaderSizes(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	target := "127.0.0.1:" + port
	def := startProxy(t)
	small := startProxy(t, WithMaxHeaderBytes(1024))
	for _, tc := range []struct {
		name   string
		tp     *testProxy
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
			before := hits.Load()
			c, br := tc.tp.rawConn(t)
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
			if got := hits.Load() - before; got != wantHits {
				t.Errorf("origin hit %d times, want %d", got, wantHits)
			}
			if tc.status != 200 {
				return
			}
			n := 0
			if tc.loop {
				n = 1
			}
			wantLoopConns(t, tc.tp.Proxy, n)
			// The connection goes on.
			mustWrite(t, c, get(target))
			if r := readWire(t, br, "GET"); r.status != 200 {
				t.Fatalf("next request: %d", r.status)
			}
		})
	}
}

// servedProxy is a Proxy serving on a listener of the test's, for tests
// that shut it down themselves.
type servedProxy struct {
	*testProxy
	served   chan error
	once     sync.Once
	err      error // Shutdown's
	serveErr error // Serve's
}

func serveProxy(t testing.TB, opts ...Option) *servedProxy {
	t.Helper()
	p, err := New(append([]Option{WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := &servedProxy{
		testProxy: &testProxy{Proxy: p, URL: &url.URL{Scheme: "http", Host: l.Addr().String()}, Addr: l.Addr().String()},
		served:    make(chan error, 1),
	}
	go func() { sp.served <- p.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sp.shutdown(ctx)
	})
	return sp
}

// shutdown runs Shutdown once and waits for Serve to return.
func (sp *servedProxy) shutdown(ctx context.Context) error {
	sp.once.Do(func() {
		sp.err = sp.Shutdown(ctx)
		sp.serveErr = <-sp.served
	})
	return sp.err
}

// TestLoopShutdown: Shutdown closes idle connections at once, lets
// requests in flight finish (closing their connection after), and forces
// them closed when its context ends.
func TestLoopShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			started <- struct{}{}
			time.Sleep(300 * time.Millisecond)
			_, _ = io.WriteString(w, "finished")
		case "/hang":
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		default:
			_, _ = io.WriteString(w, "quick")
		}
	})
	host := o.Listener.Addr().String()

	t.Run("idle connections closed", func(t *testing.T) {
		sp := serveProxy(t)
		c, br := sp.rawConn(t)
		mustWrite(t, c, rawGet(o.URL, host, "/", ""))
		if r := readWire(t, br, "GET"); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
		fresh, fbr := sp.rawConn(t) // accepted, nothing sent yet
		wantLoopConns(t, sp.Proxy, 2)
		// And one that net/http serves.
		handed, hbr := sp.rawConn(t)
		mustWrite(t, handed, "POST "+o.URL+"/ HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 1\r\n\r\nx")
		if r := readWire(t, hbr, "GET"); r.status != 200 {
			t.Fatalf("handed off: got %d", r.status)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := sp.shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Shutdown took %v with idle connections only", d)
		}
		if !errors.Is(sp.serveErr, http.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", sp.serveErr)
		}
		wantClosed(t, c, br)
		wantClosed(t, fresh, fbr)
		wantClosed(t, handed, hbr)
		if c, err := net.DialTimeout("tcp", sp.Addr, time.Second); err == nil {
			c.Close()
			t.Error("still accepting connections")
		}
	})

	t.Run("request in flight completes", func(t *testing.T) {
		sp := serveProxy(t)
		c, br := sp.rawConn(t)
		mustWrite(t, c, rawGet(o.URL, host, "/slow", ""))
		<-started
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- sp.shutdown(ctx)
		}()
		r := readWire(t, br, "GET")
		if r.status != 200 || string(r.body) != "finished" {
			t.Errorf("in-flight request: %d %q", r.status, r.body)
		}
		if r.header.Get("Connection") != "close" {
			t.Errorf("response during shutdown without Connection: close (%q)", r.header.Values("Connection"))
		}
		wantClosed(t, c, br)
		if err := <-done; err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("Shutdown returned after %v, before the request ended", d)
		}
	})

	t.Run("expired context forces close", func(t *testing.T) {
		sp := serveProxy(t)
		c, br := sp.rawConn(t)
		mustWrite(t, c, rawGet(o.URL, host, "/hang", ""))
		<-started
		// And an idle one alongside.
		idle, ibr := sp.rawConn(t)
		mustWrite(t, idle, rawGet(o.URL, host, "/", ""))
		readWire(t, ibr, "GET")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		err := sp.shutdown(ctx)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Shutdown with a done context took %v", d)
		}
		wantClosed(t, idle, ibr)
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Error("the origin request was not cancelled")
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, rerr := io.ReadAll(br)
		if isTimeout(rerr) {
			t.Fatal("the in-flight connection is still open")
		}
		if len(got) > 0 {
			t.Logf("the client of the cancelled request read %q", got)
			t.Error("the client of the cancelled request got an answer")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown = %v, want context.Canceled", err)
		}
	})
}

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
				logBuf.mu.Lock()
				logBuf.b.Reset()
				logBuf.mu.Unlock()
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

// slowOrigin answers /slow after 200 ms unless the request is cancelled
// first, and anything else at once.
type slowOrigin struct {
	url, host string
	started   chan struct{} // a /slow request arrived
	cancels   atomic.Int32  // /slow requests cancelled
}

func newSlowOrigin(t testing.TB) *slowOrigin {
	so := &slowOrigin{started: make(chan struct{}, 4)}
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			so.started <- struct{}{}
			select {
			case <-r.Context().Done():
				so.cancels.Add(1)
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})
	so.url, so.host = o.URL, o.Listener.Addr().String()
	return so
}

// watchClientAfter sets how long a request runs before the loop watches
// its client for a disconnect; the default is longer than tests wait.
func watchClientAfter(d time.Duration) Option {
	return func(c *config) error {
		c.clientWatchDelay = d
		return nil
	}
}

// TestLoopPipelinedNotCancelled: the client watch cancels a slow request
// when its client goes away, but not when the client sends its next
// request before the answer.
func TestLoopPipelinedNotCancelled(t *testing.T) {
	tp := startProxy(t, watchClientAfter(50*time.Millisecond))
	for _, tc := range []struct {
		name   string
		second string        // path, or "post" for a request net/http takes
		delay  time.Duration // before the second request is sent, once the first reached the origin; <0: in the same write
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
			so := newSlowOrigin(t)
			slow := rawGet(so.url, so.host, "/slow", "")
			second, path := rawGet(so.url, so.host, tc.second, ""), tc.second
			if tc.second == "post" {
				second = "POST " + so.url + "/post HTTP/1.1\r\nHost: " + so.host + "\r\nContent-Length: 2\r\n\r\nhi"
				path = "/post"
			}
			c, br := tp.rawConn(t)
			if tc.delay < 0 {
				mustWrite(t, c, slow+second)
				<-so.started
			} else {
				mustWrite(t, c, slow)
				<-so.started
				time.Sleep(tc.delay)
				mustWrite(t, c, second)
			}
			for _, p := range []string{"/slow", path} {
				r := readWire(t, br, "GET")
				if r.status != 200 || string(r.body) != "done "+p {
					t.Fatalf("response to %s: %d %q", p, r.status, r.body)
				}
			}
			if n := so.cancels.Load(); n != 0 {
				t.Errorf("%d origin requests cancelled", n)
			}
		})
	}
	t.Run("client gone", func(t *testing.T) {
		t.Parallel()
		so := newSlowOrigin(t)
		c, _ := tp.rawConn(t)
		mustWrite(t, c, rawGet(so.url, so.host, "/slow", ""))
		<-so.started
		c.Close()
		eventually(t, "the origin request cancelled", func() bool { return so.cancels.Load() == 1 })
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

// TestLoopTimeouts: the idle timeout ends a keep-alive connection that
// waits for its next request, the header timeout one that sends it too
// slowly; neither cuts a busy connection or a slow response.
func TestLoopTimeouts(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})
	host := o.Listener.Addr().String()
	idle := startProxy(t, WithClientIdleTimeout(300*time.Millisecond), WithReadHeaderTimeout(5*time.Second))
	header := startProxy(t, WithReadHeaderTimeout(150*time.Millisecond), WithClientIdleTimeout(5*time.Second))
	served := func(t *testing.T, c net.Conn, br *bufio.Reader, path string) {
		t.Helper()
		mustWrite(t, c, rawGet(o.URL, host, path, ""))
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
		mustWrite(t, c, "GET "+o.URL+"/b HTTP/1.1\r\nHost: "+host+"\r\n")
		closedWithin(t, c, br, start, 50*time.Millisecond, 3*time.Second)
	})
	t.Run("slow response", func(t *testing.T) {
		t.Parallel()
		c, br := header.rawConn(t)
		served(t, c, br, "/slow")
		served(t, c, br, "/after")
	})
}

// TestLoopConnAccounting: connections are counted against WithMaxConns
// while the loop or net/http serves them, and no longer once hijacked for
// a tunnel or closed.
func TestLoopConnAccounting(t *testing.T) {
	o, host := pathOrigin(t)
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t, WithMaxConns(2))
	tunnel, tbr := tp.connect(t, echoAddr, "")
	wantOpenConns(t, tp.Proxy, 0)

	a, abr := tp.rawConn(t) // the loop's
	mustWrite(t, a, rawGet(o, host, "/a", ""))
	if r := readWire(t, abr, "GET"); r.status != 200 {
		t.Fatalf("a: %d", r.status)
	}
	b, bbr := tp.rawConn(t) // net/http's
	mustWrite(t, b, "POST "+o+"/echo HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 1\r\n\r\nx")
	if r := readWire(t, bbr, "GET"); r.status != 200 {
		t.Fatalf("b: %d", r.status)
	}
	wantOpenConns(t, tp.Proxy, 2)

	over := func(what string, req string) {
		t.Helper()
		c, br := tp.rawConn(t)
		mustWrite(t, c, req)
		r := readWire(t, br, "GET")
		if r.status != 503 || r.header.Get("Connection") != "close" || len(r.header.Values("Connection")) != 1 {
			t.Fatalf("%s over the limit: %d Connection %q", what, r.status, r.header.Values("Connection"))
		}
		wantClosed(t, c, br)
	}
	over("loop request", rawGet(o, host, "/c", ""))
	over("hand-off request", "POST "+o+"/echo HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 1\r\n\r\nx")
	wantOpenConns(t, tp.Proxy, 2)

	mustWrite(t, tunnel, "ping")
	if p := make([]byte, 4); func() error { _, err := io.ReadFull(tbr, p); return err }() != nil || string(p) != "ping" {
		t.Fatal("tunnel echo failed")
	}
	a.Close()
	wantOpenConns(t, tp.Proxy, 1)
	b.Close()
	wantOpenConns(t, tp.Proxy, 0)
	c, cbr := tp.rawConn(t)
	mustWrite(t, c, rawGet(o, host, "/d", ""))
	if r := readWire(t, cbr, "GET"); r.status != 200 {
		t.Fatalf("after the others closed: %d", r.status)
	}
}

// TestLoopTLSListener: Serve on a TLS listener (an HTTPS proxy) leaves the
// connections to net/http, which does the handshake; they are counted
// against WithMaxConns all the same.
func TestLoopTLSListener(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "origin") })
	certSrc := httptest.NewUnstartedServer(http.NotFoundHandler())
	certSrc.StartTLS() // for its certificate, valid for 127.0.0.1, and a client that trusts it
	defer certSrc.Close()
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- p.Serve(tls.NewListener(ln, &tls.Config{Certificates: certSrc.TLS.Certificates}))
	}()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	}()
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "https", Host: ln.Addr().String()}),
		TLSClientConfig: certSrc.Client().Transport.(*http.Transport).TLSClientConfig,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(o.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "origin" {
		t.Fatalf("through the HTTPS proxy: %d %q", resp.StatusCode, b)
	}
	if n := loopConns(p); n != 0 {
		t.Errorf("the loop holds %d TLS connections, want 0 (net/http serves them)", n)
	}
	wantOpenConns(t, p, 1)
	tr.CloseIdleConnections()
	wantOpenConns(t, p, 0)
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
