package socks5

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// testServer is a SOCKS5 server on loopback built on this package the way
// the proxy's front end uses it: Handshake, dial the target, Reply (with
// ReplyFor on a failed dial), then relay, forwarding Early first.
type testServer struct {
	ln   net.Listener
	auth AuthFunc
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	reqs  []Request // copies of the requests served
	errs  []error   // handshake errors
}

func startServer(t *testing.T, auth AuthFunc) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln, auth: auth, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.close)
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *testServer) serve(c net.Conn) {
	req, err := Handshake(c, Options{Deadline: time.Now().Add(5 * time.Second), Auth: s.auth})
	s.mu.Lock()
	if err != nil {
		s.errs = append(s.errs, err)
	} else {
		r := *req
		r.conn = nil
		s.reqs = append(s.reqs, r)
	}
	s.mu.Unlock()
	if err != nil {
		return
	}
	up, err := net.DialTimeout("tcp", req.Target(), 5*time.Second)
	if err != nil {
		_ = req.Reply(ReplyFor(err), netip.AddrPort{})
		return
	}
	defer up.Close()
	if err := req.Reply(ReplySucceeded, up.LocalAddr().(*net.TCPAddr).AddrPort()); err != nil {
		return
	}
	if len(req.Early()) > 0 {
		if _, err := up.Write(req.Early()); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
	_ = c.(*net.TCPConn).CloseWrite()
	<-done
}

func (s *testServer) requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *testServer) errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// waitErr waits for the server to record a handshake error (it does so
// after answering, so a client may see the answer first).
func (s *testServer) waitErr(t *testing.T) error {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if errs := s.errors(); len(errs) > 0 {
			return errs[len(errs)-1]
		}
	}
	t.Fatal("no handshake error recorded")
	return nil
}

// origin is an HTTP server on loopback (network "tcp4" or "tcp6") that
// answers with its path.
func origin(t *testing.T, network string) *httptest.Server {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s", r.URL.Path)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func originPort(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// curl runs curl with args and returns its output and error; the test is
// skipped when curl is not installed (.ci/run installs it).
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "--max-time", "20"}, args...)...)
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=", "all_proxy=", "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCurl(t *testing.T) {
	o := origin(t, "tcp4")
	port := originPort(t, o)
	creds := func(user, pass string) (string, bool) { return user, user == "alice" && pass == "s3cret:x" }
	for _, tc := range []struct {
		name    string
		auth    AuthFunc
		args    []string // before the URL; %s is the proxy's address
		url     string
		fail    bool
		host    string // the request's Host()
		domain  bool
		user    string
		wantErr error // the server's handshake error when fail
	}{
		{name: "socks5-hostname", args: []string{"--socks5-hostname", "%s"}, url: "http://localhost:" + port + "/a", host: "localhost", domain: true},
		// --socks5 sends an address (ATYP IPv4); a literal keeps the test
		// independent of what localhost resolves to first.
		{name: "socks5", args: []string{"--socks5", "%s"}, url: "http://127.0.0.1:" + port + "/b", host: "127.0.0.1"},
		{name: "socks5h URL", args: []string{"-x", "socks5h://%s"}, url: "http://localhost:" + port + "/c", host: "localhost", domain: true},
		{name: "proxy-user", auth: creds, args: []string{"--socks5-hostname", "%s", "--proxy-user", "alice:s3cret:x"}, url: "http://localhost:" + port + "/d", host: "localhost", domain: true, user: "alice"},
		{name: "proxy-user with socks5", auth: creds, args: []string{"--socks5", "%s", "--proxy-user", "alice:s3cret:x"}, url: "http://127.0.0.1:" + port + "/e", host: "127.0.0.1", user: "alice"},
		{name: "wrong password", auth: creds, args: []string{"--socks5-hostname", "%s", "--proxy-user", "alice:nope"}, url: "http://localhost:" + port + "/f", fail: true, wantErr: ErrAuthFailed},
		{name: "no credentials", auth: creds, args: []string{"--socks5-hostname", "%s"}, url: "http://localhost:" + port + "/g", fail: true, wantErr: ErrNoAcceptableMethod},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.auth)
			args := make([]string, 0, len(tc.args)+1)
			for _, a := range tc.args {
				if strings.Contains(a, "%s") {
					a = fmt.Sprintf(a, s.addr())
				}
				args = append(args, a)
			}
			out, err := curl(t, append(args, tc.url)...)
			if tc.fail {
				if err == nil {
					t.Fatalf("curl succeeded: %s", out)
				}
				if got := s.waitErr(t); !errors.Is(got, tc.wantErr) {
					t.Fatalf("server error %v, want %v", got, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("curl: %v: %s", err, out)
			}
			path := tc.url[strings.LastIndex(tc.url, "/"):]
			if out != "origin "+path {
				t.Fatalf("body %q", out)
			}
			reqs := s.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.Host() != tc.host || r.Domain != tc.domain || r.User != tc.user || r.Port != mustPort(t, port) {
				t.Errorf("request host %q domain %v user %q port %d", r.Host(), r.Domain, r.User, r.Port)
			}
		})
	}
}

