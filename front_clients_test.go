package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// Real clients on every front end: curl, Go's client with https:// and
// socks5:// proxy URLs, golang.org/x/net/proxy; and client certificates.

// listeners is a Proxy served on several listeners at once, each by its
// front end's Serve method, shut down when the test ends.
type multiFront struct {
	*Proxy
	logs *syncBuffer
	pki  *proxytest.PKI
	mu   sync.Mutex
	done []chan error
}

// newMultiFront makes a Proxy with opts, logging JSON into its buffer (and
// Debug lines to the test log when verbose), with a test PKI whose server
// certificate WithTLS gets when withTLS is set.
func newMultiFront(t testing.TB, withTLS bool, opts ...Option) *multiFront {
	t.Helper()
	m := &multiFront{logs: &syncBuffer{}, pki: proxytest.NewPKI(t, "fwdproxy test CA")}
	all := []Option{WithLogger(slog.New(slog.NewJSONHandler(m.logs, nil)))}
	if withTLS {
		all = append(all, withProxyCert(m.pki, t)...)
	}
	p, err := New(append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.Proxy = p
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, d := range m.done {
			if err := <-d; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve returned %v", err)
			}
		}
	})
	return m
}

// listen serves a new loopback listener with serve and returns its address.
func (m *multiFront) listen(t testing.TB, serve func(*Proxy, net.Listener) error) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := make(chan error, 1)
	go func() { d <- serve(m.Proxy, l) }()
	m.mu.Lock()
	m.done = append(m.done, d)
	m.mu.Unlock()
	return l.Addr().String()
}

// TestCurlFrontEnds: curl through the HTTPS listener (absolute-form and
// CONNECT, trusting the proxy's CA with --proxy-cacert), through SOCKS5
// with the target's name resolved by the proxy (--socks5-hostname), with
// and without credentials (--proxy-user), and with a PROXY protocol header
// (--haproxy-protocol) to a listener that trusts loopback, which refuses
// the same request without one.
func TestCurlFrontEnds(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "origin %s %s", r.Method, r.URL.Path) })
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	ds := dnstest.NewServer(t)
	ds.Add("origin.test. 60 IN A 127.0.0.1")
	m := newMultiFront(t, true, WithAllowPrivate(), allowAnyConnectPort(), WithDNSServers(ds.Addr()),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "s3cret"})))
	tlsAddr := m.listen(t, (*Proxy).ServeTLS)
	socksAddr := m.listen(t, (*Proxy).ServeSOCKS)
	caFile := m.pki.WriteCA(t, t.TempDir())
	httpsProxy := "https://alice:s3cret@127.0.0.1:" + strings.Split(tlsAddr, ":")[1]
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"-x https://", []string{"-x", httpsProxy, "--proxy-cacert", caFile, o.URL + "/a"}, "origin GET /a"},
		{"-p -x https://", []string{"-p", "-x", httpsProxy, "--proxy-cacert", caFile, o.URL + "/b"}, "origin GET /b"},
		{"--socks5-hostname --proxy-user", []string{"--socks5-hostname", socksAddr, "--proxy-user", "alice:s3cret", "http://origin.test:" + port + "/c"}, "origin GET /c"},
		{"socks5h:// URL", []string{"-x", "socks5h://alice:s3cret@" + socksAddr, "http://origin.test:" + port + "/d"}, "origin GET /d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := curl(t, tc.args...); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("--proxy-user with a wrong password", func(t *testing.T) {
		code, stderr := curlFails(t, "--socks5-hostname", socksAddr, "--proxy-user", "alice:nope", "http://origin.test:"+port+"/")
		if code != 97 { // CURLE_PROXY: the SOCKS server refused
			t.Errorf("curl exited %d: %s", code, stderr)
		}
	})
	t.Run("SOCKS5 without credentials", func(t *testing.T) {
		code, stderr := curlFails(t, "--socks5-hostname", socksAddr, "http://origin.test:"+port+"/")
		if code != 97 {
			t.Errorf("curl exited %d: %s", code, stderr)
		}
	})
	recs := records(t, m.logs, "request", 0)
	users := map[string]int{}
	for _, r := range append(recs, records(t, m.logs, "tunnel", 0)...) {
		users[fmt.Sprint(r["proto"], " ", r["user"], " ", r["status"])]++
	}
	for _, want := range []string{"HTTP/1.1 alice 200", "SOCKS5 alice 200", "SOCKS5  407"} { // a refused user is not named
		if users[want] == 0 {
			t.Errorf("no access record %q in %v", want, users)
		}
	}

	t.Run("--haproxy-protocol", func(t *testing.T) {
		pp := newMultiFront(t, false, WithAllowPrivate(), WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8")))
		addr := pp.listen(t, (*Proxy).Serve)
		if got := curl(t, "--haproxy-protocol", "-x", "http://"+addr, o.URL+"/pp"); got != "origin GET /pp" {
			t.Errorf("with the header: %q", got)
		}
		if code, stderr := curlFails(t, "-x", "http://"+addr, o.URL+"/pp"); code != 52 && code != 56 { // empty reply, or reset
			t.Errorf("without the header from a trusted peer: curl exited %d: %s", code, stderr)
		}
		recs := records(t, pp.logs, "request", 1)
		if len(recs) != 1 || !strings.HasPrefix(recs[0]["client"].(string), "127.0.0.1:") {
			t.Errorf("records %v: want one, from curl's address as its header carried it", recs)
		}
		eventually(t, "the refusal logged", func() bool {
			return strings.Contains(pp.logs.String(), "trusted peer sent no PROXY protocol header")
		})
	})
}

