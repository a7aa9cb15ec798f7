package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Reload (reload.go): each setting that changes live applies to the next
// request or tunnel, and what cannot change is refused with the running
// configuration kept. The tests reload proxies served on 127.0.0.1 whose
// names a.test and b.test lead to 127.0.0.1 through an in-process DNS
// server.

// reloadEnv is a proxy to reload, with the origins the tests reach through
// it and the options every configuration of it starts with (base).
type reloadEnv struct {
	tp     *testProxy
	base   []Option
	port   string // the HTTP origin's port: http://a.test:port/ and b.test
	echo   string // the echo server's port, for tunnels
	tlsO   string // the TLS origin's port
	roots  *x509.CertPool
	ca     tls.Certificate // an interception CA
	caPool *x509.CertPool
}

// newReloadEnv starts a proxy with the base options (log, or the test
// logger when nil, and the DNS server) and opts.
func newReloadEnv(t *testing.T, log *slog.Logger, opts ...Option) *reloadEnv {
	t.Helper()
	o := origin(t, reloadOrigin)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	_, echoPort, _ := net.SplitHostPort(tcpOrigin(t, "tcp", "127.0.0.1:0", echo))
	to, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "tls origin") })
	_, tlsPort, _ := net.SplitHostPort(to.Listener.Addr().String())
	ds := dnstest.NewServer(t)
	ds.Add("a.test. 60 IN A 127.0.0.1", "b.test. 60 IN A 127.0.0.1")
	if log == nil {
		log = testLogger(t)
	}
	e := &reloadEnv{base: []Option{WithLogger(log), WithDNSServers(ds.Addr())}, port: port, echo: echoPort, tlsO: tlsPort, roots: roots}
	e.ca, e.caPool = newTestCA(t)
	e.tp = startGuardedProxy(t, e.opts(opts)...)
	return e
}

// opts returns the base options followed by more.
func (e *reloadEnv) opts(more []Option) []Option {
	return append(append([]Option(nil), e.base...), more...)
}

// reload reloads the proxy with the base options and more, and fails the
// test on an error.
func (e *reloadEnv) reload(t *testing.T, more ...Option) {
	t.Helper()
	if err := e.tp.Reload(e.opts(more)...); err != nil {
		t.Fatalf("Reload: %v", err)
	}
}

// reloadOrigin is the HTTP origin: it echoes what the tests look at.
func reloadOrigin(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/slow":
		time.Sleep(300 * time.Millisecond)
	case "/stall": // part of the body, a pause, the rest
		w.Header().Set("Content-Length", "8")
		_, _ = io.WriteString(w, "half")
		w.(http.Flusher).Flush()
		time.Sleep(400 * time.Millisecond)
		_, _ = io.WriteString(w, "half")
		return
	case "/bighead":
		w.Header().Set("X-Big", strings.Repeat("h", 4096))
	case "/via":
		_, _ = io.WriteString(w, r.Header.Get("Via"))
		return
	case "/hooked":
		_, _ = io.WriteString(w, r.Header.Get("X-Hooked"))
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "origin")
}

// status sends req on a new connection and returns the response's status
// as text, or "closed" when the connection ends without one.
func (e *reloadEnv) status(t *testing.T, req string) string {
	t.Helper()
	c, br := e.tp.rawConn(t)
	defer c.Close()
	mustWrite(t, c, req)
	resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(req)[0]})
	if err != nil {
		return "closed"
	}
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// body sends req on a new connection and returns the response's body.
func (e *reloadEnv) body(t *testing.T, req string) string {
	t.Helper()
	_, body, _ := send(t, e.tp, req)
	return body
}

// getReq is a GET of http://host:port/path, with extra header lines.
func getReq(host, port, path string, extra ...string) string {
	return "GET http://" + host + ":" + port + path + " HTTP/1.1\r\nHost: " + host + ":" + port + "\r\n" +
		strings.Join(extra, "") + "Connection: close\r\n\r\n"
}

func basic(user, pass string) string {
	return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n"
}

// headerAuth is an Authenticator that wants "X-Key: k".
type headerAuth struct{}

func (headerAuth) Authenticate(_ context.Context, r *http.Request) (string, bool) {
	return "key", r.Header.Get("X-Key") == "k"
}
func (headerAuth) Challenge() string { return "Key" }

