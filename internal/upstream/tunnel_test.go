package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/peertest"
)

// peerCase is an upstream under test and what it answers.
type peerCase struct {
	spec     string // with good credentials, if the peer takes any
	opts     []Option
	badSpec  string // with wrong credentials; "" if the peer takes none
	badKind  error
	badCode  int // Status (HTTP) or Reply (SOCKS5) expected with badSpec
	noneSpec string
	refused  int // Status or Reply for a refused target (port 9); 0: not tested
	tcp      bool
}

func tunnelDeadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func runPeerCase(t *testing.T, pc peerCase) {
	origin := echoServer(t)
	ctx := tunnelDeadline(t)

	t.Run("tunnel", func(t *testing.T) {
		u := MustParse(pc.spec, pc.opts...)
		c, err := u.DialTunnel(ctx, origin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if pc.tcp {
			if _, err := tcpOf(c); err != nil {
				t.Fatalf("the tunnel is not spliceable: %v", err)
			}
		}
		echoCheck(t, c)
		if s := u.Stats(); !s.Up || s.Successes != 1 || s.Failures != 0 {
			t.Fatalf("stats after a tunnel: %+v", s)
		}
	})
	if pc.badSpec != "" {
		t.Run("wrong credentials", func(t *testing.T) {
			u := MustParse(pc.badSpec, pc.opts...)
			_, err := u.DialTunnel(ctx, origin)
			var e *Error
			if !errors.As(err, &e) || e.Kind != pc.badKind {
				t.Fatalf("err = %v, want kind %v", err, pc.badKind)
			}
			if code := e.Status + e.Reply; code != pc.badCode {
				t.Fatalf("status/reply %d, want %d (%v)", code, pc.badCode, err)
			}
			if s := u.Stats(); !s.Up || s.Refusals != 1 {
				t.Fatalf("a rejection of credentials changed the health: %+v", s)
			}
		})
	}
	if pc.noneSpec != "" {
		t.Run("no credentials", func(t *testing.T) {
			u := MustParse(pc.noneSpec, pc.opts...)
			_, err := u.DialTunnel(ctx, origin)
			if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "none are configured") {
				t.Fatalf("err = %v, want ErrAuth saying none are configured", err)
			}
		})
	}
	if pc.refused != 0 {
		t.Run("refused target", func(t *testing.T) {
			u := MustParse(pc.spec, pc.opts...)
			_, err := u.DialTunnel(ctx, "127.0.0.1:9")
			var e *Error
			if !errors.As(err, &e) || e.Kind != ErrRefused || e.Status+e.Reply != pc.refused || e.Target != "127.0.0.1:9" {
				t.Fatalf("err = %v (%+v), want ErrRefused with %d", err, e, pc.refused)
			}
			if !u.Up() {
				t.Fatal("a refusal marked the upstream down")
			}
		})
	}
}

func TestSquid(t *testing.T) {
	t.Parallel()
	addr := peertest.StartSquid(t, testUser, testPass)
	runPeerCase(t, peerCase{
		spec:     "http://" + testUser + ":" + testPass + "@" + addr,
		badSpec:  "http://" + testUser + ":wrong@" + addr,
		badKind:  ErrAuth,
		badCode:  407,
		noneSpec: "http://" + addr,
		refused:  403,
		tcp:      true,
	})
	t.Run("transport", func(t *testing.T) {
		testTransport(t, "http://"+testUser+":"+testPass+"@"+addr, nil, true)
	})
}

func TestTinyproxy(t *testing.T) {
	t.Parallel()
	addr := peertest.StartTinyproxy(t, testUser, testPass)
	runPeerCase(t, peerCase{
		spec:     "http://" + testUser + ":" + testPass + "@" + addr,
		badSpec:  "http://" + testUser + ":wrong@" + addr,
		badKind:  ErrAuth,
		badCode:  401, // tinyproxy answers a wrong password with 401, a missing one with 407
		noneSpec: "http://" + addr,
		tcp:      true,
	})
	t.Run("transport", func(t *testing.T) {
		testTransport(t, "http://"+testUser+":"+testPass+"@"+addr, nil, true)
	})
}

