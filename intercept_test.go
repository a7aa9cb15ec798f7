package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
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

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

func interceptStats(tp *testProxy) (mints, hits, coalesced uint64) {
	s := tp.cfg.Load().intercept.issuer.Stats()
	return s.Mints, s.Hits, s.Coalesced
}

// TestInterceptGoClient: Go's client through an intercepting proxy, over
// HTTP/1.1 and HTTP/2; the minted leaf is checked.
func TestInterceptGoClient(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s %s %s via=%q", r.Proto, r.Host, r.URL.Path, r.Header.Get("Via"))
	})
	ds := dnstest.NewServer(t)
	ds.Add("example.com. 60 IN A 127.0.0.1")
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(originRoots), WithDNSServers(ds.Addr()), WithVia("mitmtest"))
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	for _, tc := range []struct {
		name      string
		host      string
		h2        bool
		wantProto string
	}{
		{"DNS name h1", "example.com", false, "HTTP/1.1"},
		{"DNS name h2", "example.com", true, "HTTP/2.0"},
		{"IP h1", "127.0.0.1", false, "HTTP/1.1"},
		{"IP h2", "127.0.0.1", true, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), TLSClientConfig: &tls.Config{RootCAs: caPool}, ForceAttemptHTTP2: tc.h2}
			if !tc.h2 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			resp, body := mustGet(t, c, "https://"+net.JoinHostPort(tc.host, port)+"/p")
			if resp.StatusCode != 200 || resp.Proto != tc.wantProto {
				t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, body)
			}
			// The origin speaks HTTP/2 with the proxy whatever the client does.
			via := "1.1 mitmtest"
			if tc.h2 {
				via = "2 mitmtest"
			}
			want := fmt.Sprintf("origin HTTP/2.0 %s /p via=%q", net.JoinHostPort(tc.host, port), via)
			if body != want {
				t.Errorf("body %q, want %q", body, want)
			}
			leaf := resp.TLS.PeerCertificates[0]
			if leaf.Issuer.CommonName != ca.Leaf.Subject.CommonName || leaf.CheckSignatureFrom(ca.Leaf) != nil {
				t.Errorf("leaf issued by %q, not the CA", leaf.Issuer)
			}
			if tc.host == "127.0.0.1" {
				if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(leaf.DNSNames) != 0 {
					t.Errorf("IP SANs %v DNS %v", leaf.IPAddresses, leaf.DNSNames)
				}
			} else if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "example.com" || len(leaf.IPAddresses) != 0 {
				t.Errorf("DNS SANs %v IP %v", leaf.DNSNames, leaf.IPAddresses)
			}
			now := time.Now()
			if v := leaf.NotAfter.Sub(leaf.NotBefore); v < 24*time.Hour || v > 8*24*time.Hour || !leaf.NotBefore.Before(now.Add(-30*time.Minute)) || !leaf.NotAfter.After(now) {
				t.Errorf("validity %v .. %v", leaf.NotBefore, leaf.NotAfter)
			}
		})
	}
	if mints, hits, _ := interceptStats(tp); mints != 2 || hits < 2 {
		t.Errorf("mints %d hits %d; want 2 mints (one per host) and cache hits", mints, hits)
	}
}

// TestInterceptCacheHit: a second connection to the same host gets the
// same certificate from the cache.
func TestInterceptCacheHit(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(originRoots))
	target := o.Listener.Addr().String()
	c1, _ := connectTLS(t, tp, target, "127.0.0.1", caPool)
	c2, _ := connectTLS(t, tp, target, "127.0.0.1", caPool)
	a, b := c1.ConnectionState().PeerCertificates[0], c2.ConnectionState().PeerCertificates[0]
	if !a.Equal(b) {
		t.Error("second connection got a different certificate")
	}
	if mints, hits, _ := interceptStats(tp); mints != 1 || hits != 1 {
		t.Errorf("mints %d hits %d, want 1 and 1", mints, hits)
	}
}

// TestInterceptConcurrentMint: 50 first handshakes for one host at once
// mint one certificate.
func TestInterceptConcurrentMint(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(originRoots))
	target := o.Listener.Addr().String()
	const n = 50
	conns := make([]net.Conn, n)
	for i := range conns {
		c, br := tp.rawConn(t)
		mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %d: %v %v", i, resp, err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- tls.Client(c, &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1"}).Handshake()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if mints, hits, coalesced := interceptStats(tp); mints != 1 || hits+coalesced != n-1 {
		t.Errorf("mints %d hits %d coalesced %d; want 1 mint for %d handshakes", mints, hits, coalesced, n)
	}
}