// intercepted reports how a TLS CONNECT to the TLS origin was served:
// "intercepted" when the certificate came from the interception CA,
// "tunnelled" when it is the origin's own.
func (e *reloadEnv) intercepted(t *testing.T) string {
	t.Helper()
	caCert, err := x509.ParseCertificate(e.ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := e.roots.Clone()
	roots.AddCert(caCert)
	tc, _ := connectTLS(t, e.tp, "a.test:"+e.tlsO, "example.com", roots)
	defer tc.Close()
	if tc.ConnectionState().PeerCertificates[0].Issuer.String() == caCert.Subject.String() {
		return "intercepted"
	}
	return "tunnelled"
}

// TestReloadLive: each setting that may change live applies to the next
// request or tunnel after Reload returns, and the one before applies again
// after a Reload back. A probe sends a request (or opens a tunnel) and
// names its outcome; before and after are the outcomes under the two
// configurations.
func TestReloadLive(t *testing.T) {
	priv, anyPort := WithAllowPrivate(), allowAnyConnectPort()
	accessHook := WithAccessHook(func(_ context.Context, a Access) error {
		if a.Host == "b.test" {
			return errors.New("hook says no")
		}
		return nil
	})
	connectHook := WithConnectHook(func(context.Context, string, *http.Request) error { return errors.New("no tunnels") })
	requestHook := WithRequestHook(func(_ context.Context, out *http.Request) (*http.Response, error) {
		out.Header.Set("X-Hooked", "yes")
		return nil, nil
	})
	responseHook := WithResponseHook(func(_ context.Context, resp *http.Response) error {
		resp.StatusCode = 299
		return nil
	})
	fallback := WithFallback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fallback") }))

	type probe func(t *testing.T, e *reloadEnv) string
	statusOf := func(host, path string, extra ...string) probe {
		return func(t *testing.T, e *reloadEnv) string { return e.status(t, getReq(host, e.port, path, extra...)) }
	}
	getBody := func(path string) probe {
		return func(t *testing.T, e *reloadEnv) string { return e.body(t, getReq("a.test", e.port, path)) }
	}
	connectTo := func(host string) probe {
		return func(t *testing.T, e *reloadEnv) string { return e.status(t, connect(host+":"+e.echo)) }
	}
	// holding opens a connection (a tunnel when tunnel) and has it served,
	// then probes with a second one: a limit of one refuses it.
	holding := func(tunnel bool) probe {
		return func(t *testing.T, e *reloadEnv) string {
			eventually(t, "no connection open", func() bool {
				s := e.tp.Stats()
				return s.ActiveConnections == 0 && s.ActiveTunnels == 0
			})
			if tunnel {
				c, _ := e.tp.connect(t, "a.test:"+e.echo, "")
				defer c.Close()
				return e.status(t, connect("a.test:"+e.echo))
			}
			c, br := e.tp.rawConn(t)
			defer c.Close()
			if status, _, _ := roundTrip(t, c, br, get("a.test:"+e.port)); status != 200 {
				t.Fatalf("first connection: %d", status)
			}
			return e.status(t, getReq("a.test", e.port, "/"))
		}
	}
	// idleCut waits on a connection (a tunnel when tunnel) for longer than
	// the short timeouts of the cases, then reports whether it is still
	// served.
	idleCut := func(what string) probe {
		return func(t *testing.T, e *reloadEnv) string {
			var c net.Conn
			var br *bufio.Reader
			switch what {
			case "tunnel":
				c, br = e.tp.connect(t, "a.test:"+e.echo, "")
			case "header":
				c, br = e.tp.rawConn(t)
				mustWrite(t, c, "GET http://a.test:"+e.port+"/ HTTP/1.1\r\n") // the rest comes late
			case "idle":
				c, br = e.tp.rawConn(t)
				if status, _, _ := roundTrip(t, c, br, get("a.test:"+e.port)); status != 200 {
					t.Fatalf("first request: %d", status)
				}
			}
			defer c.Close()
			time.Sleep(400 * time.Millisecond)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			switch what {
			case "tunnel":
				if _, err := io.WriteString(c, "ping"); err != nil {
					return "cut"
				}
				buf := make([]byte, 4)
				if _, err := io.ReadFull(br, buf); err != nil {
					return "cut"
				}
				return "open"
			case "header":
				_, _ = io.WriteString(c, "Host: a.test:"+e.port+"\r\n\r\n")
			default:
				_, _ = io.WriteString(c, get("a.test:"+e.port))
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				return "cut"
			}
			resp.Body.Close()
			return "open"
		}
	}
	bigHeader := "X-Pad: " + strings.Repeat("p", 16<<10) + "\r\n"
	post := func(t *testing.T, e *reloadEnv) string {
		return e.status(t, "POST http://a.test:"+e.port+"/ HTTP/1.1\r\nHost: a.test:"+e.port+"\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"+strings.Repeat("b", 100))
	}
	stalled := func(t *testing.T, e *reloadEnv) string {
		c, br := e.tp.rawConn(t)
		defer c.Close()
		mustWrite(t, c, getReq("a.test", e.port, "/stall"))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "cut"
		}
		defer resp.Body.Close()
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "halfhalf" {
			return "cut"
		}
		return "full"
	}
	twice := func(t *testing.T, e *reloadEnv) string {
		e.status(t, getReq("a.test", e.port, "/"))
		return e.status(t, getReq("a.test", e.port, "/"))
	}
	https := func(t *testing.T, e *reloadEnv) string {
		return e.status(t, "GET https://127.0.0.1:"+e.tlsO+"/ HTTP/1.1\r\nHost: 127.0.0.1:"+e.tlsO+"\r\nConnection: close\r\n\r\n")
	}
	intercept := func(t *testing.T, e *reloadEnv) string { return e.intercepted(t) }
	users := func(pw string) Option { return WithBasicAuth(StaticCredentials(map[string]string{"alice": pw})) }
	e := newReloadEnv(t, nil) // one proxy for every case: each Reload makes its configuration whole
	withCA := func(opts ...InterceptOption) Option { return WithInterception(e.ca, opts...) }
	echoPort, _ := strconv.ParseUint(e.echo, 10, 16)

	for _, tc := range []struct {
		name          string
		before, after []Option
		probe         probe
		want          [2]string // outcome before, after
	}{
		{"WithDenyHosts", []Option{priv}, []Option{priv, WithDenyHosts("b.test")}, statusOf("b.test", "/"), [2]string{"200", "403"}},
		{"WithDenyHosts CIDR", []Option{priv}, []Option{priv, WithDenyHosts("127.0.0.0/8")}, statusOf("a.test", "/"), [2]string{"200", "403"}},
		{"WithAllowHosts", []Option{priv}, []Option{priv, WithAllowHosts("a.test")}, statusOf("b.test", "/"), [2]string{"200", "403"}},
		{"WithAllowPorts", []Option{priv}, []Option{priv, WithAllowPorts(uint16(echoPort))}, connectTo("a.test"), [2]string{"403", "200"}},
		{"WithAllowPrivate", nil, []Option{priv}, statusOf("a.test", "/"), [2]string{"403", "200"}},
		{"WithAllowedCIDRs", nil, []Option{WithAllowedCIDRs("127.0.0.1")}, statusOf("a.test", "/"), [2]string{"403", "200"}},
		{"WithReportOnly", []Option{priv, WithDenyHosts("b.test")}, []Option{priv, WithDenyHosts("b.test"), WithReportOnly()}, statusOf("b.test", "/"), [2]string{"403", "200"}},
		{"WithBasicAuth on", []Option{priv}, []Option{priv, users("pw")}, statusOf("a.test", "/"), [2]string{"200", "407"}},
		{"WithBasicAuth password", []Option{priv, users("old")}, []Option{priv, users("new")}, statusOf("a.test", "/", basic("alice", "new")), [2]string{"407", "200"}},
		{"WithAuthenticator", []Option{priv, users("pw")}, []Option{priv, WithAuthenticator(headerAuth{})}, statusOf("a.test", "/", "X-Key: k\r\n"), [2]string{"407", "200"}},
		{"WithMaxConns", []Option{priv}, []Option{priv, WithMaxConns(1)}, holding(false), [2]string{"200", "503"}},
		{"WithMaxTunnels", []Option{priv, anyPort}, []Option{priv, anyPort, WithMaxTunnels(1)}, holding(true), [2]string{"200", "503"}},
		{"WithMaxRequestBodyBytes", []Option{priv}, []Option{priv, WithMaxRequestBodyBytes(10)}, post, [2]string{"200", "413"}},
		{"WithMaxHeaderBytes", []Option{priv, WithMaxHeaderBytes(8 << 10)}, []Option{priv, WithMaxHeaderBytes(32 << 10)}, statusOf("a.test", "/", bigHeader), [2]string{"431", "200"}},
		{"WithMaxResponseHeaderBytes", []Option{priv}, []Option{priv, WithMaxResponseHeaderBytes(1024)}, statusOf("a.test", "/bighead"), [2]string{"200", "502"}},
		{"WithResponseHeaderTimeout", []Option{priv}, []Option{priv, WithResponseHeaderTimeout(50 * time.Millisecond)}, statusOf("a.test", "/slow"), [2]string{"200", "504"}},
		{"WithBodyIdleTimeout", []Option{priv}, []Option{priv, WithBodyIdleTimeout(100 * time.Millisecond)}, stalled, [2]string{"full", "cut"}},
		{"WithTunnelIdleTimeout", []Option{priv, anyPort}, []Option{priv, anyPort, WithTunnelIdleTimeout(100 * time.Millisecond)}, idleCut("tunnel"), [2]string{"open", "cut"}},
		{"WithReadHeaderTimeout", []Option{priv}, []Option{priv, WithReadHeaderTimeout(100 * time.Millisecond)}, idleCut("header"), [2]string{"open", "cut"}},
		{"WithClientIdleTimeout", []Option{priv}, []Option{priv, WithClientIdleTimeout(100 * time.Millisecond)}, idleCut("idle"), [2]string{"open", "cut"}},
		{"WithRateLimit", []Option{priv}, []Option{priv, WithRateLimit(0.001, 1)}, twice, [2]string{"200", "429"}},
		{"WithAccessHook", []Option{priv}, []Option{priv, accessHook}, statusOf("b.test", "/"), [2]string{"200", "403"}},
		{"WithConnectHook", []Option{priv, anyPort}, []Option{priv, anyPort, connectHook}, connectTo("a.test"), [2]string{"200", "403"}},
		{"WithRequestHook", []Option{priv}, []Option{priv, requestHook}, getBody("/hooked"), [2]string{"", "yes"}},
		{"WithResponseHook", []Option{priv}, []Option{priv, responseHook}, statusOf("a.test", "/"), [2]string{"200", "299"}},
		{"WithVia", []Option{priv, WithVia("one")}, []Option{priv, WithVia("two")}, getBody("/via"), [2]string{"1.1 one", "1.1 two"}},
		{"WithFallback", []Option{priv}, []Option{priv, fallback}, func(t *testing.T, e *reloadEnv) string {
			return e.body(t, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		}, [2]string{"this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port\n", "fallback"}},
		{"WithUpstreamRootCAs", []Option{priv}, []Option{priv, WithUpstreamRootCAs(e.roots)}, https, [2]string{"502", "200"}},
		{"WithInterception", []Option{priv, anyPort}, []Option{priv, anyPort, withCA()}, intercept, [2]string{"tunnelled", "intercepted"}},
		{"WithInterceptBypass", []Option{priv, anyPort, withCA()}, []Option{priv, anyPort, withCA(WithInterceptBypass("a.test"))}, intercept, [2]string{"intercepted", "tunnelled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gen := e.tp.Stats().Config.Generation
			for i, step := range [][]Option{tc.before, tc.after, tc.before} {
				e.reload(t, step...)
				if got, want := tc.probe(t, e), tc.want[i%2]; got != want {
					t.Fatalf("%s: %q, want %q", []string{"before", "after", "back"}[i], got, want)
				}
			}
			if s := e.tp.Stats().Config; s.Generation != gen+3 || s.FailedReloads != 0 {
				t.Errorf("Stats.Config = %+v, want generation %d and no failed reload", s, gen+3)
			}
		})
	}
}

// keepAliveGet is a GET of a.test on the env's origin that keeps the
// connection open, with extra header lines.
func (e *reloadEnv) keepAliveGet(extra ...string) string {
	return "GET http://a.test:" + e.port + "/ HTTP/1.1\r\nHost: a.test:" + e.port + "\r\n" + strings.Join(extra, "") + "\r\n"
}

// TestReloadCredentialRemoved: a credential that a Reload removes refuses
// the next request on a keep-alive connection opened before, with 407,
// while the credentials kept still pass on it.
func TestReloadCredentialRemoved(t *testing.T) {
	both := WithBasicAuth(StaticCredentials(map[string]string{"alice": "a-pw", "bob": "b-pw"}))
	e := newReloadEnv(t, nil, WithAllowPrivate(), both)
	c, br := e.tp.rawConn(t)
	if status, _, _ := roundTrip(t, c, br, e.keepAliveGet(basic("bob", "b-pw"))); status != 200 {
		t.Fatalf("bob before the reload: %d", status)
	}
	e.reload(t, WithAllowPrivate(), WithBasicAuth(StaticCredentials(map[string]string{"alice": "a-pw"})))
	if status, _, _ := roundTrip(t, c, br, e.keepAliveGet(basic("bob", "b-pw"))); status != 407 {
		t.Errorf("bob after the reload, same connection: %d, want 407", status)
	}
	if status, _, _ := roundTrip(t, c, br, e.keepAliveGet(basic("alice", "a-pw"))); status != 200 {
		t.Errorf("alice after the reload, same connection: %d, want 200", status)
	}
}

// TestReloadRejected: a Reload that is invalid, or that changes what cannot
// change, returns an error naming the option at fault, keeps the
// configuration in force whole (a request still behaves as before: the
// deny rule that came with the bad option is not applied), counts a failed
// reload, and logs nothing: the error is the caller's to report.
func TestReloadRejected(t *testing.T) {
	var logs logCapture
	e := newReloadEnv(t, logs.logger(), WithAllowPrivate())
	other, err := NewResolver(WithDNSServers("127.0.0.1:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, tc := range []struct {
		name string
		opt  Option
		want string // in the error and the log line
	}{
		{"bad value", WithMaxConns(0), "WithMaxConns"},
		{"bad pattern", WithDenyHosts("a..example"), "WithDenyHosts"},
		{"bad duration", WithDialTimeout(-time.Second), "WithDialTimeout"},
		{"nil option", nil, "nil Option"},
		{"conflicting options", WithResolver(other), "WithResolver"}, // with the base's WithDNSServers
		{"unreadable hosts file", WithHostsFile(t.TempDir()), "WithHostsFile"},
		{"bad interception", WithInterception(tls.Certificate{}), "WithInterception"},
		{"WithLogQueueSize", WithLogQueueSize(7), "WithLogQueueSize"},
		{"WithMeterProvider", WithMeterProvider(metricnoop.NewMeterProvider()), "WithMeterProvider"},
		{"WithTracerProvider", WithTracerProvider(tracenoop.NewTracerProvider()), "WithTracerProvider"},
		{"WithPropagator", WithPropagator(propagation.Baggage{}), "WithPropagator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.tp.Stats().Config
			err := e.tp.Reload(e.opts([]Option{WithAllowPrivate(), WithDenyHosts("b.test"), tc.opt})...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "fwdproxy.Reload: ") {
				t.Fatalf("Reload: %v; want an error naming %s", err, tc.want)
			}
			after := e.tp.Stats().Config
			if after.Generation != before.Generation || after.Hash != before.Hash || after.FailedReloads != before.FailedReloads+1 || after.Reloads != before.Reloads {
				t.Errorf("Stats.Config %+v after %+v; want the same configuration and one more failed reload", after, before)
			}
			if status := e.status(t, getReq("b.test", e.port, "/")); status != "200" {
				t.Errorf("b.test after the failed reload: %s; want 200, the deny rule not applied", status)
			}
			if s := logs.String(); strings.Contains(s, "reload") {
				t.Errorf("a failed reload logged %q; its error is the caller's to report", s)
			}
		})
	}
}

// TestReloadAfterShutdown: Reload after Shutdown returns ErrShutDown.
func TestReloadAfterShutdown(t *testing.T) {
	p, err := New(WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(WithLogger(testLogger(t))); !errors.Is(err, ErrShutDown) {
		t.Errorf("Reload after Shutdown: %v, want ErrShutDown", err)
	}
	if s := p.Stats().Config; s.FailedReloads != 1 || s.Generation != 1 {
		t.Errorf("Stats.Config = %+v", s)
	}
}

// TestReloadConcurrent: reloads from two goroutines at once, while clients
// send requests, under -race: each reload is applied whole (the count of
// generations is exact), and each request is judged by one configuration
// (b.test served, or refused by the deny rule).
func TestReloadConcurrent(t *testing.T) {
	e := newReloadEnv(t, nil, WithAllowPrivate())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, refused atomic.Int64
	for range 3 {
		cl := e.tp.client(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := cl.Get("http://b.test:" + e.port + "/")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && string(b) == "origin":
					served.Add(1)
				case resp.StatusCode == 403 && strings.Contains(string(b), "access denied"):
					refused.Add(1)
				default:
					t.Errorf("b.test: %d %q", resp.StatusCode, b)
				}
			}
		}()
	}
	const perReloader = 25
	var rw sync.WaitGroup
	for i := range 2 {
		rw.Add(1)
		go func() {
			defer rw.Done()
			for n := range perReloader {
				opts := []Option{WithAllowPrivate()}
				if (n+i)%2 == 0 {
					opts = append(opts, WithDenyHosts("b.test"))
				}
				if err := e.tp.Reload(e.opts(opts)...); err != nil {
					t.Error(err)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	rw.Wait()
	close(stop)
	wg.Wait()
	if s := e.tp.Stats().Config; s.Generation != 1+2*perReloader || s.Reloads != 2*perReloader || s.FailedReloads != 0 {
		t.Errorf("Stats.Config = %+v, want generation %d", s, 1+2*perReloader)
	}
	t.Logf("b.test served %d times, refused %d times", served.Load(), refused.Load())
}

// TestReloadRateLimiterState: the per-client state of the rate limiter
// carries over a reload that keeps the rate and burst, and starts afresh
// when they change.
func TestReloadRateLimiterState(t *testing.T) {
	limit := WithRateLimit(0.001, 2) // two requests, then none for 1000 s
	e := newReloadEnv(t, nil, WithAllowPrivate(), limit)
	req := getReq("a.test", e.port, "/")
	for i, want := range []string{"200", "200", "429"} {
		if got := e.status(t, req); got != want {
			t.Fatalf("request %d: %s, want %s", i, got, want)
		}
	}
	old := e.tp.cfg.Load().limiter
	e.reload(t, WithAllowPrivate(), WithRateLimit(0.001, 2), WithDenyHosts("other.test"))
	if e.tp.cfg.Load().limiter != old {
		t.Error("the limiter was replaced although its limit did not change")
	}
	if got := e.status(t, req); got != "429" {
		t.Errorf("after a reload keeping the limit: %s, want 429 (the client's bucket carried over)", got)
	}
	e.reload(t, WithAllowPrivate(), WithRateLimit(0.001, 3))
	if got := e.status(t, req); got != "200" {
		t.Errorf("after a reload changing the limit: %s, want 200 (a new limiter)", got)
	}
}

// twoOrigins starts two HTTP origins on one port, at 127.0.0.1 and
// 127.0.0.2, answering "one" and "two"; it skips the test when the second
// address cannot be had.
func twoOrigins(t *testing.T) (port string) {
	t.Helper()
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ = net.SplitHostPort(l1.Addr().String())
	l2, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		l1.Close()
		t.Skipf("no second loopback address: %v", err)
	}
	for _, o := range []struct {
		l    net.Listener
		name string
	}{{l1, "one"}, {l2, "two"}} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, o.name) })}
		go func() { _ = srv.Serve(o.l) }()
		t.Cleanup(func() { srv.Close() })
	}
	return port
}

