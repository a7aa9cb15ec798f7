package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/policy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testProxy is a Proxy served on a loopback listener for one test.
type testProxy struct {
	*Proxy
	URL  *url.URL
	Addr string
}

// startProxy starts a Proxy with opts on 127.0.0.1 and shuts it down when
// the test ends. Logs go to the test log. Since test origins listen on
// loopback, the private-address guard is lifted; startGuardedProxy keeps it.
func startProxy(t testing.TB, opts ...Option) *testProxy {
	t.Helper()
	return startGuardedProxy(t, append([]Option{WithAllowPrivate(), allowAnyConnectPort()}, opts...)...)
}

// allowAnyConnectPort opens CONNECT to every port, as test origins listen
// on random ones.
func allowAnyConnectPort() Option {
	return func(c *config) error {
		c.rules.ConnectPorts = []policy.PortRange{{Lo: 1, Hi: 65535}}
		return nil
	}
}

// startGuardedProxy is startProxy with the default private-address guard.
func startGuardedProxy(t testing.TB, opts ...Option) *testProxy {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger(t))}, opts...)
	p, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	u := &url.URL{Scheme: "http", Host: l.Addr().String()}
	return &testProxy{Proxy: p, URL: u, Addr: l.Addr().String()}
}

// client returns an HTTP client that sends every request through the proxy.
func (tp *testProxy) client(t testing.TB, tlsConf *tls.Config) *http.Client {
	tr := &http.Transport{
		Proxy:              http.ProxyURL(tp.URL),
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
		TLSClientConfig:    tlsConf,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// origin starts an httptest server for h, closed when the test ends.
func origin(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FWDPROXY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rawConn dials the proxy for tests that speak HTTP/1.1 by hand.
func (tp *testProxy) rawConn(t testing.TB) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", tp.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func mustWrite(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

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
