package fwdproxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// lenientOrigin is an HTTP/1.1 origin of the kind the look-alike rule is
// for: it reads field names case-insensitively with '_' as '-' (as CGI's
// HTTP_* variables do), and a Transfer-Encoding read so wins over a
// Content-Length. Each request is answered "path=<path> body=<body>" on a
// connection kept open; fields in respond are added to every response.
type lenientOrigin struct {
	addr string
	mu   sync.Mutex
	seen []string // request paths, in order
}

func newLenientOrigin(t testing.TB, respond string) *lenientOrigin {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &lenientOrigin{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					path, body, ok := readLenient(br)
					if !ok {
						return
					}
					o.mu.Lock()
					o.seen = append(o.seen, path)
					o.mu.Unlock()
					b := "path=" + path + " body=" + body
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\n"+respond+"Content-Length: "+strconv.Itoa(len(b))+"\r\n\r\n"+b); err != nil {
						return
					}
				}
			}()
		}
	}()
	return o
}

// readLenient reads one request as lenientOrigin does.
func readLenient(br *bufio.Reader) (path, body string, ok bool) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", "", false
	}
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", "", false
	}
	path = f[1]
	if u, err := url.Parse(path); err == nil {
		path = u.Path
	}
	h := map[string]string{}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", "", false
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		h[strings.ReplaceAll(strings.ToLower(k), "_", "-")] = strings.TrimSpace(v)
	}
	var b strings.Builder
	if strings.EqualFold(h["transfer-encoding"], "chunked") {
		for {
			sz, err := br.ReadString('\n')
			if err != nil {
				return "", "", false
			}
			n, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 32)
			if err != nil {
				return "", "", false
			}
			if n == 0 {
				for { // trailer
					l, err := br.ReadString('\n')
					if err != nil {
						return "", "", false
					}
					if strings.TrimRight(l, "\r\n") == "" {
						break
					}
				}
				break
			}
			chunk := make([]byte, n+2)
			if _, err := io.ReadFull(br, chunk); err != nil {
				return "", "", false
			}
			b.Write(chunk[:n])
		}
	} else if cl := h["content-length"]; cl != "" {
		n, _ := strconv.Atoi(cl)
		chunk := make([]byte, n)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return "", "", false
		}
		b.Write(chunk)
	}
	return path, b.String(), true
}

func (o *lenientOrigin) paths() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.seen...)
}

// TestLookAlikeSmuggling: a request carrying "Transfer_Encoding: chunked"
// next to its Content-Length must not reach an origin that reads '_' as
// '-': there it would end early, and the rest of its body would become the
// head of the next request on the pooled upstream connection, another
// client's. The attacker gets 400 and the victim its own answer.
func TestLookAlikeSmuggling(t *testing.T) {
	o := newLenientOrigin(t, "")
	tp := startProxy(t)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: " + o.addr + "\r\nX-Eat: "
	body := "0\r\n\r\n" + smuggled
	c, br := tp.rawConn(t)
	mustWrite(t, c, "POST http://"+o.addr+"/attack HTTP/1.1\r\nHost: "+o.addr+"\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\nTransfer_Encoding: chunked\r\n\r\n"+body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "Transfer_encoding") {
		t.Errorf("attacker: %d %q, want 400 naming the field", resp.StatusCode, b)
	}
	time.Sleep(50 * time.Millisecond) // let the upstream connection go idle in the pool

	// The victim, a second client, sends a request with a body (so it takes
	// the same upstream transport as the attacker's).
	victim := tp.client(t, nil)
	vresp, err := victim.Post("http://"+o.addr+"/victim", "text/plain", strings.NewReader("v"))
	if err != nil {
		t.Fatal(err)
	}
	vb, _ := io.ReadAll(vresp.Body)
	vresp.Body.Close()
	if vresp.StatusCode != 200 || string(vb) != "path=/victim body=v" {
		t.Errorf("victim got %d %q, want its own answer", vresp.StatusCode, vb)
	}
	if p := o.paths(); len(p) != 1 || p[0] != "/victim" {
		t.Errorf("origin saw %q, want only /victim", p)
	}
}