// TestReloadDNSServers: a Reload that switches the DNS servers makes a new
// Resolver that asks the new servers (a name now leads elsewhere, and no
// connection pooled to the old address serves it); the old Resolver is
// closed once its dials are over, and a dial that still comes to it asks
// the Resolver in force; Stats.DNS counts across both.
func TestReloadDNSServers(t *testing.T) {
	port := twoOrigins(t)
	ds1, ds2 := dnstest.NewServer(t), dnstest.NewServer(t)
	ds1.Add("x.test. 60 IN A 127.0.0.1")
	ds2.Add("x.test. 60 IN A 127.0.0.2", "y.test. 60 IN A 127.0.0.2")
	opts := func(ds *dnstest.Server) []Option {
		return []Option{WithLogger(testLogger(t)), WithAllowPrivate(), WithDNSServers(ds.Addr()), WithDialTimeout(300 * time.Millisecond)}
	}
	tp := startGuardedProxy(t, opts(ds1)...)
	cl := tp.client(t, nil)
	u := "http://x.test:" + port + "/"
	if _, body := mustGet(t, cl, u); body != "one" {
		t.Fatalf("before the reload: %q, want one", body)
	}
	old := tp.cfg.Load().up
	if err := tp.Reload(opts(ds2)...); err != nil {
		t.Fatal(err)
	}
	cur := tp.cfg.Load().up
	if cur == old || cur.resolver == old.resolver {
		t.Fatal("the upstream and the Resolver were kept although the DNS servers changed")
	}
	if _, body := mustGet(t, cl, u); body != "two" {
		t.Errorf("after the reload: %q, want two (the new servers' answer)", body)
	}
	if s := tp.Stats().DNS; s.Misses < 2 {
		t.Errorf("Stats.DNS.Misses = %d, want the old Resolver's miss counted with the new one's", s.Misses)
	}
	eventually(t, "the old Resolver closed", func() bool {
		old.resolver.mu.Lock()
		defer old.resolver.mu.Unlock()
		return old.resolver.closed
	})
	ips, err := tp.lookup(context.Background(), old.resolver, "y.test")
	if err != nil || len(ips) != 1 || ips[0].String() != "127.0.0.2" {
		t.Errorf("a lookup that came to the closed Resolver: %v, %v; want the Resolver in force's answer", ips, err)
	}
	// A Reload that changes nothing the Resolver is made from keeps it.
	if err := tp.Reload(append(opts(ds2), WithDenyHosts("z.test"))...); err != nil {
		t.Fatal(err)
	}
	if tp.cfg.Load().up != cur {
		t.Error("the upstream was replaced by a reload that changed only a host rule")
	}
}

