package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/park"
)

// isTimeout is netx.IsTimeout, the package's test for a deadline passed.
var isTimeout = netx.IsTimeout

// Helpers of the tests that run a Server or a Transport over real sockets.
// They mirror the root package's (main_test.go, h1server_test.go,
// pool_test.go), where the same mechanics are tested through a Proxy.

// testServer is a Server on a loopback listener, with a hand-off
// http.Server configured from the same settings, as Proxy.Serve does.
type testServer struct {
	*Server
	Addr    string
	open    atomic.Int64  // the connection count the Server shares
	refused atomic.Uint64 // connections refused past MaxConns
}

// defaultSettings are the proxy's defaults.
func defaultSettings() *ServerSettings {
	return &ServerSettings{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ClientWatchDelay:  DefaultClientWatchDelay,
		MaxConns:          4096,
		OverLimitReason:   "too many client connections",
	}
}

// startServer serves h on 127.0.0.1 with the default settings changed by
// mod (if not nil), logging to logger (discarded when nil), until the test
// ends.
func startServer(t testing.TB, h http.Handler, mod func(*ServerSettings), logger *slog.Logger) *testServer {
	t.Helper()
	return startServerParker(t, h, mod, logger, park.New())
}

// startServerParker is startServer with the Parker pk (a limited one, say).
func startServerParker(t testing.TB, h http.Handler, mod func(*ServerSettings), logger *slog.Logger, pk *park.Parker) *testServer {
	t.Helper()
	st := defaultSettings()
	if mod != nil {
		mod(st)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Addr: l.Addr().String()}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: st.ReadHeaderTimeout,
		IdleTimeout:       st.IdleTimeout,
		MaxHeaderBytes:    st.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if !HandedOff(c) {
				ts.open.Add(1)
			}
			return ctx
		},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				ts.open.Add(-1)
			}
		},
	}
	ts.Server = NewServer(l, ServerConfig{
		Handler:  h,
		HandOff:  srv,
		Settings: func() *ServerSettings { return st },
		Logger:   logger,
		Conns:    &ts.open,
		Refused:  &ts.refused,
		Parker:   pk, // as the proxy serves: idle keep-alive connections parked
	})
	served := make(chan error, 1)
	go func() { served <- ts.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		}()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		wg.Wait()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// rawConn dials the server for tests that speak HTTP/1.1 by hand.
func (ts *testServer) rawConn(t testing.TB) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// wantLoopConns waits until the loop holds n connections.
func (ts *testServer) wantLoopConns(t testing.TB, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d connections in the loop (have %d)", n, ts.LoopConns()), func() bool { return ts.LoopConns() == n })
}

// wantOpenConns waits until n client connections are counted open.
func (ts *testServer) wantOpenConns(t testing.TB, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d open client connections (have %d)", n, ts.open.Load()), func() bool { return ts.open.Load() == n })
}

// originHost is the host the tests' absolute-form requests name; the test
// handlers answer them themselves, as a proxy relays an origin's answer.
const originHost = "origin.test"

// pathHandler answers with the request's method and path, or what the test
// asks for at a few paths, as the root's pathOrigin does behind a proxy.
func pathHandler(w http.ResponseWriter, r *http.Request) {
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
}

// hitCounter is a handler that counts the requests it answers, with 200
// and an empty body.
type hitCounter struct{ hits atomic.Int64 }

func (h *hitCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.hits.Add(1) }

func rawGet(path, extra string) string {
	return "GET http://" + originHost + path + " HTTP/1.1\r\nHost: " + originHost + "\r\n" + extra + "\r\n"
}

func mustWrite(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

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

// wantClosed checks that the server closed c (after what br already holds
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

// logCapture is a logger whose lines a test can read.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (lc *logCapture) Write(p []byte) (int, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.buf.Write(p)
}

func (lc *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lc, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func (lc *logCapture) String() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.buf.String()
}

// wantLogged waits for a log line containing every one of parts.
func (lc *logCapture) wantLogged(t testing.TB, parts ...string) {
	t.Helper()
	eventually(t, "a log line with "+strings.Join(parts, ", "), func() bool {
		for _, line := range strings.Split(lc.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	})
}

// curlFails runs curl, which must fail, and returns its exit code and
// standard error. The test is skipped when curl is not installed (.ci/run
// installs it).
func curlFails(t *testing.T, args ...string) (int, string) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "--noproxy", "", "--max-time", "20"}, args...)...)
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=", "NO_PROXY=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("curl %q: want a failure, got %v", args, err)
	}
	return ee.ExitCode(), stderr.String()
}

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

// newTestTransport returns a Transport with the proxy's default settings,
// changed by mod (if not nil), dialing with a plain net.Dialer; its idle
// connections are closed when the test ends.
func newTestTransport(t testing.TB, mod func(*TransportSettings)) *Transport {
	t.Helper()
	st := &TransportSettings{
		MaxIdleConnsPerHost:    64,
		MaxIdleConns:           1024,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 256 << 10,
	}
	if mod != nil {
		mod(st)
	}
	var d net.Dialer
	tr := NewTransport(TransportConfig{Dial: d.DialContext, Settings: func() *TransportSettings { return st }})
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// mustGet gets u with c and returns the response and its body.
func mustGet(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