func TestDante(t *testing.T) {
	t.Parallel()
	addr := peertest.StartDante(t)
	runPeerCase(t, peerCase{
		spec:    "socks5://" + addr,
		refused: 2, // "connection not allowed by ruleset"
		tcp:     true,
	})
	t.Run("socks5h", func(t *testing.T) {
		c, err := MustParse("socks5h://"+addr).DialTunnel(tunnelDeadline(t), echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoCheck(t, c)
	})
	t.Run("closed target", func(t *testing.T) {
		_, err := MustParse("socks5://"+addr).DialTunnel(tunnelDeadline(t), closedAddr(t))
		var e *Error
		if !errors.As(err, &e) || e.Kind != ErrRefused || e.Reply != 5 {
			t.Fatalf("err = %v, want ErrRefused with reply 5", err)
		}
	})
	t.Run("transport", func(t *testing.T) {
		testTransport(t, "socks5://"+addr, nil, true)
	})
}

func TestSOCKS5WithCredentials(t *testing.T) {
	t.Parallel()
	s := peertest.StartSOCKS(t, testUser, testPass, 0)
	runPeerCase(t, peerCase{
		spec:     "socks5://" + testUser + ":" + testPass + "@" + s.Addr(),
		badSpec:  "socks5://" + testUser + ":wrong@" + s.Addr(),
		badKind:  ErrAuth,
		noneSpec: "socks5://" + s.Addr(),
		tcp:      true,
	})
	t.Run("transport", func(t *testing.T) {
		testTransport(t, "socks5://"+testUser+":"+testPass+"@"+s.Addr(), nil, true)
	})
}

// TestSOCKSReplies pins the texts of x/net's SOCKS client that
// socksError maps back to reply codes.
func TestSOCKSReplies(t *testing.T) {
	t.Parallel()
	origin := echoServer(t)
	for code := byte(1); code <= 9; code++ {
		s := peertest.StartSOCKS(t, "", "", code)
		_, err := MustParse("socks5://"+s.Addr()).DialTunnel(tunnelDeadline(t), origin)
		var e *Error
		if !errors.As(err, &e) || e.Reply != int(code) {
			t.Errorf("reply %d: err = %v, Reply %d", code, err, e.Reply)
			continue
		}
		want := ErrRefused
		if code >= 7 {
			want = ErrProtocol
		}
		if e.Kind != want {
			t.Errorf("reply %d: kind %v, want %v", code, e.Kind, want)
		}
	}
}

func TestHTTPSUpstream(t *testing.T) {
	t.Parallel()
	srv, _ := startHTTPSProxy(t, testUser, testPass)
	addr := strings.TrimPrefix(srv.URL, "https://")
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	runPeerCase(t, peerCase{
		spec:     "https://" + testUser + ":" + testPass + "@" + addr,
		opts:     []Option{WithRootCAs(roots)},
		badSpec:  "https://" + testUser + ":wrong@" + addr,
		badKind:  ErrAuth,
		badCode:  407,
		noneSpec: "https://" + addr,
		refused:  403,
	})
	t.Run("server name", func(t *testing.T) {
		ctx := tunnelDeadline(t)
		origin := echoServer(t)
		// httptest's certificate is valid for example.com too.
		c, err := MustParse("https://"+testUser+":"+testPass+"@"+addr, WithRootCAs(roots), WithServerName("example.com")).DialTunnel(ctx, origin)
		if err != nil {
			t.Fatal(err)
		}
		tc, ok := c.(*tls.Conn)
		if !ok || tc.ConnectionState().ServerName != "example.com" {
			t.Fatalf("tunnel %T not TLS with SNI example.com", c)
		}
		c.Close()
		_, err = MustParse("https://"+addr, WithRootCAs(roots), WithServerName("wrong.test")).DialTunnel(ctx, origin)
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})
	t.Run("transport", func(t *testing.T) {
		testTransport(t, "https://"+testUser+":"+testPass+"@"+addr, []Option{WithRootCAs(roots)}, false)
	})
}

// testTransport sends GETs to a plain and a TLS origin through spec with
// an http.Transport set up by ConfigureTransport, and (withProxyURL) with
// a plain Transport whose Proxy returns ProxyURL.
func testTransport(t *testing.T, spec string, opts []Option, withProxyURL bool) {
	var hits atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Proxy-Authorization") != "" {
			t.Error("the origin got Proxy-Authorization")
		}
		_, _ = io.WriteString(w, "hello from "+r.Host)
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	secure := httptest.NewTLSServer(handler)
	defer secure.Close()
	originRoots := x509.NewCertPool()
	originRoots.AddCert(secure.Certificate())

	u := MustParse(spec, opts...)
	get := func(t *testing.T, tr *http.Transport, target string, withCtx bool) {
		ctx := context.Background()
		if withCtx {
			ctx = NewContext(ctx, u)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		before := hits.Load()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %s through %s: %v", target, u, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from ") || hits.Load() != before+1 {
			t.Fatalf("GET %s through %s: %d %q", target, u, resp.StatusCode, body)
		}
	}
	t.Run("ConfigureTransport", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: originRoots}}
		ConfigureTransport(tr)
		defer tr.CloseIdleConnections()
		get(t, tr, plain.URL+"/a", true)
		get(t, tr, plain.URL+"/b", true) // on a reused connection
		get(t, tr, secure.URL+"/c", true)
		// The dial counts failures, not successes: a request's outcome is
		// its caller's to observe (Observe).
		if s := u.Stats(); !s.Up || s.Successes != 0 || s.Failures != 0 {
			t.Fatalf("stats: %+v", s)
		}
		// Without an upstream in the context, the request goes direct.
		get(t, tr, plain.URL+"/d", false)
	})
	if withProxyURL {
		t.Run("ProxyURL", func(t *testing.T) {
			tr := &http.Transport{Proxy: http.ProxyURL(u.ProxyURL()), TLSClientConfig: &tls.Config{RootCAs: originRoots}}
			defer tr.CloseIdleConnections()
			get(t, tr, plain.URL+"/e", false)
			get(t, tr, secure.URL+"/f", false)
		})
	}
}