// TestLookAlikeRefused: every front end refuses a request carrying a
// look-alike of each framing or routing field with a '-' in its name, and
// the origin sees none of them; the real fields and fields with '_' that
// are no look-alikes pass.
func TestLookAlikeRefused(t *testing.T) {
	o := newLenientOrigin(t, "")
	tlsO, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(roots))
	mounted := httptest.NewServer(tp.Proxy)
	t.Cleanup(mounted.Close)
	mountedAddr := mounted.Listener.Addr().String()

	// send writes one request with the extra field through a front end and
	// returns the status.
	type frontEnd struct {
		name string
		send func(t *testing.T, field string) int
	}
	get := func(field string) string {
		return "GET http://" + o.addr + "/get HTTP/1.1\r\nHost: " + o.addr + "\r\n" + field + "\r\n"
	}
	frontEnds := []frontEnd{
		{"own loop", func(t *testing.T, field string) int { return rawStatus(t, tp.Addr, get(field)) }},
		{"hand-off (body)", func(t *testing.T, field string) int {
			return rawStatus(t, tp.Addr, "POST http://"+o.addr+"/post HTTP/1.1\r\nHost: "+o.addr+"\r\nContent-Length: 1\r\n"+field+"\r\nx")
		}},
		{"mounted http.Server", func(t *testing.T, field string) int { return rawStatus(t, mountedAddr, get(field)) }},
		{"intercepted", func(t *testing.T, field string) int {
			target := tlsO.Listener.Addr().String()
			tc, br := connectTLS(t, tp, target, "127.0.0.1", caPool, "http/1.1")
			defer tc.Close()
			mustWrite(t, tc, "GET /x HTTP/1.1\r\nHost: "+target+"\r\n"+field+"\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}},
	}
	var lookAlikes []string
	for _, f := range []string{"Content-Length", "Transfer-Encoding", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate"} {
		lookAlikes = append(lookAlikes, strings.ReplaceAll(f, "-", "_"), strings.ToLower(strings.ReplaceAll(f, "-", "_")))
	}
	for _, fe := range frontEnds {
		t.Run(fe.name, func(t *testing.T) {
			for _, k := range lookAlikes {
				if _, ok := httpx.FramingLookAlike(k); !ok {
					t.Fatalf("%q is not in the table", k)
				}
				before := tp.Stats().Errors.Malformed
				if got := fe.send(t, k+": 5\r\n"); got != http.StatusBadRequest {
					t.Errorf("%s: status %d, want 400", k, got)
				}
				if after := tp.Stats().Errors.Malformed; after != before+1 {
					t.Errorf("%s: malformed count %d -> %d", k, before, after)
				}
			}
			for _, ok := range []string{"X_Custom_Header: 1\r\n", "Content_type: text/plain\r\n", "Keep-Alive: timeout=5\r\n"} {
				if got := fe.send(t, ok); got != http.StatusOK {
					t.Errorf("%q: status %d, want 200", ok, got)
				}
			}
		})
	}
	for _, p := range o.paths() {
		if p != "/get" && p != "/post" {
			t.Errorf("origin saw %q", p)
		}
	}
	if n := len(o.paths()); n != 3*3 {
		t.Errorf("origin saw %d requests, want 9 (only the passing ones)", n)
	}
}

// TestLookAlikeDroppedFromResponses: look-alikes in a response are dropped
// on every upstream path, the own client's and the transport's; other
// fields pass.
func TestLookAlikeDroppedFromResponses(t *testing.T) {
	o := newLenientOrigin(t, "Transfer_Encoding: chunked\r\nContent_length: 0\r\nX_Other: kept\r\n")
	tp := startProxy(t)
	c := tp.client(t, &tls.Config{})
	for _, tc := range []struct {
		name, method string
		body         io.Reader
	}{
		{"own client", http.MethodGet, nil},
		{"transport", http.MethodPost, strings.NewReader("b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+o.addr+"/r", tc.body)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "path=/r") {
				t.Fatalf("%d %q", resp.StatusCode, b)
			}
			for k := range resp.Header {
				if _, bad := httpx.FramingLookAlike(k); bad {
					t.Errorf("response carries %s: %q", k, resp.Header[k])
				}
			}
			if resp.Header.Get("X_other") != "kept" {
				t.Errorf("X_Other lost: %v", resp.Header)
			}
		})
	}
}
