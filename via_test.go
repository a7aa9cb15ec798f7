package fwdproxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/peertest"
)

// Credentials of the upstream proxies the tests chain through, and of the
// clients of the first proxy: distinctive, so that a scan for them in
// logs, errors and descriptions finds any leak.
const (
	chainUser  = "chain-u53r"
	chainPass  = "chain-Pa55w0rd-x9"
	clientUser = "client-u53r"
	clientPass = "client-Pa55w0rd-q7"
)

// upstreamFwdproxy starts a second fwdproxy for chaining, whose Via
// pseudonym is name, requiring chainUser and chainPass, with private
// destinations allowed (the test origins are on loopback).
func upstreamFwdproxy(t testing.TB, name string, opts ...Option) *testProxy {
	t.Helper()
	return startProxy(t, append([]Option{WithVia(name), WithBasicAuth(StaticCredentials(map[string]string{chainUser: chainPass}))}, opts...)...)
}

// tlsUpstreamFwdproxy serves a fwdproxy like upstreamFwdproxy's over TLS
// (HTTP/1.1, httptest's certificate for 127.0.0.1): the HTTPS upstream.
// It returns the address and the roots that trust it.
func tlsUpstreamFwdproxy(t testing.TB, name string) (string, *x509.CertPool) {
	t.Helper()
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort(), WithVia(name),
		WithBasicAuth(StaticCredentials(map[string]string{chainUser: chainPass})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = p.Shutdown(t.Context())
	})
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv.Listener.Addr().String(), pool
}

// chainOrigin is an origin that answers GET with "got <path>" and echoes a
// POST's body, recording the Via and Proxy-Authorization it was sent.
type chainOrigin struct {
	*httptest.Server
	mu      sync.Mutex
	vias    []string
	authzes []string
}

func newChainOrigin(t testing.TB) *chainOrigin {
	o := &chainOrigin{}
	o.Server = origin(t, func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.vias = append(o.vias, strings.Join(r.Header.Values("Via"), ", "))
		o.authzes = append(o.authzes, r.Header.Values("Proxy-Authorization")...)
		o.mu.Unlock()
		if r.Method == http.MethodPost {
			_, _ = io.Copy(w, r.Body)
			return
		}
		_, _ = io.WriteString(w, "got "+r.URL.Path)
	})
	return o
}

// lastVia is the Via the origin was last sent.
func (o *chainOrigin) lastVia() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.vias) == 0 {
		return ""
	}
	return o.vias[len(o.vias)-1]
}

func (o *chainOrigin) sawAuthorization() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.authzes...)
}

// authedClient is a client of tp with clientUser's credentials (the first
// proxy requires them: they must not reach the upstream or the origin).
func authedClient(t testing.TB, tp *testProxy) *http.Client {
	u := *tp.URL
	u.User = url.UserPassword(clientUser, clientPass)
	return proxytestClient(t, &u)
}

func proxytestClient(t testing.TB, u *url.URL) *http.Client {
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableCompression: true}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// connectAuthed opens a tunnel through tp to target with clientUser's
// credentials and returns it after the 200.
func connectAuthed(t testing.TB, tp *testProxy, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := tp.rawConn(t)
	authz := "Basic " + base64.StdEncoding.EncodeToString([]byte(clientUser+":"+clientPass))
	mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+authz+"\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("CONNECT %s: %d %q", target, resp.StatusCode, b)
	}
	return c, br
}

// echoThrough sends a line through an open tunnel and expects it back.
func echoThrough(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "ping through the chain\n"
	mustWrite(t, c, msg)
	got, err := br.ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("echo through the tunnel: %q, %v", got, err)
	}
}

// assertNoSecrets fails if any of the credentials appears in s.
func assertNoSecrets(t testing.TB, what, s string) {
	t.Helper()
	for _, secret := range []string{chainPass, clientPass, base64.StdEncoding.EncodeToString([]byte(chainUser + ":" + chainPass))} {
		if strings.Contains(s, secret) {
			t.Errorf("%s holds a credential (%q): %s", what, secret, s)
		}
	}
}