func TestTransportRejection(t *testing.T) {
	t.Parallel()
	srv, _ := startHTTPProxy(t, testUser, testPass)
	addr := strings.TrimPrefix(srv.URL, "http://")
	tr := &http.Transport{}
	ConfigureTransport(tr)
	defer tr.CloseIdleConnections()
	for _, tt := range []struct {
		spec   string
		target string
		kind   error
		status int
	}{
		{"http://" + testUser + ":wrong@" + addr, "https://127.0.0.1:1/", ErrAuth, 407},
		{"http://" + testUser + ":" + testPass + "@" + addr, "https://127.0.0.1:9/", ErrRefused, 403},
		{"http://" + closedAddr(t), "http://127.0.0.1:1/", ErrUnreachable, 0},
	} {
		u := MustParse(tt.spec)
		req, _ := http.NewRequestWithContext(NewContext(context.Background(), u), http.MethodGet, tt.target, nil)
		_, err := tr.RoundTrip(req)
		var e *Error
		if !errors.As(err, &e) || e.Kind != tt.kind || e.Status != tt.status {
			t.Errorf("%s %s: err = %v, want %v %d", u, tt.target, err, tt.kind, tt.status)
		}
		// The dial observed it already; passing it again does not count twice.
		u.Observe(err)
		if s := u.Stats(); s.Failures+s.Refusals != 1 {
			t.Errorf("%s: counted %d times", u, s.Failures+s.Refusals)
		}
	}
	// An absolute-form request rejected by the upstream is a response
	// (407) for the caller to pass on or act on, not an error.
	u := MustParse("http://" + testUser + ":wrong@" + addr)
	req, _ := http.NewRequestWithContext(NewContext(context.Background(), u), http.MethodGet, "http://127.0.0.1:1/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Fatalf("status %d, want 407", resp.StatusCode)
	}
}