func mustPort(t *testing.T, s string) uint16 {
	t.Helper()
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(p)
}

// TestCurlIPv6 sends an IPv6 target (ATYP 4) with curl.
func TestCurlIPv6(t *testing.T) {
	o := origin(t, "tcp6")
	s := startServer(t, nil)
	out, err := curl(t, "--socks5", s.addr(), "http://[::1]:"+originPort(t, o)+"/v6")
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if out != "origin /v6" {
		t.Fatalf("body %q", out)
	}
	if r := s.requests()[0]; r.Addr != netip.IPv6Loopback() || r.Domain {
		t.Errorf("request addr %v domain %v", r.Addr, r.Domain)
	}
}

// httpVia fetches url through the SOCKS5 dialer d.
func httpVia(t *testing.T, d proxy.Dialer, url string) (string, error) {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.(proxy.ContextDialer).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestGoClient uses golang.org/x/net/proxy's SOCKS5 client, with and
// without authentication, to an IPv4, an IPv6 and a named target.
func TestGoClient(t *testing.T) {
	o4 := origin(t, "tcp4")
	creds := func(user, pass string) (string, bool) { return user, user == "bob" && pass == "pw" }
	for _, tc := range []struct {
		name   string
		auth   AuthFunc
		client *proxy.Auth
		url    string
		fail   error // the server's handshake error, when the client must fail
		user   string
		domain bool
	}{
		{name: "no auth, IPv4", url: o4.URL + "/a"},
		{name: "no auth, name", url: "http://localhost:" + originPort(t, o4) + "/b", domain: true},
		{name: "auth", auth: creds, client: &proxy.Auth{User: "bob", Password: "pw"}, url: o4.URL + "/c", user: "bob"},
		{name: "auth offered, none required", client: &proxy.Auth{User: "bob", Password: "pw"}, url: o4.URL + "/d"},
		{name: "wrong password", auth: creds, client: &proxy.Auth{User: "bob", Password: "no"}, url: o4.URL + "/e", fail: ErrAuthFailed},
		{name: "no credentials", auth: creds, url: o4.URL + "/f", fail: ErrNoAcceptableMethod},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.auth)
			d, err := proxy.SOCKS5("tcp", s.addr(), tc.client, proxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			body, err := httpVia(t, d, tc.url)
			if tc.fail != nil {
				if err == nil {
					t.Fatal("request succeeded")
				}
				if got := s.waitErr(t); !errors.Is(got, tc.fail) {
					t.Fatalf("server error %v, want %v", got, tc.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := "origin " + tc.url[strings.LastIndex(tc.url, "/"):]; body != want {
				t.Fatalf("body %q, want %q", body, want)
			}
			r := s.requests()[0]
			if r.User != tc.user || r.Domain != tc.domain {
				t.Errorf("user %q domain %v", r.User, r.Domain)
			}
		})
	}
	t.Run("IPv6", func(t *testing.T) {
		o6 := origin(t, "tcp6")
		s := startServer(t, nil)
		d, err := proxy.SOCKS5("tcp", s.addr(), nil, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		body, err := httpVia(t, d, o6.URL+"/v6")
		if err != nil || body != "origin /v6" {
			t.Fatalf("%q, %v", body, err)
		}
		if r := s.requests()[0]; r.Addr != netip.IPv6Loopback() || r.Domain {
			t.Errorf("addr %v domain %v", r.Addr, r.Domain)
		}
	})
}

// rawExchange connects to the server, sends the no-auth greeting and msg,
// and returns the reply to msg and whether the server then ended the
// connection.
func rawExchange(t *testing.T, addr string, msg []byte) (reply []byte, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(greetNoAuth); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("method selection % x, %v", sel, err)
	}
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	reply = make([]byte, 10)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatalf("reply: %v", err)
	}
	_, err = c.Read(make([]byte, 1))
	return reply, err == io.EOF
}

// TestErrorReplies checks the replies a real client on loopback gets for
// requests that fail, and that each failure ends the connection.
func TestErrorReplies(t *testing.T) {
	s := startServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	for _, tc := range []struct {
		name string
		msg  []byte
		code ReplyCode
	}{
		{"BIND", reqIPv4(CmdBind, [4]byte{127, 0, 0, 1}, 80), ReplyCommandNotSupported},
		{"UDP ASSOCIATE", reqIPv4(CmdUDPAssociate, [4]byte{}, 0), ReplyCommandNotSupported},
		{"unknown address type", []byte{5, 1, 0, 9, 0, 0}, ReplyAddressTypeNotSupported},
		{"bad name", reqName(CmdConnect, "bad name", 80), ReplyGeneralFailure},
		{"refused (IPv4)", reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, closedPort), ReplyConnectionRefused},
		{"refused (name)", reqName(CmdConnect, "127.0.0.1", closedPort), ReplyConnectionRefused},
	} {
		reply, closed := rawExchange(t, s.addr(), tc.msg)
		if reply[0] != 5 || ReplyCode(reply[1]) != tc.code {
			t.Errorf("%s: reply % x, want code %#x (%v)", tc.name, reply, byte(tc.code), tc.code)
		}
		if !closed {
			t.Errorf("%s: connection not closed after the failure reply", tc.name)
		}
	}
}