// TestGoClientFrontEnds: Go's http.Client through an https:// proxy URL
// (HTTP/1.1 to the proxy: absolute-form for http, CONNECT for https) and a
// socks5:// one, and golang.org/x/net/proxy's SOCKS5 dialer, with
// credentials; each request goes through and is recorded with its user.
func TestGoClientFrontEnds(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "plain %s", r.URL.Path) })
	tlsO, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "tls %s %s", r.Proto, r.URL.Path) })
	m := newMultiFront(t, true, WithAllowPrivate(), allowAnyConnectPort(),
		WithBasicAuth(StaticCredentials(map[string]string{"bob": "hunter2"})))
	tlsAddr := m.listen(t, (*Proxy).ServeTLS)
	socksAddr := m.listen(t, (*Proxy).ServeSOCKS)
	trusted := roots.Clone()
	trusted.AddCert(m.pki.Cert)
	for _, tc := range []struct {
		name  string
		proxy string
	}{
		{"https:// proxy URL", "https://bob:hunter2@" + tlsAddr},
		{"socks5:// proxy URL", "socks5://bob:hunter2@" + socksAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.proxy)
			tr := &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: trusted}}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			for _, req := range []struct{ url, want string }{
				{o.URL + "/p", "plain /p"},
				{tlsO.URL + "/t", "tls HTTP/1.1 /t"},
			} {
				_, body := mustGet(t, c, req.url)
				if body != req.want {
					t.Errorf("GET %s: %q, want %q", req.url, body, req.want)
				}
			}
		})
	}
	t.Run("golang.org/x/net/proxy SOCKS5", func(t *testing.T) {
		d, err := proxy.SOCKS5("tcp", socksAddr, &proxy.Auth{User: "bob", Password: "hunter2"}, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}
		defer tr.CloseIdleConnections()
		_, body := mustGet(t, &http.Client{Transport: tr}, o.URL+"/x")
		if body != "plain /x" {
			t.Errorf("body %q", body)
		}
		bad, _ := proxy.SOCKS5("tcp", socksAddr, &proxy.Auth{User: "bob", Password: "wrong"}, proxy.Direct)
		if _, err := bad.Dial("tcp", o.Listener.Addr().String()); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("wrong password: %v, want a refusal (not allowed by ruleset)", err)
		}
	})
	quiesce(t, m.Proxy)
	for _, r := range append(records(t, m.logs, "request", 0), records(t, m.logs, "tunnel", 0)...) {
		if r["status"] == float64(200) && r["user"] != "bob" {
			t.Errorf("record without the user: %v", r)
		}
	}
}