// TestChain: one table across the kinds of upstream, each with
// credentials where the peer takes them: a second fwdproxy over HTTP and
// over TLS, Debian's squid and tinyproxy, a SOCKS5 server with user and
// password, and dante (SOCKS5 without: its user method checks system
// accounts). Through each, a plain GET (the own HTTP/1.1 transport for an
// HTTP proxy), a POST with a body (http.Transport), and a CONNECT tunnel
// all arrive; the access record names the upstream (via) without
// credentials; the client's Proxy-Authorization, meant for the first
// proxy, never reaches the upstream or the origin; the log holds no
// credential.
func TestChain(t *testing.T) {
	o := newChainOrigin(t)
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	creds := chainUser + ":" + chainPass + "@"
	type upstreamCase struct {
		name string
		spec func(t *testing.T) (spec string, opts []Option)
		via  string // a part of the Via the origin sees from the upstream, "" when it adds none
	}
	cases := []upstreamCase{
		{"fwdproxy", func(t *testing.T) (string, []Option) {
			return "http://" + creds + upstreamFwdproxy(t, "second-hop").Addr, nil
		}, "second-hop"},
		{"fwdproxy-https", func(t *testing.T) (string, []Option) {
			addr, roots := tlsUpstreamFwdproxy(t, "tls-hop")
			return "https://" + creds + addr, []Option{WithUpstreamRootCAs(roots)}
		}, "tls-hop"},
		{"squid", func(t *testing.T) (string, []Option) {
			return "http://" + creds + peertest.StartSquid(t, chainUser, chainPass), nil
		}, "fwdproxy-test"},
		{"tinyproxy", func(t *testing.T) (string, []Option) {
			return "http://" + creds + peertest.StartTinyproxy(t, chainUser, chainPass), nil
		}, "tinyproxy"},
		{"socks5", func(t *testing.T) (string, []Option) {
			return "socks5://" + creds + peertest.StartSOCKS(t, chainUser, chainPass, 0).Addr(), nil
		}, ""},
		{"dante", func(t *testing.T) (string, []Option) {
			return "socks5://" + peertest.StartDante(t), nil
		}, ""},
	}
	for _, uc := range cases {
		t.Run(uc.name, func(t *testing.T) {
			spec, opts := uc.spec(t)
			var logs syncBuffer
			logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			tp := startProxy(t, append(opts, WithLogger(logger), WithVia("first-hop"),
				WithBasicAuth(StaticCredentials(map[string]string{clientUser: clientPass})),
				WithUpstreams(Route{Upstreams: []string{spec}}))...)
			name := (&url.URL{Scheme: strings.SplitN(spec, ":", 2)[0], Host: spec[strings.LastIndex(spec, "@")+1:]}).String()
			if !strings.Contains(spec, "@") {
				name = spec
			}
			c := authedClient(t, tp)

			resp, body := mustGet(t, c, o.URL+"/small")
			if resp.StatusCode != 200 || body != "got /small" {
				t.Fatalf("GET through %s: %d %q", uc.name, resp.StatusCode, body)
			}
			via := o.lastVia()
			if !strings.Contains(via, "first-hop") || !strings.Contains(via, uc.via) {
				t.Errorf("the origin got Via %q, want first-hop and %q", via, uc.via)
			}

			resp, err := c.Post(o.URL+"/echo", "text/plain", strings.NewReader("a body through the chain"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "a body through the chain" {
				t.Fatalf("POST through %s: %d %q", uc.name, resp.StatusCode, b)
			}

			conn, br := connectAuthed(t, tp, echoAddr)
			echoThrough(t, conn, br)
			conn.Close()

			if got := o.sawAuthorization(); len(got) > 0 {
				t.Errorf("the origin was sent Proxy-Authorization %q", got)
			}
			quiesce(t, tp.Proxy)
			recs := records(t, &logs, "request", 2)
			recs = append(recs, records(t, &logs, "tunnel", 1)...)
			for _, r := range recs {
				if r["via"] != name {
					t.Errorf("access record via = %v, want %q: %v", r["via"], name, r)
				}
			}
			assertNoSecrets(t, "the log", logs.String())
			st := tp.Stats()
			if len(st.Upstreams) != 1 || st.Upstreams[0].Name != name || st.Upstreams[0].Requests != 3 || !st.Upstreams[0].Up {
				t.Errorf("Stats.Upstreams = %+v; want %s up with 3 requests", st.Upstreams, name)
			}
		})
	}
}

// TestChainEverywhere: the other kinds of traffic follow the routes too: a
// WebSocket-style upgrade (a 101 relayed through an upstream fwdproxy) and
// requests inside an intercepted CONNECT (CONNECT to the upstream, then TLS
// to the origin), each named in its access record; and the HTTPS route of
// a scheme rule leaves plain requests direct.
func TestChainEverywhere(t *testing.T) {
	upgrading := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Via: " + strings.Join(r.Header.Values("Via"), ", ") + "\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
	tlsO, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls origin "+r.URL.Path)
	})
	up := upstreamFwdproxy(t, "every-hop")
	name := "http://" + up.Addr
	ca, caPool := newTestCA(t)
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	tp := startProxy(t, WithLogger(logger), WithInterception(ca), WithUpstreamRootCAs(originRoots),
		WithUpstreams(Route{Upstreams: []string{"http://" + chainUser + ":" + chainPass + "@" + up.Addr}}))

	c, br := tp.rawConn(t)
	mustWrite(t, c, "GET "+upgrading.URL+"/ws HTTP/1.1\r\nHost: "+upgrading.Listener.Addr().String()+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.Contains(resp.Header.Get("X-Via"), "every-hop") {
		t.Fatalf("upgrade through the chain: %d, the origin saw Via %q", resp.StatusCode, resp.Header.Get("X-Via"))
	}
	echoThrough(t, c, br)
	c.Close()

	tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), TLSClientConfig: &tls.Config{RootCAs: caPool}}
	t.Cleanup(tr.CloseIdleConnections)
	resp2, body := mustGet(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, tlsO.URL+"/inside")
	if resp2.StatusCode != 200 || body != "tls origin /inside" {
		t.Fatalf("intercepted request through the chain: %d %q", resp2.StatusCode, body)
	}
	tr.CloseIdleConnections() // the intercepted CONNECT ends
	quiesce(t, tp.Proxy)
	for _, r := range append(records(t, &logs, "request", 1), records(t, &logs, "tunnel", 2)...) {
		intercepted := r["requests"] != nil
		if want := name; !intercepted && r["via"] != want {
			t.Errorf("access record via = %v, want %s: %v", r["via"], want, r)
		}
	}
	if s, _ := upstreamState(tp.Proxy, name); s.Requests != 2 || s.Successes != 2 {
		t.Errorf("upstream %s: %+v; want the upgrade and the intercepted request", name, s)
	}
}