func TestDialTunnelFailures(t *testing.T) {
	t.Parallel()
	origin := echoServer(t)
	silent := rawServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	garbage := rawServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 ok\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c)
	})
	closing := rawServer(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 100)); c.Close() })
	huge := rawServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\n"))
		for range 2000 {
			if _, err := c.Write([]byte("X-Filler: " + strings.Repeat("x", 60) + "\r\n")); err != nil {
				return
			}
		}
	})
	for _, tt := range []struct {
		name, addr string
		timeout    time.Duration
		kind       error
	}{
		{"unreachable", closedAddr(t), time.Second, ErrUnreachable},
		{"timeout", silent, 200 * time.Millisecond, ErrTimeout},
		{"malformed answer", garbage, time.Second, ErrProtocol},
		{"closed before answering", closing, time.Second, ErrProtocol},
		{"answer too long", huge, 5 * time.Second, ErrProtocol},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := MustParse("http://"+tt.addr, WithBackoff(Backoff{Min: time.Second, Max: time.Minute}))
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			_, err := u.DialTunnel(ctx, origin)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want %v", err, tt.kind)
			}
			var e *Error
			if !errors.As(err, &e) || e.Upstream != u.Name() || e.Target != origin || !e.Fault() {
				t.Fatalf("error fields: %+v", e)
			}
			var ne net.Error
			if tt.kind == ErrTimeout && !(errors.As(err, &ne) && ne.Timeout()) {
				t.Fatal("a timeout is not a net.Error timeout")
			}
			if time.Since(start) > tt.timeout+time.Second {
				t.Fatalf("took %v", time.Since(start))
			}
			s := u.Stats()
			if s.Up || s.ConsecutiveFailures != 1 || s.NextRetry.IsZero() || s.LastError == "" {
				t.Fatalf("not marked down: %+v", s)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		u := MustParse("http://" + silent)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := u.DialTunnel(ctx, origin)
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if !u.Up() {
			t.Fatal("a cancellation marked the upstream down")
		}
	})
	t.Run("bad target", func(t *testing.T) {
		u := MustParse("http://" + silent)
		for _, target := range []string{"example.com", "a b:1", "x\r\nEvil: 1:443", "[::1:443"} {
			if _, err := u.DialTunnel(context.Background(), target); err == nil || !u.Up() {
				t.Fatalf("target %q: err = %v", target, err)
			}
		}
	})
	t.Run("direct", func(t *testing.T) {
		if _, err := MustParse("DIRECT").DialTunnel(context.Background(), origin); !errors.Is(err, errNoDirectDial) {
			t.Fatalf("DIRECT without a direct dial: %v", err)
		}
		var dialed atomic.Int32
		d := MustParse("DIRECT", WithDirectDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Add(1)
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		}))
		c, err := d.DialTunnel(context.Background(), origin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoCheck(t, c)
		if dialed.Load() != 1 {
			t.Fatal("the direct dial was not used")
		}
	})
}

// TestDialUsesInjectedDial checks that the upstream's own address goes
// through WithDial.
func TestDialUsesInjectedDial(t *testing.T) {
	t.Parallel()
	srv, _ := startHTTPProxy(t, "", "")
	var dialed []string
	u := MustParse("http://proxy.invalid:3128", WithDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		var d net.Dialer
		return d.DialContext(ctx, network, strings.TrimPrefix(srv.URL, "http://"))
	}))
	c, err := u.DialTunnel(tunnelDeadline(t), echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c)
	if len(dialed) != 1 || dialed[0] != "proxy.invalid:3128" {
		t.Fatalf("dialed %v", dialed)
	}
}

// TestEarlyBytes checks that bytes an upstream sends right after its 200
// come first, and that the returned *Conn hands copies to the TCP
// connection so that io.Copy splices.
func TestEarlyBytes(t *testing.T) {
	t.Parallel()
	addr := rawServer(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err != nil {
			return
		}
		_, _ = c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\nEARLY"))
		_, _ = io.Copy(c, c) // then echo
	})
	u := MustParse("http://" + addr)
	c, err := u.DialTunnel(tunnelDeadline(t), "example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("got %T, want *Conn", c)
	}
	if string(bc.Buffered()) != "EARLY" {
		t.Fatalf("Buffered = %q", bc.Buffered())
	}
	if _, err := tcpOf(bc.NetConn()); err != nil {
		t.Fatal(err)
	}

	// WriteTo: the early bytes, then the TCP connection as the source of
	// the destination's ReadFrom, which splices between TCP connections.
	sink, peer := tcpPair(t)
	rec := &recordingConn{TCPConn: sink}
	_, _ = io.WriteString(c, "ECHOED")
	if err := bc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(rec, c)
	if err != nil || n != int64(len("EARLYECHOED")) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	sink.Close()
	got, _ := io.ReadAll(peer)
	if string(got) != "EARLYECHOED" {
		t.Fatalf("copied %q", got)
	}
	if want := reflect.TypeFor[*net.TCPConn](); rec.from != want {
		t.Fatalf("ReadFrom got a %v, want %v (no splice)", rec.from, want)
	}

	// ReadFrom: the reader goes unchanged to the connection's ReadFrom.
	fake := &recordingConn{}
	src := &net.TCPConn{}
	_, _ = (&Conn{Conn: fake}).ReadFrom(src)
	if fake.from != reflect.TypeOf(src) {
		t.Fatalf("ReadFrom passed a %v on", fake.from)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// recordingConn records the type of the reader its ReadFrom gets, then
// passes it to the TCP connection's ReadFrom (if any).
type recordingConn struct {
	*net.TCPConn
	from reflect.Type
}

func (r *recordingConn) ReadFrom(src io.Reader) (int64, error) {
	r.from = reflect.TypeOf(src)
	if r.TCPConn == nil {
		return 0, nil
	}
	return r.TCPConn.ReadFrom(src)
}