// TestClientCertificates: with WithTLS asking for client certificates, a
// client whose certificate verifies is the user its certificate names (the
// CN, else the first URI SAN) for the access hook and the log, without
// Proxy-Authorization, on HTTP/1.1 and HTTP/2 (CONNECT and absolute-form);
// one without a certificate falls back to Basic when a certificate is
// optional, and cannot complete the handshake when one is required; a
// request on a plain listener is then refused too.
func TestClientCertificates(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	target := o.Listener.Addr().String()
	clients := proxytest.NewPKI(t, "clients CA")
	alice := clients.Client(t, "alice")
	spiffe := clients.Client(t, "", "spiffe://example.org/ns/web")
	stranger := proxytest.NewPKI(t, "other CA").Client(t, "mallory")
	for _, required := range []bool{false, true} {
		t.Run(fmt.Sprintf("required=%v", required), func(t *testing.T) {
			auth := tls.VerifyClientCertIfGiven
			if required {
				auth = tls.RequireAndVerifyClientCert
			}
			var users sync.Map
			hook := WithAccessHook(func(_ context.Context, a Access) error {
				users.Store(a.User, true)
				return nil
			})
			pki := proxytest.NewPKI(t, "proxy CA")
			conf := &tls.Config{Certificates: []tls.Certificate{pki.Server(t, "127.0.0.1")}, ClientAuth: auth, ClientCAs: clients.Pool}
			m := newMultiFront(t, false, WithTLS(conf), WithAllowPrivate(), allowAnyConnectPort(), hook,
				WithBasicAuth(StaticCredentials(map[string]string{"carol": "pw"})))
			addr := m.listen(t, (*Proxy).ServeTLS)
			plain := m.listen(t, (*Proxy).Serve)
			fe := &ingress{name: "mTLS"}
			dial := func(cert *tls.Certificate, proto string) (net.Conn, error) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return nil, err
				}
				cc := &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1", NextProtos: []string{proto}}
				if cert != nil {
					// Sent whatever CAs the server names (a client given
					// Certificates sends none that the server would not
					// take).
					cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
				}
				tc := tls.Client(c, cc)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					c.Close()
					return nil, err
				}
				return tc, nil
			}
			// refused reports whether the server refused c's certificate:
			// under TLS 1.3 its verdict comes after the client's handshake
			// is done, as an alert in place of an answer.
			refused := func(c net.Conn) error {
				defer c.Close()
				mustWrite(t, c, "GET http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
				_, err := c.Read(make([]byte, 1))
				if err == nil || !strings.Contains(err.Error(), "tls:") {
					return fmt.Errorf("answered (%v), want a TLS alert", err)
				}
				return nil
			}
			for _, tc := range []struct {
				name   string
				cert   *tls.Certificate
				creds  creds
				user   string
				status int // 0: no handshake
			}{
				{"CN", &alice, creds{}, "alice", 200},
				{"URI SAN", &spiffe, creds{}, "spiffe://example.org/ns/web", 200},
				{"certificate over Basic", &alice, creds{"carol", "pw"}, "alice", 200},
				{"no certificate, Basic", nil, creds{"carol", "pw"}, "carol", 200},
				{"no certificate, nothing", nil, creds{}, "", 407},
				{"untrusted certificate", &stranger, creds{}, "", 0},
			} {
				for _, proto := range []string{"http/1.1", "h2"} {
					t.Run(tc.name+"/"+proto, func(t *testing.T) {
						users.Clear()
						status := tc.status
						if required && tc.cert == nil {
							status = 0
						}
						c, err := dial(tc.cert, proto)
						if status == 0 {
							if err == nil {
								err = refused(c)
								if err != nil {
									t.Error(err)
								}
							}
							return
						}
						if err != nil {
							t.Fatalf("handshake: %v", err)
						}
						defer c.Close()
						fe.h2 = proto == "h2"
						fe.dial = func(testing.TB, *proxytest.PKI, string) net.Conn { return c }
						fp := &frontProxy{Proxy: m.Proxy, fe: fe, addr: addr}
						if got, _ := fp.get(t, "http://"+target+"/", tc.creds); got != status {
							t.Errorf("GET: %d, want %d", got, status)
						}
						if _, ok := users.Load(tc.user); status == 200 && !ok {
							t.Errorf("the access hook did not see user %q", tc.user)
						}
					})
				}
			}
			// A request on the plain listener has no certificate.
			want := 407
			if status, _, _ := proxytest.Send(t, plain, get(target)); status != want {
				t.Errorf("plain listener without credentials: %d, want %d", status, want)
			}
			if required {
				m2 := newMultiFront(t, false, WithTLS(conf), WithAllowPrivate())
				p2 := m2.listen(t, (*Proxy).Serve)
				if status, body, _ := proxytest.Send(t, p2, get(target)); status != 403 || !strings.Contains(body, "client certificate is required") {
					t.Errorf("plain listener, certificate required, no other authenticator: %d %q", status, body)
				}
			}
		})
	}
}

// TestTLSListenerSettings: the HTTPS listener offers TLS 1.2 and 1.3 with
// AEAD suites only, whatever WithTLS's configuration asked for, and WithTLS
// refuses what it cannot honour.
func TestTLSListenerSettings(t *testing.T) {
	m := newMultiFront(t, true)
	addr := m.listen(t, (*Proxy).ServeTLS)
	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
		{"TLS 1.2 AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
		{"TLS 1.2 CBC", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false}, // Go's client offers 1.1 only when asked
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conf := tc.conf
		conf.RootCAs, conf.ServerName = m.pki.Pool, "127.0.0.1"
		err = tls.Client(c, conf).Handshake()
		c.Close()
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		conf *tls.Config
		want string
	}{
		{nil, "nil"},
		{&tls.Config{}, "no certificate"},
		{&tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil },
			CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}, "not offered"},
		{&tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil },
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }}, "GetConfigForClient"},
	} {
		if _, err := New(WithTLS(tc.conf)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WithTLS(%v): %v, want an error saying %q", tc.conf, err, tc.want)
		}
	}
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := p.ServeTLS(l); err == nil || !strings.Contains(err.Error(), "needs WithTLS") {
		t.Errorf("ServeTLS without WithTLS: %v", err)
	}
}

