package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"github.com/fwdproxy/fwdproxy/internal/socks5"
)

// The front ends' settings under Reload, the PROXY protocol's refusals and
// rate limit, SOCKS5's reply codes, splice on every TCP front end, and
// Shutdown with SOCKS clients.

// TestReloadTLSCertificate: Reload with a new certificate in WithTLS: the
// next handshake presents it, and a connection made before keeps working;
// a Reload without WithTLS is refused while ServeTLS runs.
func TestReloadTLSCertificate(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	pki := proxytest.NewPKI(t, "proxy CA")
	first, second := pki.Server(t, "127.0.0.1"), pki.Server(t, "127.0.0.1")
	base := []Option{WithAllowPrivate()}
	m := newMultiFront(t, false, append(base, WithTLS(&tls.Config{Certificates: []tls.Certificate{first}}))...)
	addr := m.listen(t, (*Proxy).ServeTLS)
	fe := &ingress{name: "HTTPS", dial: tlsDial("http/1.1")}
	served := func(c net.Conn) string {
		mustWrite(t, c, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	serial := func(c net.Conn) string {
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	old := fe.dial(t, pki, addr)
	if serial(old) != first.Leaf.SerialNumber.String() {
		t.Fatal("not the first certificate")
	}
	if err := m.Reload(append(base, WithTLS(&tls.Config{Certificates: []tls.Certificate{second}}))...); err != nil {
		t.Fatal(err)
	}
	if c := fe.dial(t, pki, addr); serial(c) != second.Leaf.SerialNumber.String() || served(c) != "ok" {
		t.Error("the handshake after the reload did not present the new certificate")
	}
	if served(old) != "ok" {
		t.Error("a connection made before the reload stopped working")
	}
	if err := m.Reload(base...); err == nil || !strings.Contains(err.Error(), "WithTLS: cannot be removed while ServeTLS runs") {
		t.Errorf("Reload without WithTLS: %v", err)
	}
}

// TestReloadProxyProtocol: the trusted ranges of WithProxyProtocol change
// live: loopback untrusted (a header refused, none needed), trusted (a
// header needed, its address used), then WithProxyProtocol left out (a
// header refused again); turning it on for a listener started without it
// is refused.
func TestReloadProxyProtocol(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	logs := &syncBuffer{}
	base := []Option{WithAllowPrivate(), WithAccessHook(func(_ context.Context, a Access) error {
		fmt.Fprintf(logs, "client=%s\n", a.Client)
		return nil
	})}
	m := newMultiFront(t, false, append(base, WithProxyProtocol(netip.MustParsePrefix("192.0.2.0/24")))...)
	addr := m.listen(t, (*Proxy).Serve)
	_, port, _ := net.SplitHostPort(addr)
	header := "PROXY TCP4 198.51.100.9 127.0.0.1 5555 " + port + "\r\n"
	try := func(withHeader bool) string {
		c := plainDial(t, nil, addr)
		defer c.Close()
		req := "GET " + o.URL + "/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		if withHeader {
			req = header + req
		}
		mustWrite(t, c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "closed"
		}
		resp.Body.Close()
		return resp.Status
	}
	check := func(when string, withHeader, withoutHeader, client string) {
		t.Helper()
		logs.Reset()
		if got := try(true); got != withHeader {
			t.Errorf("%s, with a header: %s, want %s", when, got, withHeader)
		}
		if got := try(false); got != withoutHeader {
			t.Errorf("%s, without a header: %s, want %s", when, got, withoutHeader)
		}
		if !strings.Contains(logs.String(), "client="+client+":") {
			t.Errorf("%s: the access hook saw %q, want client %s", when, logs.String(), client)
		}
	}
	check("loopback untrusted", "closed", "200 OK", "127.0.0.1")
	if err := m.Reload(append(base, WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8")))...); err != nil {
		t.Fatal(err)
	}
	check("loopback trusted", "200 OK", "closed", "198.51.100.9")
	if err := m.Reload(base...); err != nil {
		t.Fatal(err)
	}
	check("off", "closed", "200 OK", "127.0.0.1")

	plain := newMultiFront(t, false, base...)
	plainAddr := plain.listen(t, (*Proxy).Serve)
	if status, _, _ := proxytest.Send(t, plainAddr, get(o.Listener.Addr().String())); status != 200 { // Serve runs
		t.Fatalf("plain listener: %d", status)
	}
	if err := plain.Reload(append(base, WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8")))...); err == nil ||
		!strings.Contains(err.Error(), "cannot be turned on while a listener started without it runs") {
		t.Errorf("turning the PROXY protocol on for a listener without it: %v", err)
	}
}

// TestProxyProtocolClientAddress: the address a PROXY header carries is
// the client's for the rate limit (two clients behind one balancer have a
// bucket each) and the access log; v1 and v2 headers; a malformed header
// closes the connection with a log line.
func TestProxyProtocolClientAddress(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	m := newMultiFront(t, false, WithAllowPrivate(), WithRateLimit(0.001, 1), WithProxyProtocol(netip.MustParsePrefix("127.0.0.1/32")))
	addr := m.listen(t, (*Proxy).Serve)
	_, port, _ := net.SplitHostPort(addr)
	v2 := func(src string) string {
		ap := netip.MustParseAddrPort(src)
		a := ap.Addr().As4()
		b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
		b = append(b, a[:]...)
		b = append(b, 127, 0, 0, 1, byte(ap.Port()>>8), byte(ap.Port()))
		return string(append(b, 0x1f, 0x90))
	}
	status := func(header string) string {
		c := plainDial(t, nil, addr)
		defer c.Close()
		mustWrite(t, c, header+"GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "closed"
		}
		resp.Body.Close()
		return resp.Status
	}
	for i, tc := range []struct{ header, want string }{
		{"PROXY TCP4 203.0.113.1 127.0.0.1 1000 " + port + "\r\n", "200 OK"},
		{"PROXY TCP4 203.0.113.1 127.0.0.1 1001 " + port + "\r\n", "429 Too Many Requests"}, // the same client
		{"PROXY TCP4 203.0.113.2 127.0.0.1 1000 " + port + "\r\n", "200 OK"},                // another one
		{v2("203.0.113.3:2000"), "200 OK"},
		{v2("203.0.113.3:2001"), "429 Too Many Requests"},
		{"PROXY TCP4 203.0.113.300 127.0.0.1 1 2\r\n", "closed"}, // malformed
	} {
		if got := status(tc.header); got != tc.want {
			t.Errorf("request %d: %s, want %s", i, got, tc.want)
		}
	}
	recs := records(t, m.logs, "request", 5)
	for i, want := range []string{"203.0.113.1:1000", "203.0.113.1:1001", "203.0.113.2:1000", "203.0.113.3:2000", "203.0.113.3:2001"} {
		if recs[i]["client"] != want {
			t.Errorf("record %d: client %v, want %s", i, recs[i]["client"], want)
		}
	}
	eventually(t, "the malformed header logged", func() bool {
		return strings.Contains(m.logs.String(), "malformed PROXY protocol header; closed")
	})
	if got := m.Stats().RefusedHandshakes; got != (HandshakeRefusals{ProxyProtocol: 1}) {
		t.Errorf("Stats.RefusedHandshakes %+v, want the malformed header's", got)
	}
}

// TestReloadSOCKS: SOCKS5 authentication follows the configuration in
// force, and so does SOCKS5 on the HTTP listener (WithSOCKSOnHTTPListener),
// which is refused with "no acceptable methods" when off.
func TestReloadSOCKS(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	base := []Option{WithAllowPrivate(), allowAnyConnectPort()}
	m := newMultiFront(t, false, base...)
	socksAddr := m.listen(t, (*Proxy).ServeSOCKS)
	httpAddr := m.listen(t, (*Proxy).Serve)
	try := func(proxyAddr string, cr creds) string {
		c := plainDial(t, nil, proxyAddr)
		defer c.Close()
		code, err := socksConnect(c, addr, cr)
		if err != nil {
			return err.Error()
		}
		return socks5.ReplyCode(code).String()
	}
	if got := try(socksAddr, creds{}); got != "succeeded" {
		t.Errorf("no authentication: %s", got)
	}
	if got := try(httpAddr, creds{}); got != "server chose method 0xff" {
		t.Errorf("SOCKS5 on the HTTP listener, off: %s", got)
	}
	users := WithBasicAuth(StaticCredentials(map[string]string{"dave": "pw"}))
	if err := m.Reload(append(base, users, WithSOCKSOnHTTPListener())...); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{socksAddr, httpAddr} {
		if got := try(a, creds{}); got != "server chose method 0xff" {
			t.Errorf("%s, authentication required, none offered: %s", a, got)
		}
		if got := try(a, creds{"dave", "nope"}); got != "connection not allowed by ruleset" {
			t.Errorf("%s, wrong password: %s", a, got)
		}
		if got := try(a, creds{"dave", "pw"}); got != "succeeded" {
			t.Errorf("%s, right password: %s", a, got)
		}
	}
	// The two handshakes without a method the proxy takes are counted (the
	// refusal of SOCKS5 on the HTTP listener while off is the loop's).
	eventually(t, "two SOCKS5 handshakes counted refused", func() bool {
		return m.Stats().RefusedHandshakes == HandshakeRefusals{SOCKS: 2}
	})
}

// TestSOCKSReplyCodes: the reply codes of failures to reach the target,
// mapped from the pipeline's errors, and of requests SOCKS5 does not serve.
func TestSOCKSReplyCodes(t *testing.T) {
	m := newMultiFront(t, false, WithAllowPrivate(), allowAnyConnectPort(), WithDNSServers(deadDNS(t)), WithDNSTimeout(200*time.Millisecond))
	addr := m.listen(t, (*Proxy).ServeSOCKS)
	// BIND and UDP ASSOCIATE: command not supported (first: refusals
	// of the handshake are logged at most once a second).
	for _, cmd := range []byte{2, 3} {
		c := plainDial(t, nil, addr)
		mustWrite(t, c, "\x05\x01\x00")
		var b [10]byte
		if _, err := io.ReadFull(c, b[:2]); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, c, string([]byte{5, cmd, 0, 1, 127, 0, 0, 1, 0, 80}))
		if _, err := io.ReadFull(c, b[:]); err != nil || b[1] != byte(socks5.ReplyCommandNotSupported) {
			t.Errorf("command %d: reply %v %v", cmd, b, err)
		}
		c.Close()
	}
	for _, tc := range []struct {
		target string
		want   socks5.ReplyCode
	}{
		{closedPort(t), socks5.ReplyConnectionRefused},
		{"nowhere.test:80", socks5.ReplyTTLExpired}, // the DNS server does not answer
		{"127.0.0.1:0", socks5.ReplyGeneralFailure}, // port 0: malformed
	} {
		c := plainDial(t, nil, addr)
		code, err := socksConnect(c, tc.target, creds{})
		c.Close()
		if err != nil || socks5.ReplyCode(code) != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.target, socks5.ReplyCode(code), err, tc.want)
		}
	}
	eventually(t, "the refusal logged", func() bool {
		return strings.Contains(m.logs.String(), "only CONNECT is served")
	})
}

// deadDNS returns the address of a UDP socket that never answers.
func deadDNS(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// TestTunnelsSpliceOnEveryTCPFrontEnd: a tunnel from a front end whose
// client connection is TCP (plain HTTP/1.1, the PROXY protocol, SOCKS5 on
// its listener and on the HTTP listener) relays with splice(2) both ways:
// both ends are what io.Copy splices between; on Linux it is parked, its
// directions splicing while they run (tunnelpark_linux.go).
func TestTunnelsSpliceOnEveryTCPFrontEnd(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	for i := range ingresses {
		fe := &ingresses[i]
		if !fe.tcp() {
			continue
		}
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, WithAllowPrivate(), allowAnyConnectPort())
			c, _ := fp.tunnel(t, addr, creds{})
			if c == nil {
				t.Fatal("no tunnel")
			}
			defer c.Close()
			mustWrite(t, c, "early\n")
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "early\n" {
				t.Fatalf("echo: %q %v", line, err)
			}
			fp.mu.Lock()
			defer fp.mu.Unlock()
			if len(fp.tunnels) != 1 {
				t.Fatalf("%d tunnels", len(fp.tunnels))
			}
			for tun := range fp.tunnels {
				rt, relayed := tun.(*tunnel)
				if !relayed {
					// On Linux a tunnel between two TCP connections is
					// parked (tunnelpark_linux.go), and its running
					// directions splice.
					if name := fmt.Sprintf("%T", tun); runtime.GOOS != "linux" || name != "*fwdproxy.parkedTunnel" {
						t.Errorf("the tunnel is a %s", name)
					}
					continue
				}
				if runtime.GOOS == "linux" {
					t.Errorf("the tunnel between a %T and a %T is not parked", rt.client, rt.upstream)
				}
				if !spliceable(rt.client, rt.upstream) || !spliceable(rt.upstream, rt.client) {
					t.Errorf("the tunnel between a %T and a %T does not splice", rt.client, rt.upstream)
				}
			}
		})
	}
}

