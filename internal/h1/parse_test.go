package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The short parsers must read every head they accept exactly as net/http
// does. Each case says whether they take it; either way, what they take is
// compared with net/http's reading of the same bytes.

var requestHeads = []struct {
	name string
	head string
	fast bool
}{
	{"go client", "GET http://127.0.0.1:8080/small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n", true},
	{"wrk", "GET http://127.0.0.1:18001/small HTTP/1.1\r\nHost: 127.0.0.1:18001\r\n\r\n", true},
	{"curl", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n", true},
	{"query", "GET http://example.com/a/b;c=d?x=1&y=%20z HTTP/1.1\r\nHost: example.com\r\n\r\n", true},
	{"no port, reserved path bytes", "HEAD http://a-b.example/$&+,:;=@~._- HTTP/1.1\r\nHost: a-b.example\r\n\r\n", true},
	{"lower-case and odd names", "GET http://h/ HTTP/1.1\r\nhost: h\r\nx-custom-THING: 1\r\nuser-agent: u\r\nx_y: 2\r\n\r\n", true},
	{"repeated field", "GET http://h/ HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\nCookie: c=1\r\n\r\n", true},
	{"blanks around values", "GET http://h/ HTTP/1.1\r\nHost:h\r\nX-A:  \t v w \t \r\nX-B:\r\nX-C: \r\n\r\n", true},
	{"obs-text in a value", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX-A: caf\xc3\xa9\r\n\r\n", true},
	{"host field differs from URL", "GET http://h/ HTTP/1.1\r\nHost: other\r\n\r\n", true},
	{"custom method", "PROPFIND http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"long name", "GET http://h/ HTTP/1.1\r\nHost: h\r\nx-" + strings.Repeat("a", 100) + ": 1\r\n\r\n", true},

	{"origin-form", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"connect", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", false},
	{"https", "GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"upper-case scheme", "GET HTTP://h/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"no path", "GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"query without path", "GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"empty query", "GET http://h/? HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"escaped path", "GET http://h/a%20b HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"fragment", "GET http://h/a#b HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"userinfo", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"ipv6", "GET http://[::1]:80/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", false},
	{"empty port", "GET http://h:/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"letters in port", "GET http://h:8a/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"http/1.0", "GET http://h/ HTTP/1.0\r\n\r\n", false},
	{"http/2", "GET http://h/ HTTP/2.0\r\nHost: h\r\n\r\n", false},
	{"two spaces", "GET  http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"trailing space", "GET http://h/ HTTP/1.1 \r\nHost: h\r\n\r\n", false},
	{"bad method", "G(T http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"bare LF", "GET http://h/ HTTP/1.1\nHost: h\n\n", false},
	{"bare LF in fields", "GET http://h/ HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", false},
	{"no host field", "GET http://h/ HTTP/1.1\r\n\r\n", false},
	{"two host fields", "GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", false},
	{"bad host field", "GET http://h/ HTTP/1.1\r\nHost: h h\r\n\r\n", false},
	{"folded", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", false},
	{"space before colon", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n", false},
	{"no colon", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX\r\n\r\n", false},
	{"empty name", "GET http://h/ HTTP/1.1\r\nHost: h\r\n: a\r\n\r\n", false},
	{"control byte", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", false},
	{"CR in value", "GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", false},
	{"content-length", "GET http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
	{"chunked", "POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"connection", "GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
	{"expect", "GET http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", false},
	{"upgrade", "GET http://h/ HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", false},
	{"h2c settings", "GET http://h/ HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAA\r\n\r\n", false},
	{"pragma", "GET http://h/ HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n", false},
	{"trailer", "GET http://h/ HTTP/1.1\r\nHost: h\r\nTrailer: X\r\n\r\n", false},
}

func TestFastRequest(t *testing.T) {
	for _, tc := range requestHeads {
		t.Run(tc.name, func(t *testing.T) {
			got := checkFastRequest(t, []byte(tc.head))
			if got != tc.fast {
				t.Errorf("fastRequest took it: %v, want %v", got, tc.fast)
			}
		})
	}
}

func FuzzFastRequest(f *testing.F) {
	for _, tc := range requestHeads {
		f.Add([]byte(tc.head))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if end := headerEnd(b); end >= 0 && end <= srvReadBufferSize {
			checkFastRequest(t, b[:end])
		}
	})
}

// checkFastRequest parses head with fastRequest and, if it takes it,
// checks that parseRequest (http.ReadRequest and the loop's rules) takes
// it too, reads the same request and consumes the same bytes. It reports
// whether fastRequest took it.
func checkFastRequest(t *testing.T, head []byte) bool {
	t.Helper()
	fast := fastRequest(bytes.Clone(head))
	if fast == nil {
		return false
	}
	br := bufio.NewReaderSize(bytes.NewReader(head), srvReadBufferSize)
	buf, _ := br.Peek(len(head))
	slow := parseRequest(br, buf)
	if slow == nil {
		t.Fatalf("fastRequest took %q, which parseRequest refuses", head)
	}
	if br.Buffered() != 0 {
		t.Errorf("parseRequest left %d bytes of %q; fastRequest consumes them all", br.Buffered(), head)
	}
	type view struct {
		Method, Proto, Host, RequestURI string
		ProtoMajor, ProtoMinor          int
		URL                             any
		Header                          http.Header
		ContentLength                   int64
		TransferEncoding                []string
		Close                           bool
		Trailer                         http.Header
		NoBody                          bool
	}
	v := func(r *http.Request) view {
		return view{r.Method, r.Proto, r.Host, r.RequestURI, r.ProtoMajor, r.ProtoMinor, *r.URL, r.Header,
			r.ContentLength, r.TransferEncoding, r.Close, r.Trailer, r.Body == http.NoBody}
	}
	if got, want := v(fast), v(slow); !reflect.DeepEqual(got, want) {
		t.Fatalf("head %q:\nfastRequest %+v\nnet/http    %+v", head, got, want)
	}
	return true
}

var responseHeads = []struct {
	name   string
	head   string
	method string
	fast   bool
}{
	{"go server", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\nDate: Wed, 02 Dec 2026 07:00:00 GMT\r\n\r\n", "GET", true},
	{"empty body", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", true},
	{"no reason", "HTTP/1.1 404\r\nContent-Length: 3\r\n\r\n", "GET", true},
	{"odd reason", "HTTP/1.1 503 Service  Unavailable \t\r\nContent-Length: 3\r\n\r\n", "POST", true},
	{"reason with obs-text", "HTTP/1.1 200 \xc3\xa9\r\nContent-Length: 3\r\n\r\n", "GET", true},
	{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 3\r\n\r\n", "GET", true},
	{"lower-case names, repeated", "HTTP/1.1 302 Found\r\nlocation: /x\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 5\r\n\r\n", "GET", true},
	{"leading zeros", "HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n", "GET", true},
	{"blanks around length", "HTTP/1.1 200 OK\r\nContent-Length: \t42 \r\n\r\n", "GET", true},
	{"body follows", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n", "GET", true},

	{"head request", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", false},
	{"1xx", "HTTP/1.1 100 Continue\r\n\r\n", "GET", false},
	{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", "GET", false},
	{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET", false},
	{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET", false},
	{"600", "HTTP/1.1 600 X\r\nContent-Length: 1\r\n\r\n", "GET", false},
	{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", false},
	{"two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 1\r\n\r\n", "GET", false},
	{"four digits", "HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\n", "GET", false},
	{"control in reason", "HTTP/1.1 200 O\x00K\r\nContent-Length: 1\r\n\r\n", "GET", false},
	{"incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", "GET", false},
	{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\n\n", "GET", false},
	{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "GET", false},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
	{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
	{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", "GET", false},
	{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", "GET", false},
	{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "GET", false},
	{"connection close", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", "GET", false},
	{"pragma", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nPragma: no-cache\r\n\r\n", "GET", false},
	{"trailer", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTrailer: X\r\n\r\n", "GET", false},
	{"folded", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: a\r\n\tb\r\n\r\n", "GET", false},
	{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\n", "GET", false},
}

func TestFastResponse(t *testing.T) {
	for _, tc := range responseHeads {
		t.Run(tc.name, func(t *testing.T) {
			got := checkFastResponse(t, []byte(tc.head), tc.method)
			if got != tc.fast {
				t.Errorf("fastResponse took it: %v, want %v", got, tc.fast)
			}
		})
	}
}

func FuzzFastResponse(f *testing.F) {
	for _, tc := range responseHeads {
		f.Add([]byte(tc.head), tc.method == http.MethodHead)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		checkFastResponse(t, b, method)
	})
}

// checkFastResponse parses b with fastResponse and, if it takes it, checks
// that http.ReadResponse reads the same response from the same bytes and
// consumes the same number of them. It reports whether fastResponse took it.
func checkFastResponse(t *testing.T, b []byte, method string) bool {
	t.Helper()
	fast, n := fastResponse(b, method)
	if fast == nil {
		return false
	}
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	slow, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("fastResponse took %q, which http.ReadResponse refuses: %v", b, err)
	}
	if consumed := len(b) - br.Buffered() - r.Len(); consumed != n {
		t.Errorf("%q: fastResponse consumed %d bytes, http.ReadResponse %d", b, n, consumed)
	}
	type view struct {
		Status, Proto          string
		StatusCode             int
		ProtoMajor, ProtoMinor int
		Header                 http.Header
		ContentLength          int64
		TransferEncoding       []string
		Close, Uncompressed    bool
		Trailer                http.Header
	}
	v := func(r *http.Response) view {
		return view{r.Status, r.Proto, r.StatusCode, r.ProtoMajor, r.ProtoMinor, r.Header,
			r.ContentLength, r.TransferEncoding, r.Close, r.Uncompressed, r.Trailer}
	}
	if got, want := v(fast), v(slow); !reflect.DeepEqual(got, want) {
		t.Fatalf("head %q:\nfastResponse %+v\nnet/http     %+v", b, got, want)
	}
	if fast.ContentLength == 0 && slow.Body != http.NoBody {
		t.Errorf("%q: net/http gives a body where fastResponse gives none", b)
	}
	return true
}

// TestReadFixed checks Body's reading of a body fastResponse framed
// against what net/http's body returns for the same bytes: the data, io.EOF
// with the last of it, io.ErrUnexpectedEOF when the connection ends early.
func TestReadFixed(t *testing.T) {
	for _, tc := range []struct {
		name string
		cl   int64
		data string
		want string
		err  error
	}{
		{"exact", 5, "hello", "hello", nil},
		{"more behind", 5, "helloHTTP/1.1", "hello", nil},
		{"short", 5, "hel", "hel", io.ErrUnexpectedEOF},
		{"empty", 3, "", "", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Body{br: bufio.NewReaderSize(strings.NewReader(tc.data), 16), remain: tc.cl}
			var got []byte
			var err error
			p := make([]byte, 2)
			for err == nil {
				var n int
				n, err = b.readFixed(p)
				got = append(got, p[:n]...)
				if err == io.EOF && b.remain != 0 {
					t.Fatalf("io.EOF with %d bytes to come", b.remain)
				}
			}
			if err == io.EOF {
				err = nil
			}
			if string(got) != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("read %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
			// net/http's own body, for the same bytes.
			resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(
				"HTTP/1.1 200 OK\r\nContent-Length: "+strconv.FormatInt(tc.cl, 10)+"\r\n\r\n"+tc.data)), nil)
			if rerr != nil {
				t.Fatal(rerr)
			}
			nb, nerr := io.ReadAll(resp.Body)
			if string(nb) != string(got) || !errors.Is(nerr, tc.err) {
				t.Errorf("net/http reads %q, %v; readFixed %q, %v", nb, nerr, got, err)
			}
		})
	}
}

func BenchmarkParseHead(b *testing.B) {
	req := []byte(requestHeads[0].head)
	resp := []byte(responseHeads[0].head)
	b.Run("request/fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if fastRequest(req) == nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("request/net-http", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(req)
		br := bufio.NewReaderSize(r, srvReadBufferSize)
		for b.Loop() {
			r.Reset(req)
			br.Reset(r)
			buf, _ := br.Peek(len(req))
			if parseRequest(br, buf) == nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("response/fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, _ := fastResponse(resp, http.MethodGet); r == nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("response/net-http", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(resp)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(resp)
			br.Reset(r)
			if _, err := http.ReadResponse(br, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLoopHeaderEnd checks headerEnd on hand-made blocks.
func TestLoopHeaderEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", -1},
		{"GET / HTTP/1.1", -1},
		{"GET / HTTP/1.1\r\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n", 27},
		{"GET / HTTP/1.1\nHost: a\n\n", 24},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", 26},
		{"GET / HTTP/1.1\nHost: a\r\n\n", 25},
		{"\r\n", 2},
		{"\n", 1},
		{"\r\n\r\n", 2},
		{"a\r\r\n\r\n", 6},
		{"a\n\rb\n\n", 6},
		{"a\n \n\n", 5},
		{"a\n\t\r\n\r\n", 7},
	} {
		if got := headerEnd([]byte(tc.in)); got != tc.want {
			t.Errorf("headerEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// refHeaderEnd is headerEnd written the slow way.
func refHeaderEnd(b []byte) int {
	off := 0
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasSuffix(line, "\n") {
			return -1
		}
		off += len(line)
		if line == "\n" || line == "\r\n" {
			return off
		}
	}
	return -1
}

func FuzzLoopHeaderEnd(f *testing.F) {
	for _, s := range []string{"", "\n", "\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", "a\nb\r\n\r\r\n\n", "\r\r\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := headerEnd(b), refHeaderEnd(b)
		if got != want {
			t.Fatalf("headerEnd(%q) = %d, want %d", b, got, want)
		}
		if got >= 0 {
			// More bytes behind the block do not move its end.
			if again := headerEnd(append(b[:got:got], "GET / HTTP/1.1\r\n\r\n"...)); again != got {
				t.Fatalf("headerEnd with more behind = %d, want %d", again, got)
			}
		}
	})
}

// FuzzLoopHeaderEndParse: where http.ReadRequest accepts a request, it
// reads exactly the header block headerEnd finds, so that the loop, which
// parses from the connection's buffer, stays in step with the client.
func FuzzLoopHeaderEndParse(f *testing.F) {
	for _, s := range []string{
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nGET http://b/ HTTP/1.1\r\n\r\n",
		"GET http://a/ HTTP/1.1\nHost: a\n\n",
		"GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n \r\n\r\nrest",
		"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"CONNECT a:1 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if read, end := len(in)-br.Buffered(), headerEnd(in); read != end {
			t.Fatalf("ReadRequest read %d bytes of %q, headerEnd says %d", read, in, end)
		}
	})
}