// connOrigin is an origin that counts the connections it accepted and
// those that closed, and holds requests to /hold until release is closed.
type connOrigin struct {
	port             string
	opened, closed   atomic.Int64
	arrived, release chan struct{}
}

func newConnOrigin(t *testing.T) *connOrigin {
	o := &connOrigin{arrived: make(chan struct{}, 8), release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/hold" {
			o.arrived <- struct{}{}
			<-o.release
		}
		_, _ = io.WriteString(w, "origin")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			o.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			o.closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	_, o.port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return o
}

// TestReloadTransportRebuilt: a Reload that changes a transport setting
// (a timeout) gives new requests new transports, while a request that
// started before completes on the old one, whose connection is then closed
// rather than pooled. On both upstream paths: the own HTTP/1.1 transport
// (GET) and http.Transport (POST, a body).
func TestReloadTransportRebuilt(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			o := newConnOrigin(t)
			e := newReloadEnv(t, nil, WithAllowPrivate())
			cl := e.tp.client(t, nil)
			do := func(path string) error {
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("body")
				}
				req, _ := http.NewRequest(method, "http://a.test:"+o.port+path, body)
				resp, err := cl.Do(req)
				if err != nil {
					return err
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "origin" {
					return fmt.Errorf("%s %s: %d %q", method, path, resp.StatusCode, b)
				}
				return nil
			}
			held := make(chan error, 1)
			go func() { held <- do("/hold") }()
			<-o.arrived
			old := e.tp.cfg.Load().up
			e.reload(t, WithAllowPrivate(), WithResponseHeaderTimeout(20*time.Second))
			if e.tp.cfg.Load().up == old {
				t.Fatal("the transports were kept although a timeout changed")
			}
			if err := do("/"); err != nil {
				t.Fatal(err)
			}
			if o.opened.Load() != 2 {
				t.Errorf("the origin saw %d connections, want 2: the new request on a new transport", o.opened.Load())
			}
			close(o.release)
			if err := <-held; err != nil {
				t.Errorf("the request that started before the reload: %v", err)
			}
			eventually(t, "the old transport's connection closed", func() bool { return o.closed.Load() == 1 })
			if err := do("/"); err != nil || o.opened.Load() != 2 {
				t.Errorf("the next request: %v, on connection %d; want the new transport's pooled one", err, o.opened.Load())
			}
		})
	}
}

