package fwdproxy

import (
	"cmp"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Requests through Serve's loop with the Proxy behind it: which the loop
// takes and which it hands to net/http, and how it frames the proxy's
// answers (the loop's mechanics alone are tested in internal/h1).

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

// TestLoopFraming: how the loop's writer frames each kind of response body, and
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
			// What net/http accepts the loop serves itself, but for
			// obsolete line folding; the rest went to net/http. A tunnel
			// stays with the loop's goroutine, unless it is parked
			// (tunnelpark_linux.go): its handler has then returned.
			n := 0
			if tc.status == 200 && !tc.handoff && !(strings.HasPrefix(tc.req, "CONNECT") && runtime.GOOS == "linux") {
				n = 1
			}
			wantLoopConns(t, tp.Proxy, n)
			c.Close()
			wantLoopConns(t, tp.Proxy, 0)
		})
	}
}