// TestProbesStop: the active checks probe each upstream every interval,
// stop when a reload replaces the configuration (a new one probes anew),
// and stop at Shutdown (goleak checks that no goroutine is left).
func TestProbesStop(t *testing.T) {
	var probes sync.Map // address → count
	counting := func() string {
		var n atomicCounter
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) { n.add(); c.Close() })
		probes.Store(addr, &n)
		return addr
	}
	a, b := counting(), counting()
	count := func(addr string) int64 { v, _ := probes.Load(addr); return v.(*atomicCounter).load() }
	tp := startProxy(t, WithUpstreams(Route{Upstreams: []string{"http://" + a}}), WithUpstreamProbe(20*time.Millisecond, ""))
	eventually(t, "probes of a", func() bool { return count(a) >= 3 })
	if err := tp.Reload(WithLogger(testLogger(t)), WithUpstreams(Route{Upstreams: []string{"http://" + b}}), WithUpstreamProbe(20*time.Millisecond, "")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "probes of b", func() bool { return count(b) >= 3 })
	after := count(a)
	time.Sleep(200 * time.Millisecond)
	if n := count(a); n != after {
		t.Errorf("a, no longer an upstream, was probed %d more times after the reload", n-after)
	}
	if err := tp.Reload(WithLogger(testLogger(t)), WithUpstreams(Route{Upstreams: []string{"http://" + b}})); err != nil {
		t.Fatal(err)
	}
	after = count(b)
	time.Sleep(200 * time.Millisecond)
	if n := count(b); n != after {
		t.Errorf("b was probed %d more times after a reload without probes", n-after)
	}
}

type atomicCounter struct {
	mu sync.Mutex
	n  int64
}

func (c *atomicCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCounter) load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