// TestInterceptPolicy: bypassed hosts and hosts the decision hook refuses
// are tunnelled, so the client sees the origin's own certificate.
func TestInterceptPolicy(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	ds := dnstest.NewServer(t)
	ds.Add("example.com. 60 IN A 127.0.0.1", "a.bypass.test. 60 IN A 127.0.0.1", "keep.test. 60 IN A 127.0.0.1")
	ca, _ := newTestCA(t)
	tp := startProxy(t, WithUpstreamRootCAs(originRoots), WithDNSServers(ds.Addr()),
		WithInterception(ca, WithInterceptBypass("example.com", "*.bypass.test"),
			WithInterceptFunc(func(ctx context.Context, target string, r *http.Request) bool {
				return !strings.HasPrefix(target, "127.0.0.1:")
			})))
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	both := originRoots.Clone()
	both.AddCert(ca.Leaf)
	for _, tc := range []struct {
		host, sni   string
		intercepted bool
	}{
		{"example.com", "example.com", false},
		{"EXAMPLE.com.", "example.com", false},
		{"a.bypass.test", "example.com", false},
		{"127.0.0.1", "127.0.0.1", false}, // the hook says no
		{"keep.test", "example.com", true},
	} {
		t.Run(tc.host, func(t *testing.T) {
			c, _ := connectTLS(t, tp, net.JoinHostPort(tc.host, port), tc.sni, both)
			got := c.ConnectionState().PeerCertificates[0].CheckSignatureFrom(ca.Leaf) == nil
			if got != tc.intercepted {
				t.Errorf("intercepted = %v, want %v", got, tc.intercepted)
			}
		})
	}
}

// TestInterceptUntrustedUpstream: an origin whose certificate does not
// verify gets a 502 saying so, never a silent pass.
func TestInterceptUntrustedUpstream(t *testing.T) {
	o, _ := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "secret") })
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca))
	c := tp.client(t, &tls.Config{RootCAs: caPool})
	resp, body := mustGet(t, c, o.URL+"/")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "verification") {
		t.Errorf("got %d %q, want 502 mentioning verification", resp.StatusCode, body)
	}
}

// TestInterceptKeepAliveAndUpgrade: several requests on one client TLS
// connection, then a WebSocket-style upgrade on it.
func TestInterceptKeepAliveAndUpgrade(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			_ = brw.Flush()
			line, _ := brw.ReadString('\n')
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
			return
		}
		fmt.Fprintf(w, "req %s", r.URL.Path)
	})
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(originRoots))
	target := o.Listener.Addr().String()
	tc, br := connectTLS(t, tp, target, "127.0.0.1", caPool, "http/1.1")
	for i := range 3 {
		mustWrite(t, tc, fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, target))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprintf("req /r%d", i) || resp.Close {
			t.Fatalf("request %d: %q close=%v", i, b, resp.Close)
		}
	}
	mustWrite(t, tc, "GET /ws HTTP/1.1\r\nHost: "+target+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	mustWrite(t, tc, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo hello\n" {
		t.Fatalf("after upgrade: %q %v", line, err)
	}
}