// TestReloadIdleUpstreamConns: pooled upstream connections were vetted
// under the rules in force when they were dialed. A Reload that changes the
// rules on addresses (the guard, CIDR rules, report-only) or a transport
// setting closes them; one that changes only rules on names keeps them.
func TestReloadIdleUpstreamConns(t *testing.T) {
	priv := WithAllowPrivate()
	for _, tc := range []struct {
		name   string
		opts   []Option
		closed bool
	}{
		{"host rule", []Option{priv, WithDenyHosts("b.test")}, false},
		{"hook", []Option{priv, WithAccessHook(func(context.Context, Access) error { return nil })}, false},
		{"same options", []Option{priv}, false},
		{"guard", []Option{WithAllowedCIDRs("127.0.0.0/8")}, true},
		{"CIDR rule", []Option{priv, WithDenyHosts("10.0.0.0/8")}, true},
		{"allowed CIDRs", []Option{priv, WithAllowedCIDRs("10.0.0.0/8")}, true},
		{"report-only", []Option{priv, WithReportOnly()}, true},
		{"pool size", []Option{priv, WithMaxIdleConns(8, 16)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newConnOrigin(t)
			e := newReloadEnv(t, nil, priv)
			cl := e.tp.client(t, nil)
			for _, u := range []string{"http://a.test:" + o.port + "/"} {
				if resp, _ := mustGet(t, cl, u); resp.StatusCode != 200 {
					t.Fatal(resp.Status)
				}
			}
			e.reload(t, tc.opts...)
			if tc.closed {
				eventually(t, "the idle upstream connection closed", func() bool { return o.closed.Load() == 1 })
			} else {
				time.Sleep(50 * time.Millisecond)
				if o.closed.Load() != 0 {
					t.Error("the idle upstream connection was closed")
				}
			}
			if resp, _ := mustGet(t, cl, "http://a.test:"+o.port+"/"); resp.StatusCode != 200 {
				t.Fatal(resp.Status)
			}
			want := int64(1)
			if tc.closed {
				want = 2
			}
			if o.opened.Load() != want {
				t.Errorf("the origin saw %d connections, want %d", o.opened.Load(), want)
			}
		})
	}
}