// TestTLSHandshakeFailuresLogged: a TLS handshake on the HTTPS listener
// that fails is logged as the other front ends' refusals are: one Warn
// line with the client, the error and a hint that says what to change, at
// most one a second (a burst of failures is one line), each counted in
// Stats.RefusedHandshakes; a client that connects and closes (a TCP health
// check) is neither a Warn line nor counted.
func TestTLSHandshakeFailuresLogged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  func(t *testing.T, fp *frontProxy) // one failed handshake
		error string                             // in the line's error
		hint  string                             // in its hint; "" for none
	}{
		{"TLS 1.1", func(t *testing.T, fp *frontProxy) {
			c := plainDial(t, fp.pki, fp.addr)
			defer c.Close()
			conf := &tls.Config{RootCAs: fp.pki.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
			if err := tls.Client(c, conf).Handshake(); err == nil {
				t.Fatal("a TLS 1.1 handshake succeeded")
			}
		}, "version", "TLS 1.2 and 1.3"},
		{"an untrusted proxy certificate", func(t *testing.T, fp *frontProxy) {
			c := plainDial(t, fp.pki, fp.addr)
			defer c.Close()
			if err := tls.Client(c, &tls.Config{ServerName: "127.0.0.1"}).Handshake(); err == nil {
				t.Fatal("a handshake without the proxy's CA succeeded")
			}
		}, "bad certificate", "--proxy-cacert"},
		{"plain HTTP, absolute-form", func(t *testing.T, fp *frontProxy) { // net/http answers no 400: not "GET /"
			c := plainDial(t, fp.pki, fp.addr)
			defer c.Close()
			mustWrite(t, c, "GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
			if b, _ := io.ReadAll(c); len(b) != 0 {
				t.Fatalf("plain HTTP to the HTTPS listener: answered %q", b)
			}
		}, "does not look like a TLS handshake", "https:// proxy URL"},
		{"plain HTTP, origin-form", func(t *testing.T, fp *frontProxy) {
			c := plainDial(t, fp.pki, fp.addr)
			defer c.Close()
			mustWrite(t, c, "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 400 {
				t.Fatalf("plain HTTP to the HTTPS listener: %v %v", resp, err)
			}
		}, "client sent an HTTP request to an HTTPS server", "https:// proxy URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := startFront(t, &ingresses[1])
			// A health check: connect, close.
			c := plainDial(t, fp.pki, fp.addr)
			c.Close()
			for range 5 {
				tc.fail(t, fp)
			}
			var lines []map[string]any
			eventually(t, "the handshake failures logged", func() bool {
				lines = fp.logRecords(t, "TLS handshake failed; closed")
				return len(lines) > 0
			})
			time.Sleep(100 * time.Millisecond) // room for a line too many
			lines = fp.logRecords(t, "TLS handshake failed; closed")
			if len(lines) != 1 {
				t.Fatalf("%s\n%d lines for a burst of 5 failures (and a health check), want 1: %v", fp.logs.String(), len(lines), lines)
			}
			l := lines[0]
			host, _, _ := net.SplitHostPort(fmt.Sprint(l["client"]))
			if l["level"] != "WARN" || host != "127.0.0.1" || !strings.Contains(fmt.Sprint(l["error"]), tc.error) ||
				!strings.Contains(fmt.Sprint(l["hint"]), tc.hint) || l["refused_since_last_line"] != float64(0) {
				t.Errorf("line %v, want a Warn line with the client, an error saying %q and a hint saying %q", l, tc.error, tc.hint)
			}
			// The 5 failures, not the health check.
			eventually(t, "Stats.RefusedHandshakes.TLS 5", func() bool { return fp.Stats().RefusedHandshakes == HandshakeRefusals{TLS: 5} })
			time.Sleep(50 * time.Millisecond)
			if got := fp.Stats().RefusedHandshakes; got != (HandshakeRefusals{TLS: 5}) {
				t.Errorf("Stats.RefusedHandshakes %+v, want the 5 failures", got)
			}
			if strings.Contains(fp.logs.String(), "TLS handshake error") {
				t.Errorf("net/http's own line is in the log:\n%s", fp.logs.String())
			}
		})
	}
}

// logRecords returns the records of fp's log whose msg is msg.
func (fp *frontProxy) logRecords(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(fp.logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