// TestInterceptOptions: invalid interception options make New fail.
func TestInterceptOptions(t *testing.T) {
	ca, _ := newTestCA(t)
	for _, tc := range []struct {
		name string
		opt  Option
		want string
	}{
		{"not a CA", WithInterception(tls.Certificate{}), "WithInterception"},
		{"bad pattern", WithInterception(ca, WithInterceptBypass("a.*.b")), "WithInterceptBypass"},
		{"cache size", WithInterception(ca, WithCertCacheSize(0)), "WithCertCacheSize"},
		{"nil store", WithInterception(ca, WithCertStore(nil)), "WithCertStore"},
		{"nil func", WithInterception(ca, WithInterceptFunc(nil)), "WithInterceptFunc"},
		{"nil option", WithInterception(ca, nil), "nil InterceptOption"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestInterceptHooksAndContext: hooks see and change intercepted requests
// and responses; the CONNECT's context values reach them; the request goes
// to the CONNECT target whatever the Host header says.
func TestInterceptHooksAndContext(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s hook=%s", r.Host, r.Header.Get("X-Hook"))
	})
	ca, caPool := newTestCA(t)
	var mu sync.Mutex
	var seen []string
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(originRoots),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "pw"})),
		WithConnectHook(func(ctx context.Context, target string, r *http.Request) error {
			return nil
		}),
		WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
			mu.Lock()
			seen = append(seen, out.URL.String()+" user="+authUser(ctx))
			mu.Unlock()
			out.Header.Set("X-Hook", "yes")
			return nil, nil
		}),
		WithResponseHook(func(ctx context.Context, resp *http.Response) error {
			resp.Header.Set("X-Seen", "1")
			return nil
		}))
	target := o.Listener.Addr().String()
	c, err := net.Dial("tcp", tp.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	// The CONNECT is authenticated; the requests inside carry no
	// credentials and run as its user.
	mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: Basic "+
		base64.StdEncoding.EncodeToString([]byte("alice:pw"))+"\r\n\r\n")
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	tbr := bufio.NewReader(tc)
	// An absolute-form URL and Host header naming another host: the request
	// still goes to the CONNECT target.
	mustWrite(t, tc, "GET https://elsewhere.test/x HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
	resp, err := http.ReadResponse(tbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "host=elsewhere.test hook=yes" || resp.Header.Get("X-Seen") != "1" {
		t.Errorf("got %q X-Seen=%q", b, resp.Header.Get("X-Seen"))
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "https://" + target + "/x user=alice"; len(seen) != 1 || seen[0] != want {
		t.Errorf("request hook saw %q, want [%q]", seen, want)
	}
	tc.Close()
}

// TestInterceptShutdown: an intercepted connection in the middle of a
// request counts as a tunnel: Shutdown waits for it until its deadline,
// then closes it.
func TestInterceptShutdown(t *testing.T) {
	release := make(chan struct{})
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	ca, caPool := newTestCA(t)
	p, err := New(WithLogger(testLogger(t)), WithInterception(ca), WithUpstreamRootCAs(originRoots), WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	tp := &testProxy{Proxy: p, URL: nil, Addr: l.Addr().String()}
	target := o.Listener.Addr().String()
	tc, br := connectTLS(t, tp, target, "127.0.0.1", caPool, "http/1.1")
	mustWrite(t, tc, "GET /hang HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("body ended cleanly; want the connection cut")
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	// A CONNECT after Shutdown is refused (the proxy is closed).
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("listener still open")
	}
}

// TestInterceptOverHTTP2Connect: a CONNECT on an HTTP/2 stream is
// intercepted with the stream as the client connection.
func TestInterceptOverHTTP2Connect(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "inner %s", r.URL.Path)
	})
	ca, caPool := newTestCA(t)
	p, err := New(WithLogger(testLogger(t)), WithInterception(ca), WithUpstreamRootCAs(originRoots), WithAllowPrivate(), allowAnyConnectPort())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = p.Shutdown(context.Background())
	})
	tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	target := o.Listener.Addr().String()
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: srv.Listener.Addr().String()}, Host: target, Header: http.Header{}, Body: pr}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	stream := &pipeConn{r: resp.Body, w: pw}
	tc := tls.Client(stream, &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	mustWrite(t, tc, "GET /in-h2 HTTP/1.1\r\nHost: "+target+"\r\nConnection: close\r\n\r\n")
	r2, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	if string(b) != "inner /in-h2" {
		t.Errorf("got %q", b)
	}
	pw.Close()
}

// pipeConn is a client-side HTTP/2 CONNECT stream as a net.Conn.
type pipeConn struct {
	r io.ReadCloser
	w *io.PipeWriter
}

func (c *pipeConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error)      { return c.w.Write(b) }
func (c *pipeConn) Close() error                     { c.w.Close(); return c.r.Close() }
func (c *pipeConn) LocalAddr() net.Addr              { return stringAddr("client") }
func (c *pipeConn) RemoteAddr() net.Addr             { return stringAddr("proxy") }
func (c *pipeConn) SetDeadline(time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// TestInterceptBadClient: a client that sends a broken TLS record after
// the 200, or stays silent past the peek and has its tunnel fail, gets its
// connection closed; nothing hangs. The target is a closed loopback port.
func TestInterceptBadClient(t *testing.T) {
	ca, _ := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithReadHeaderTimeout(500*time.Millisecond))
	target := closedPort(t)
	for _, tc := range []struct {
		name, send string
	}{
		{"garbage", "\x16\x03\x01\x00\x05hello"},
		{"half a record", "\x16\x03"},
		{"silence", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tp.rawConn(t)
			mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"+tc.send)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(br)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection not closed")
			}
		})
	}
}