// TestReloadClosesDeniedTunnels: tunnels open at a Reload keep moving bytes
// whatever the new rules (the default); with WithReloadClosesDeniedTunnels
// the reload closes those the new configuration refuses (by the rules on
// their target, the guard or CIDR rules on the address they were dialed
// to, or the credentials they were opened with), logging each, and keeps
// the others.
func TestReloadClosesDeniedTunnels(t *testing.T) {
	priv, anyPort := WithAllowPrivate(), allowAnyConnectPort()
	users := func(names ...string) Option {
		m := map[string]string{}
		for _, n := range names {
			m[n] = n + "-pw"
		}
		return WithBasicAuth(StaticCredentials(m))
	}
	closes := WithReloadClosesDeniedTunnels()
	for _, tc := range []struct {
		name     string
		before   []Option
		after    []Option
		tunnels  [2]string // host and user of the two tunnels
		closed   [2]bool
		logLines int
	}{
		{"off", []Option{priv, anyPort}, []Option{priv, anyPort, WithDenyHosts("b.test")}, [2]string{"a.test", "b.test"}, [2]bool{false, false}, 0},
		{"host rule", []Option{priv, anyPort}, []Option{priv, anyPort, WithDenyHosts("b.test"), closes}, [2]string{"a.test", "b.test"}, [2]bool{false, true}, 1},
		{"port rule", []Option{priv, anyPort}, []Option{priv, closes}, [2]string{"a.test", "b.test"}, [2]bool{true, true}, 2},
		{"CIDR rule on the dialed address", []Option{priv, anyPort}, []Option{priv, anyPort, WithDenyHosts("127.0.0.0/8"), closes}, [2]string{"a.test", "b.test"}, [2]bool{true, true}, 2},
		{"guard", []Option{priv, anyPort}, []Option{anyPort, closes}, [2]string{"a.test", "b.test"}, [2]bool{true, true}, 2},
		{"report-only", []Option{priv, anyPort}, []Option{priv, anyPort, WithDenyHosts("b.test"), WithReportOnly(), closes}, [2]string{"a.test", "b.test"}, [2]bool{false, false}, 0},
		{"credentials", []Option{priv, anyPort, users("alice", "bob")}, []Option{priv, anyPort, users("alice"), closes}, [2]string{"alice", "bob"}, [2]bool{false, true}, 1},
		{"credentials unchanged", []Option{priv, anyPort, users("alice", "bob")}, []Option{priv, anyPort, users("alice", "bob"), WithDenyHosts("c.test"), closes}, [2]string{"alice", "bob"}, [2]bool{false, false}, 0},
		{"a user's policy", []Option{priv, anyPort, users("alice", "bob")}, []Option{priv, anyPort, users("alice", "bob"),
			WithPolicies(Policy{Name: "strict", Users: []string{"bob"}, DenyHosts: []string{"a.test"}}), closes}, [2]string{"alice", "bob"}, [2]bool{false, true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logCapture
			e := newReloadEnv(t, logs.logger(), tc.before...)
			type tun struct {
				c  net.Conn
				br *bufio.Reader
			}
			var tuns [2]tun
			for i, who := range tc.tunnels {
				host, extra := who, ""
				if who == "alice" || who == "bob" {
					host, extra = "a.test", basic(who, who+"-pw")
				}
				c, br := e.tp.rawConn(t)
				target := host + ":" + e.echo
				mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n"+extra+"\r\n")
				resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("CONNECT %s as %s: %v %v", target, who, resp, err)
				}
				tuns[i] = tun{c, br}
			}
			// The tunnels may still be registering (the 200 goes out
			// first): those are judged as they register (track).
			e.reload(t, tc.after...)
			ping := func(tu tun) error {
				_ = tu.c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				if _, err := io.WriteString(tu.c, "ping"); err != nil {
					return err
				}
				_, err := io.ReadFull(tu.br, buf)
				return err
			}
			for i, tu := range tuns {
				var err error
				for n := 0; err == nil && tc.closed[i] && n < 500; n++ {
					err = ping(tu) // until the close arrives
					time.Sleep(10 * time.Millisecond)
				}
				if !tc.closed[i] {
					time.Sleep(50 * time.Millisecond)
					err = ping(tu)
				}
				if cut := err != nil; cut != tc.closed[i] {
					t.Errorf("tunnel %d (%s): closed %v, want %v (%v)", i, tc.tunnels[i], cut, tc.closed[i], err)
				}
			}
			eventually(t, fmt.Sprintf("%d log lines for closed tunnels", tc.logLines), func() bool {
				return strings.Count(logs.String(), "tunnel closed by reload") == tc.logLines
			})
		})
	}
}

// TestReloadClosesLateTunnels: a tunnel admitted under a configuration
// older than a reload with WithReloadClosesDeniedTunnels, and registered
// only after that reload looked at the open ones (its 200 had gone out), is
// judged when it registers.
func TestReloadClosesLateTunnels(t *testing.T) {
	e := newReloadEnv(t, nil, WithAllowPrivate(), allowAnyConnectPort())
	old := e.tp.cfg.Load()
	e.reload(t, WithAllowPrivate(), allowAnyConnectPort(), WithDenyHosts("b.test"), WithReloadClosesDeniedTunnels())
	for _, host := range []string{"a.test", "b.test"} {
		r := httptest.NewRequest(http.MethodConnect, "http://"+host+":443", nil)
		r.Host = host + ":443"
		client, upstream := net.Pipe()
		tu := newTunnel(client, upstream, time.Minute)
		tu.info = newTunnelInfo(old, r, nil)
		if !e.tp.track(tu) {
			t.Fatal("track refused")
		}
		_ = upstream.SetReadDeadline(time.Now().Add(time.Second))
		_, err := upstream.Read(make([]byte, 1)) // the pipe closes when the tunnel is closed
		if closed := !errors.Is(err, os.ErrDeadlineExceeded); closed != (host == "b.test") {
			t.Errorf("late tunnel to %s: closed %v (%v)", host, closed, err)
		}
		tu.close()
		e.tp.untrack(tu)
	}
}

// TestReloadClosesDeniedIntercepted: an intercepted connection is a tunnel
// too: WithReloadClosesDeniedTunnels closes one whose CONNECT the new rules
// refuse.
func TestReloadClosesDeniedIntercepted(t *testing.T) {
	priv, anyPort := WithAllowPrivate(), allowAnyConnectPort()
	e := newReloadEnv(t, nil, priv, anyPort)
	roots := WithUpstreamRootCAs(e.roots)
	e.reload(t, priv, anyPort, roots, WithInterception(e.ca))
	if got := e.intercepted(t); got != "intercepted" {
		t.Fatalf("CONNECT: %s", got)
	}
	caCert, _ := x509.ParseCertificate(e.ca.Certificate[0])
	pool := e.roots.Clone()
	pool.AddCert(caCert)
	tc, br := connectTLS(t, e.tp, "127.0.0.1:"+e.tlsO, "127.0.0.1", pool) // a name the origin's certificate has
	if status, _, _ := roundTrip(t, tc, br, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"); status != 200 {
		t.Fatalf("inside the intercepted connection: %d", status)
	}
	e.reload(t, priv, anyPort, roots, WithInterception(e.ca), WithDenyHosts("127.0.0.1"), WithReloadClosesDeniedTunnels())
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("the intercepted connection to 127.0.0.1 is still open after a reload denying it")
	}
}

