package fwdproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers for the tests that speak HTTP/1.1 to Serve by hand: they see the
// bytes the loop (or net/http, after a hand-off) sends.

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