// TestShutdownSOCKS: Shutdown closes a SOCKS client still in its handshake
// at once, lets a SOCKS tunnel run until the deadline, then closes it, and
// ServeSOCKS returns http.ErrServerClosed.
func TestShutdownSOCKS(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	p, err := New(WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.ServeSOCKS(l) }()
	idle := plainDial(t, nil, l.Addr().String())
	mustWrite(t, idle, "\x05") // half a greeting
	tun := plainDial(t, nil, l.Addr().String())
	if code, err := socksConnect(tun, addr, creds{}); err != nil || code != 0 {
		t.Fatalf("SOCKS CONNECT: %d %v", code, err)
	}
	eventually(t, "both connections served", func() bool { return p.Stats().ActiveConnections == 1 && p.Stats().ActiveTunnels == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(ctx) }()
	if _, err := idle.Read(make([]byte, 1)); err == nil || time.Since(start) > 200*time.Millisecond {
		t.Errorf("the client in its handshake: %v after %v, want closed at once", err, time.Since(start))
	}
	mustWrite(t, tun, "during\n")
	if line, err := bufio.NewReader(tun).ReadString('\n'); err != nil || line != "during\n" {
		t.Errorf("the tunnel during the drain: %q %v", line, err)
	}
	if err := <-shut; err != context.DeadlineExceeded {
		t.Errorf("Shutdown: %v, want the deadline's error", err)
	}
	if _, err := tun.Read(make([]byte, 1)); err == nil {
		t.Error("the tunnel was left open")
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Errorf("ServeSOCKS: %v", err)
	}
}

// TestSOCKSConnLimit: WithMaxConns counts SOCKS clients until they are
// tunnels: past it a client is answered "no acceptable methods" at once.
func TestSOCKSConnLimit(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	m := newMultiFront(t, false, WithAllowPrivate(), allowAnyConnectPort(), WithMaxConns(1))
	socksAddr := m.listen(t, (*Proxy).ServeSOCKS)
	waiting := plainDial(t, nil, socksAddr) // holds the one connection, in its handshake
	eventually(t, "the first connection counted", func() bool { return m.Stats().ActiveConnections == 1 })
	c := plainDial(t, nil, socksAddr)
	if _, err := socksConnect(c, addr, creds{}); err == nil || !strings.Contains(err.Error(), "0xff") {
		t.Errorf("past WithMaxConns: %v", err)
	}
	if m.Stats().RefusedConnections != 1 {
		t.Errorf("RefusedConnections %d", m.Stats().RefusedConnections)
	}
	// Once a tunnel, it no longer counts.
	if code, err := socksConnect(waiting, addr, creds{}); err != nil || code != 0 {
		t.Fatalf("the first client: %d %v", code, err)
	}
	eventually(t, "the tunnel uncounted", func() bool { return m.Stats().ActiveConnections == 0 })
	c2 := plainDial(t, nil, socksAddr)
	if code, err := socksConnect(c2, addr, creds{}); err != nil || code != 0 {
		t.Errorf("a client while a tunnel is open: %d %v", code, err)
	}
}

// TestSOCKSIntercepted: interception applies to a SOCKS5 CONNECT as to an
// HTTP one: the client's TLS inside the tunnel meets a certificate minted
// by the proxy's CA, its requests go through the request path (a request
// hook sees them, each has its access record), and the SOCKS5 CONNECT is
// one tunnel record with the requests served inside.
func TestSOCKSIntercepted(t *testing.T) {
	tlsO, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls origin %s %s", r.URL.Path, r.Header.Get("X-Hook"))
	})
	ca, caPool := newTestCA(t)
	m := newMultiFront(t, false, WithAllowPrivate(), allowAnyConnectPort(), WithInterception(ca), WithUpstreamRootCAs(roots),
		WithRequestHook(func(_ context.Context, out *http.Request) (*http.Response, error) {
			out.Header.Set("X-Hook", "seen")
			return nil, nil
		}))
	addr := m.listen(t, (*Proxy).ServeSOCKS)
	target := tlsO.Listener.Addr().String()
	c := plainDial(t, nil, addr)
	if code, err := socksConnect(c, target, creds{}); err != nil || code != 0 {
		t.Fatalf("SOCKS5 CONNECT: %d %v", code, err)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: caPool, ServerName: "example.com"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS through the SOCKS tunnel, trusting only the proxy's CA: %v", err)
	}
	if issuer := tc.ConnectionState().PeerCertificates[0].Issuer.CommonName; !strings.Contains(issuer, ca.Leaf.Subject.CommonName) {
		t.Errorf("the certificate was issued by %q, not the proxy's CA", issuer)
	}
	mustWrite(t, tc, "GET /inside HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "tls origin /inside seen" {
		t.Errorf("inside: %q", b)
	}
	tc.Close()
	quiesce(t, m.Proxy)
	if recs := records(t, m.logs, "request", 1); recs[0]["url"] != "https://"+target+"/inside" {
		t.Errorf("request record %v", recs[0])
	}
	if recs := records(t, m.logs, "tunnel", 1); recs[0]["proto"] != "SOCKS5" || recs[0]["requests"] != float64(1) {
		t.Errorf("tunnel record %v", recs[0])
	}
}