// TestReloadStatsAndHash: Stats.Config shows the generation and the
// configuration's hash, which is the same for equal configurations and
// differs when the configuration does; and each reload logs one line that
// names what changed, with old and new values but no secret.
func TestReloadStatsAndHash(t *testing.T) {
	var logs logCapture
	lg := slog.New(slog.NewTextHandler(lockedWriter{&logs.mu, &logs.buf}, nil)) // Info: the reload lines
	hook := WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) { return nil, nil })
	e := newReloadEnv(t, lg, WithAllowPrivate(), hook)
	s0 := e.tp.Stats().Config
	if s0.Generation != 1 || len(s0.Hash) != 64 || s0.Reloads != 0 || s0.LoadedAt.IsZero() {
		t.Fatalf("New's Stats.Config = %+v", s0)
	}
	step := 0
	reload := func(opts ...Option) ConfigStats {
		t.Helper()
		step++
		e.reload(t, opts...)
		s := e.tp.Stats().Config
		if s.Generation != s0.Generation+uint64(step) || s.Reloads != uint64(step) || s.LoadedAt.Before(s0.LoadedAt) {
			t.Errorf("after reload %d: Stats.Config = %+v", step, s)
		}
		return s
	}
	creds := func(pw string) Option {
		return WithBasicAuth(StaticCredentials(map[string]string{"alice": pw, "bob": "x"}))
	}
	for _, tc := range []struct {
		name string
		opts []Option
		same bool   // the hash is New's
		log  string // in the reload's log line
	}{
		{"the same options", []Option{WithAllowPrivate(), hook}, true, "configuration reloaded, unchanged"},
		{"a deny rule", []Option{WithAllowPrivate(), hook, WithDenyHosts("b.test", "10.0.0.0/8")}, false, "WithDenyHosts: none → b.test, 10.0.0.0/8"},
		{"back", []Option{WithAllowPrivate(), hook}, true, "WithDenyHosts: b.test, 10.0.0.0/8 → none"},
		{"a timeout", []Option{WithAllowPrivate(), hook, WithDialTimeout(3 * time.Second)}, false, "WithDialTimeout: 10s → 3s"},
		{"another hook", []Option{WithAllowPrivate(), WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) { return nil, nil })}, false, "WithRequestHook: 1: "},
		{"the hook again", []Option{WithAllowPrivate(), hook}, true, "WithRequestHook"},
		{"credentials", []Option{WithAllowPrivate(), hook, creds("s3cret")}, false, "WithBasicAuth changed"},
		{"the same credentials, rebuilt", []Option{WithAllowPrivate(), hook, creds("s3cret")}, false, "configuration reloaded, unchanged"},
		{"another password", []Option{WithAllowPrivate(), hook, creds("other")}, false, "WithBasicAuth changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := e.tp.Stats().Config.Hash
			logs.buf.Reset()
			s := reload(tc.opts...)
			if (s.Hash == s0.Hash) != tc.same {
				t.Errorf("hash %s, New's %s: equal %v, want %v", s.Hash, s0.Hash, s.Hash == s0.Hash, tc.same)
			}
			unchanged := strings.Contains(tc.log, "unchanged")
			if (s.Hash == prev) != unchanged {
				t.Errorf("hash %s, the previous %s: equal %v, want %v", s.Hash, prev, s.Hash == prev, unchanged)
			}
			logs.wantLogged(t, "configuration reloaded", tc.log, "generation="+strconv.FormatUint(s.Generation, 10), "hash="+s.Hash)
			if out := logs.String(); strings.Contains(out, "s3cret") || strings.Contains(out, "other") {
				t.Errorf("a secret in the log: %s", out)
			}
		})
	}
}

// TestDescribeCoversEverySetting: every setting an option sets is in the
// configuration's description, so that changing it changes the hash and is
// named by the reload's log line. Each field of settings (and of the
// settings nested in it) is changed in turn, by reflection, and the
// description must change at one line.
func TestDescribeCoversEverySetting(t *testing.T) {
	notDescribed := map[string]string{
		"dnsOptions":                  "the names of the resolver options given, not a value",
		"expectContinueTimeout":       "no option sets it",
		"clientWatchDelay":            "no option sets it",
		"reloadClosesDenied":          "what a Reload does, not part of the configuration",
		"accessRules.ConnectPortHint": "set by buildConfig",
	}
	key := []byte("k")
	base := defaultSettings("fwdproxy-test")
	base.interception = &interceptSettings{}
	base.rate, base.burst, base.capture = 1, 1, true // burst and captureBytes mean something with these only
	want := describe(&base, key)
	samples := map[reflect.Type]reflect.Value{ // a value for each interface and pointer type
		reflect.TypeFor[Authenticator]():                 reflect.ValueOf(headerAuth{}),
		reflect.TypeFor[http.Handler]():                  reflect.ValueOf(http.NotFoundHandler()),
		reflect.TypeFor[trace.TracerProvider]():          reflect.ValueOf(tracenoop.NewTracerProvider()),
		reflect.TypeFor[metric.MeterProvider]():          reflect.ValueOf(metricnoop.NewMeterProvider()),
		reflect.TypeFor[propagation.TextMapPropagator](): reflect.ValueOf(propagation.Baggage{}),
		reflect.TypeFor[CertStore]():                     reflect.ValueOf(mustStore(t)),
		reflect.TypeFor[*slog.Logger]():                  reflect.ValueOf(slog.Default()),
		reflect.TypeFor[*x509.CertPool]():                reflect.ValueOf(x509.NewCertPool()),
		reflect.TypeFor[*Resolver]():                     reflect.ValueOf(&Resolver{}),
		reflect.TypeFor[InterceptFunc]():                 reflect.ValueOf(InterceptFunc(func(context.Context, string, *http.Request) bool { return true })),
		reflect.TypeFor[*tls.Config]():                   reflect.ValueOf(&tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}),
		reflect.TypeFor[SharedState]():                   reflect.ValueOf(newQuotaState().mem),
	}
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		for i := range v.NumField() {
			f, name := v.Field(i), v.Type().Field(i).Name
			if path != "" {
				name = path + "." + name
			}
			if _, ok := notDescribed[name]; ok {
				continue
			}
			f = reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem() // settable though unexported
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[tls.Certificate]() {
				walk(name, f)
				continue
			}
			if f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct && f.Type() == reflect.TypeFor[*interceptSettings]() {
				walk(name, f.Elem())
				continue
			}
			old := reflect.New(f.Type()).Elem()
			old.Set(f)
			switch {
			case f.Type() == reflect.TypeFor[tls.Certificate]():
				f.Set(reflect.ValueOf(tls.Certificate{Certificate: [][]byte{[]byte("a certificate")}}))
			case samples[f.Type()].IsValid():
				f.Set(samples[f.Type()])
			default:
				switch f.Kind() {
				case reflect.Bool:
					f.SetBool(!f.Bool())
				case reflect.Int, reflect.Int64:
					f.SetInt(f.Int() + 1)
				case reflect.Float64:
					f.SetFloat(f.Float() + 1)
				case reflect.String:
					f.SetString(f.String() + "x")
				case reflect.Slice:
					f.Set(reflect.Append(f, reflect.Zero(f.Type().Elem())))
				default:
					t.Errorf("settings.%s: no way to change a %s; add a sample", name, f.Type())
					return
				}
			}
			got := describe(&base, key)
			if len(got) != len(want) {
				t.Errorf("changing %s changed the number of lines", name)
			} else if n := len(changes(want, got)); n != 1 {
				t.Errorf("changing %s changed %d lines of the description, want 1", name, n)
			}
			f.Set(old)
		}
	}
	walk("", reflect.ValueOf(&base).Elem())
	if got := describe(&base, key); hashOf(got) != hashOf(want) {
		t.Error("the settings were not restored")
	}
}