// TestInterceptCipherSuites: the interception listener offers AEAD suites
// only. A TLS 1.2 client offering nothing but one CBC suite (or a TLS 1.1
// client) fails the handshake; one offering any single AEAD suite, or TLS
// 1.3, succeeds with that suite.
func TestInterceptCipherSuites(t *testing.T) {
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca))
	for _, tc := range []struct {
		name     string
		version  uint16 // the client's maximum
		suite    uint16 // the only TLS 1.2 suite offered; 0 for TLS 1.3
		accepted bool
	}{
		{"ECDHE-ECDSA-AES128-SHA", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{"ECDHE-ECDSA-AES256-SHA", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{"ECDHE-ECDSA-AES128-SHA256", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
		{"TLS 1.1", tls.VersionTLS11, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{"ECDHE-ECDSA-CHACHA20-POLY1305", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{"TLS 1.3", tls.VersionTLS13, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := tp.rawConn(t)
			target := "127.0.0.1:1" // never dialled: the handshake is the proxy's
			mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			conf := &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tc.version}
			if tc.suite != 0 {
				conf.CipherSuites = []uint16{tc.suite}
			}
			tc2 := tls.Client(c, conf)
			err := tc2.Handshake()
			if !tc.accepted {
				if err == nil {
					t.Fatalf("handshake succeeded with %s, %s; want it refused",
						tls.VersionName(tc2.ConnectionState().Version), tls.CipherSuiteName(tc2.ConnectionState().CipherSuite))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			st := tc2.ConnectionState()
			if st.Version != tc.version || (tc.suite != 0 && st.CipherSuite != tc.suite) {
				t.Errorf("negotiated %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
			}
		})
	}
}

// TestInterceptBypassAddresses: WithInterceptBypass takes the access rules'
// grammar, so IP addresses and CIDR ranges bypass CONNECTs to IP targets
// (in any spelling the dialer accepts), and a bad pattern gets the same
// message as from WithDenyHosts.
func TestInterceptBypassAddresses(t *testing.T) {
	o, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	ca, _ := newTestCA(t)
	both := originRoots.Clone()
	both.AddCert(ca.Leaf)
	for _, tc := range []struct {
		patterns    []string
		host        string
		intercepted bool
	}{
		{[]string{"127.0.0.1"}, "127.0.0.1", false},
		{[]string{"127.0.0.1/32"}, "127.0.0.1", false},
		{[]string{"127.0.0.0/8"}, "127.0.0.1", false},
		{[]string{"example.com", "127.0.0.0/8"}, "2130706433", false}, // 127.0.0.1 spelt as one number
		{[]string{"::ffff:127.0.0.1"}, "127.0.0.1", false},
		{[]string{"10.0.0.0/8", "127.0.0.2"}, "127.0.0.1", true},
		{[]string{"*.example.com"}, "127.0.0.1", true},
	} {
		t.Run(strings.Join(tc.patterns, ",")+" "+tc.host, func(t *testing.T) {
			tp := startProxy(t, WithUpstreamRootCAs(originRoots), WithInterception(ca, WithInterceptBypass(tc.patterns...)))
			c, _ := connectTLS(t, tp, net.JoinHostPort(tc.host, port), "127.0.0.1", both)
			got := c.ConnectionState().PeerCertificates[0].CheckSignatureFrom(ca.Leaf) == nil
			if got != tc.intercepted {
				t.Errorf("intercepted = %v, want %v", got, tc.intercepted)
			}
		})
	}
	for _, bad := range []string{"a.*.b", "10.0.0.0/33", "", "exa mple.com", "*.10.0.0.1/8"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, berr := New(WithInterception(ca, WithInterceptBypass(bad)))
			_, derr := New(WithDenyHosts(bad))
			if berr == nil || derr == nil {
				t.Fatalf("WithInterceptBypass(%q): %v; WithDenyHosts: %v; want errors", bad, berr, derr)
			}
			_, bmsg, _ := strings.Cut(berr.Error(), "WithInterceptBypass: ")
			_, dmsg, _ := strings.Cut(derr.Error(), "WithDenyHosts: ")
			if bmsg == "" || bmsg != dmsg {
				t.Errorf("WithInterceptBypass says %q, WithDenyHosts %q; want the same reason", berr, derr)
			}
		})
	}
}

// stringAddr is a net.Addr known only as text.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