// TestReloadHTTP2Settings: WithHTTP2MaxStreams and WithCleartextHTTP2
// change for the connections accepted after a Reload.
func TestReloadHTTP2Settings(t *testing.T) {
	m := newMultiFront(t, false, WithCleartextHTTP2())
	addr := m.listen(t, (*Proxy).Serve)
	maxStreams := func() (uint32, error) {
		c := plainDial(t, nil, addr)
		defer c.Close()
		mustWrite(t, c, http2.ClientPreface)
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			return 0, err
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return 0, err
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				v, _ := sf.Value(http2.SettingMaxConcurrentStreams)
				return v, nil
			}
		}
	}
	if n, err := maxStreams(); err != nil || n != DefaultHTTP2MaxStreams {
		t.Fatalf("before: %d %v", n, err)
	}
	if err := m.Reload(WithCleartextHTTP2(), WithHTTP2MaxStreams(9)); err != nil {
		t.Fatal(err)
	}
	if n, err := maxStreams(); err != nil || n != 9 {
		t.Errorf("after WithHTTP2MaxStreams(9): %d %v", n, err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if n, err := maxStreams(); err == nil {
		t.Errorf("after leaving WithCleartextHTTP2 out: an HTTP/2 answer (%d streams)", n)
	}
}

// TestReloadClosesDeniedCertTunnels: a Reload with
// WithReloadClosesDeniedTunnels that changes the credentials keeps a tunnel
// a verified client certificate authenticated (over ServeTLS), whose
// request the tunnel no longer keeps (tunnelInfoMore.certUser), and closes the
// ones whose Basic credentials the new authenticator rejects; among them a
// tunnel from the plain listener, which on Linux is parked
// (tunnelpark_linux.go), while a parked tunnel whose credentials still
// pass stays open.
func TestReloadClosesDeniedCertTunnels(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	clients := proxytest.NewPKI(t, "clients CA")
	alice := clients.Client(t, "alice")
	pki := proxytest.NewPKI(t, "proxy CA")
	conf := &tls.Config{Certificates: []tls.Certificate{pki.Server(t, "127.0.0.1")}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clients.Pool}
	m := newMultiFront(t, false)
	logger := WithLogger(slog.New(slog.NewJSONHandler(m.logs, nil)))
	opts := func(users map[string]string, more ...Option) []Option {
		return append([]Option{logger, WithTLS(conf), WithAllowPrivate(), allowAnyConnectPort(),
			WithBasicAuth(StaticCredentials(users))}, more...)
	}
	if err := m.Reload(opts(map[string]string{"carol": "pw", "dave": "pw"})...); err != nil {
		t.Fatal(err)
	}
	tlsAddr := m.listen(t, (*Proxy).ServeTLS)
	plainAddr := m.listen(t, (*Proxy).Serve)
	dialTLS := func(cert *tls.Certificate) func(testing.TB, *proxytest.PKI, string) net.Conn {
		return func(t testing.TB, _ *proxytest.PKI, a string) net.Conn {
			raw := plainDial(t, nil, a)
			cc := &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
			if cert != nil {
				cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
			}
			tc := tls.Client(raw, cc)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc
		}
	}
	tunnels := []struct {
		name string
		fe   *ingress
		addr string
		cr   creds
		kept bool
	}{
		{"certificate", &ingress{name: "mTLS", dial: dialTLS(&alice)}, tlsAddr, creds{}, true},
		{"TLS, Basic rejected", &ingress{name: "TLS", dial: dialTLS(nil)}, tlsAddr, creds{"carol", "pw"}, false},
		{"plain, Basic rejected", &ingress{name: "plain", dial: plainDial}, plainAddr, creds{"carol", "pw"}, false},
		{"plain, Basic accepted", &ingress{name: "plain", dial: plainDial}, plainAddr, creds{"dave", "pw"}, true},
	}
	conns := make([]io.ReadWriteCloser, len(tunnels))
	brs := make([]*bufio.Reader, len(tunnels))
	for i, tc := range tunnels {
		fp := &frontProxy{Proxy: m.Proxy, fe: tc.fe, addr: tc.addr}
		c, code := fp.tunnel(t, addr, tc.cr)
		if c == nil {
			t.Fatalf("%s: CONNECT answered %d", tc.name, code)
		}
		defer c.Close()
		conns[i], brs[i] = c, bufio.NewReader(c)
		mustWrite(t, c, "before\n")
		if line, err := brs[i].ReadString('\n'); err != nil || line != "before\n" {
			t.Fatalf("%s: echo %q %v", tc.name, line, err)
		}
	}
	if runtime.GOOS == "linux" {
		parked := 0
		eventually(t, "the plain tunnels parked", func() bool {
			m.Proxy.mu.Lock()
			defer m.Proxy.mu.Unlock()
			parked = 0
			for tun := range m.tunnels {
				if fmt.Sprintf("%T", tun) == "*fwdproxy.parkedTunnel" {
					parked++
				}
			}
			return parked == 2
		})
	}
	if err := m.Reload(opts(map[string]string{"dave": "pw"}, WithReloadClosesDeniedTunnels())...); err != nil {
		t.Fatal(err)
	}
	for i, tc := range tunnels {
		c := conns[i].(interface{ SetReadDeadline(time.Time) error })
		if !tc.kept {
			_ = c.SetReadDeadline(time.Now().Add(promptly))
			if _, err := brs[i].ReadByte(); err == nil || isTimeout(err) {
				t.Errorf("%s: %v, want closed by the reload", tc.name, err)
			}
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(promptly))
		mustWrite(t, conns[i], "after\n")
		if line, err := brs[i].ReadString('\n'); err != nil || line != "after\n" {
			t.Errorf("%s after the reload: echo %q %v, want it open", tc.name, line, err)
		}
	}
	eventually(t, "two tunnels logged closed by the reload", func() bool {
		return strings.Count(m.logs.String(), "tunnel closed by reload") == 2
	})
}