func mustStore(t *testing.T) CertStore {
	s, err := NewMemoryCertStore(1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReloadLogger: WithLogger changes live: after the reload, the records
// of new requests (and the reload's own line) go to the new logger and
// none to the old one; WithCapture, given with it, applies to the next
// request's record.
func TestReloadLogger(t *testing.T) {
	var first, second syncBuffer
	json := func(b *syncBuffer) *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }
	e := newReloadEnv(t, json(&first), WithAllowPrivate())
	e.status(t, getReq("a.test", e.port, "/first"))
	quiesce(t, e.tp.Proxy)
	rec := records(t, &first, "request", 1)[0]
	if rec["request_headers"] != nil {
		t.Errorf("a header captured without WithCapture: %v", rec)
	}
	e.base[0] = WithLogger(json(&second))
	e.reload(t, WithAllowPrivate(), WithCapture(0))
	e.status(t, getReq("a.test", e.port, "/second"))
	quiesce(t, e.tp.Proxy)
	recs := records(t, &second, "request", 1)
	if !strings.Contains(recs[0]["url"].(string), "/second") || recs[0]["request_headers"] == nil {
		t.Errorf("the new logger's record: %v; want /second with its headers captured", recs[0])
	}
	records(t, &second, "configuration reloaded", 1)
	if strings.Contains(first.String(), "/second") {
		t.Error("the old logger got a record after the reload")
	}
}

// TestReloadKeepsMintedCertificates: interception keeps its minted
// certificates across a reload that keeps the CA (here, one that changes
// the bypass list), and mints anew from a new CA.
func TestReloadKeepsMintedCertificates(t *testing.T) {
	priv, anyPort := WithAllowPrivate(), allowAnyConnectPort()
	e := newReloadEnv(t, nil, priv, anyPort)
	leaf := func(ca tls.Certificate) *x509.Certificate {
		caCert, _ := x509.ParseCertificate(ca.Certificate[0])
		roots := e.roots.Clone()
		roots.AddCert(caCert)
		tc, _ := connectTLS(t, e.tp, "a.test:"+e.tlsO, "example.com", roots)
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0]
	}
	e.reload(t, priv, anyPort, WithInterception(e.ca))
	first := leaf(e.ca)
	e.reload(t, priv, anyPort, WithInterception(e.ca, WithInterceptBypass("other.test")))
	if again := leaf(e.ca); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("a new certificate was minted after a reload that kept the CA")
	}
	ca2, _ := newTestCA(t)
	e.reload(t, priv, anyPort, WithInterception(ca2))
	if l := leaf(ca2); l.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the certificate minted by the old CA was served after the CA changed")
	}
}

// TestReloadResolver: the Proxy's own Resolver is kept by a reload that
// leaves its options (and the servers its resolv.conf lists) as they were,
// and replaced when they change, when the resolv.conf file was edited, or
// when WithResolver gives one; a Resolver given with WithResolver is never
// closed by the Proxy, its own replaced ones are.
func TestReloadResolver(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	writeConf := func(server string) {
		if err := os.WriteFile(conf, []byte("nameserver "+server+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("192.0.2.1")
	shared, err := NewResolver(WithDNSServers("192.0.2.9"))
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	base := []Option{WithLogger(testLogger(t)), WithDialTimeout(100 * time.Millisecond)}
	p, err := New(append(base, WithResolvConf(conf))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	var replaced []*Resolver
	for _, tc := range []struct {
		name    string
		edit    string // a new server for the resolv.conf file first, if any
		opts    []Option
		kept    bool
		servers string
	}{
		{"the same options", "", []Option{WithResolvConf(conf)}, true, "192.0.2.1:53"},
		{"a rule", "", []Option{WithResolvConf(conf), WithDenyHosts("x.test")}, true, "192.0.2.1:53"},
		{"the file edited", "192.0.2.2", []Option{WithResolvConf(conf)}, false, "192.0.2.2:53"},
		{"WithDNSTimeout", "", []Option{WithResolvConf(conf), WithDNSTimeout(time.Second)}, false, "192.0.2.2:53"},
		{"WithDNSServers", "", []Option{WithDNSServers("192.0.2.3")}, false, "192.0.2.3:53"},
		{"WithResolver", "", []Option{WithResolver(shared)}, false, "192.0.2.9:53"},
		{"WithResolver again", "", []Option{WithResolver(shared), WithDenyHosts("y.test")}, true, "192.0.2.9:53"},
		{"the own one again", "", []Option{WithDNSServers("192.0.2.3")}, false, "192.0.2.3:53"},
	} {
		if tc.edit != "" {
			writeConf(tc.edit)
		}
		before := p.cfg.Load().up.resolver
		if err := p.Reload(append(base, tc.opts...)...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := p.cfg.Load().up.resolver
		if (r == before) != tc.kept || strings.Join(r.servers, " ") != tc.servers {
			t.Errorf("%s: Resolver kept %v (want %v), servers %v (want %s)", tc.name, r == before, tc.kept, r.servers, tc.servers)
		}
		if r != before && before != shared {
			replaced = append(replaced, before)
		}
	}
	eventually(t, "the replaced Resolvers closed", func() bool {
		for _, r := range append(replaced, shared) {
			r.mu.Lock()
			closed := r.closed
			r.mu.Unlock()
			if closed != (r != shared) {
				return false
			}
		}
		return true
	})
}
