package fwdproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
)

// Tests of Serve and its own HTTP/1.1 loop (internal/h1) with the Proxy
// behind it, through real sockets: what the loop does with the proxy's
// answers, hooks, limits and tunnels, and how Serve and Shutdown drive it.
// The loop's mechanics alone are tested in internal/h1 with a test handler.
// Each test speaks HTTP by hand so that it sees the bytes the loop sends,
// and tells the loop's answers from net/http's (after a hand-off) by
// counting the connections the loop holds.

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

// TestLoopRefusesOverLimitAtAccept: with WithMaxConns connections open that
// send nothing, a further connection gets 503 at once without sending a
// byte, and is closed; the refusals are counted and logged (not once per
// connection); real clients are served again as soon as the silent ones
// close.
func TestLoopRefusesOverLimitAtAccept(t *testing.T) {
	o, host := pathOrigin(t)
	const limit = 5
	var logs logCapture
	tp := startProxy(t, WithMaxConns(limit), WithLogger(logs.logger()))
	silent := make([]net.Conn, limit)
	for i := range silent {
		c, _ := tp.rawConn(t)
		silent[i] = c
	}
	wantOpenConns(t, tp.Proxy, limit)

	const refused = 20
	for i := range refused {
		c, br := tp.rawConn(t)
		_ = c.SetReadDeadline(time.Now().Add(promptly))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("over-limit connection %d sent nothing and got: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || !strings.Contains(string(body), "WithMaxConns") {
			t.Fatalf("over the limit: %d close %v %q", resp.StatusCode, resp.Close, body)
		}
		wantClosed(t, c, br)
	}
	// Real clients over the limit are refused at once as well. curl reads
	// the 503; Go's client fails at once with "unsolicited response",
	// because the answer may arrive before it has written its request.
	if code, stderr := curlFails(t, "-f", "-x", tp.URL.String(), o+"/real"); code != 22 || !strings.Contains(stderr, "503") {
		t.Errorf("curl over the limit: exit %d %s, want 22 (HTTP error) with 503", code, stderr)
	}
	client := tp.client(t, nil)
	start := time.Now()
	if resp, err := client.Get(o + "/real"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Go client over the limit: %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d > promptly {
		t.Errorf("Go client over the limit took %v", d)
	}
	if got := tp.Stats().RefusedConnections; got != refused+2 {
		t.Errorf("Stats().RefusedConnections = %d, want %d", got, refused+2)
	}
	logs.wantLogged(t, "connection refused: too many client connections", "max_conns=5")
	if n := strings.Count(logs.String(), "connection refused"); n > 3 {
		t.Errorf("%d log lines for %d refusals in well under 3 s: want at most one a second", n, refused+2)
	}
	wantOpenConns(t, tp.Proxy, limit)

	for _, c := range silent {
		c.Close()
	}
	wantOpenConns(t, tp.Proxy, 0)
	if r, body := mustGet(t, client, o+"/again"); r.StatusCode != 200 || body != "GET /again" {
		t.Fatalf("after the silent connections closed: %d %q", r.StatusCode, body)
	}
	c, br := tp.rawConn(t)
	mustWrite(t, c, rawGet(o, host, "/raw", ""))
	if r := readWire(t, br, "GET"); r.status != 200 {
		t.Fatalf("raw client after the silent connections closed: %d", r.status)
	}
}