// TestHandshakeDeadline checks that a client that sends nothing, or stops
// in the middle of its greeting, is cut off at the deadline.
func TestHandshakeDeadline(t *testing.T) {
	for _, send := range [][]byte{nil, {5, 2, 0}} {
		client, server := loopbackPair(t)
		if _, err := client.Write(send); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := Handshake(server, Options{Deadline: start.Add(100 * time.Millisecond)})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("sent % x: %v, want a deadline error", send, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("sent % x: returned after %v", send, d)
		}
		client.Close()
		server.Close()
	}
}

// TestSuccessClearsDeadline checks that the tunnel after a handshake with a
// deadline has none.
func TestSuccessClearsDeadline(t *testing.T) {
	client, server := loopbackPair(t)
	defer client.Close()
	defer server.Close()
	if _, err := client.Write(cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80))); err != nil {
		t.Fatal(err)
	}
	req, err := Handshake(server, Options{Deadline: time.Now().Add(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Reply(ReplySucceeded, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	go func() {
		_, _ = client.Write([]byte("x"))
	}()
	var b [1]byte
	if _, err := server.Read(b[:]); err != nil {
		t.Fatalf("read after the handshake deadline passed: %v", err)
	}
}

// loopbackPair returns the two ends of a loopback TCP connection.
func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

func TestReplyFor(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want ReplyCode
	}{
		{nil, ReplyGeneralFailure},
		{errors.New("boom"), ReplyGeneralFailure},
		{refused, ReplyConnectionRefused},
		{fmt.Errorf("wrapped: %w", refused), ReplyConnectionRefused},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, ReplyNetworkUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, ReplyHostUnreachable},
		{&net.DNSError{Name: "x.invalid", Err: "no such host", IsNotFound: true}, ReplyHostUnreachable},
		{&net.DNSError{Name: "x.example", Err: "i/o timeout", IsTimeout: true}, ReplyTTLExpired},
		{context.DeadlineExceeded, ReplyTTLExpired},
		{fmt.Errorf("dial: %w", os.ErrDeadlineExceeded), ReplyTTLExpired},
	} {
		if got := ReplyFor(tc.err); got != tc.want {
			t.Errorf("ReplyFor(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	for _, tc := range []struct {
		status int
		cause  error
		want   ReplyCode
	}{
		{http.StatusForbidden, nil, ReplyNotAllowed},
		{http.StatusProxyAuthRequired, nil, ReplyNotAllowed},
		{http.StatusTooManyRequests, nil, ReplyNotAllowed},
		{http.StatusLoopDetected, nil, ReplyNotAllowed},
		{http.StatusGatewayTimeout, nil, ReplyTTLExpired},
		{http.StatusBadGateway, refused, ReplyConnectionRefused},
		{http.StatusBadGateway, &net.DNSError{IsNotFound: true}, ReplyHostUnreachable},
		{http.StatusBadGateway, nil, ReplyGeneralFailure},
		{http.StatusServiceUnavailable, nil, ReplyGeneralFailure},
		{http.StatusBadRequest, nil, ReplyGeneralFailure},
	} {
		if got := ReplyForStatus(tc.status, tc.cause); got != tc.want {
			t.Errorf("ReplyForStatus(%d, %v) = %v, want %v", tc.status, tc.cause, got, tc.want)
		}
	}
}
