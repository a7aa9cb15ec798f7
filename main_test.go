package fwdproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
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
	return optionFunc(func(s *settings) error {
		s.accessRules.ConnectPorts = []policy.PortRange{{Lo: 1, Hi: 65535}}
		return nil
	})
}

// startGuardedProxy is startProxy with the default private-address guard.
func startGuardedProxy(t testing.TB, opts ...Option) *testProxy {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger(t))}, opts...)
	p, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := proxytest.Serve(t, p)
	u := &url.URL{Scheme: "http", Host: addr}
	return &testProxy{Proxy: p, URL: u, Addr: addr}
}

// The helpers that the test-only modules (internal/oteltest) use as well
// live in internal/proxytest; these are their names in this package's tests.
var (
	origin            = proxytest.Origin
	tlsOrigin         = proxytest.TLSOrigin
	hitCountingOrigin = proxytest.HitCountingOrigin
	tcpOrigin         = proxytest.TCPOrigin
	echo              = proxytest.Echo
	closedPort        = proxytest.ClosedPort
	newTestCA         = proxytest.NewCA
	h2Front           = proxytest.H2Front
	testLogger        = proxytest.Logger
	records           = proxytest.Records
	connectRecords    = proxytest.ConnectRecords
	get               = proxytest.GetRequest
	connect           = proxytest.ConnectRequest
	mustWrite         = proxytest.MustWrite
	mustGet           = proxytest.MustGet
	eventually        = proxytest.Eventually
	isTimeout         = netx.IsTimeout
)

// syncBuffer is a bytes.Buffer safe for the log goroutine and the test.
type syncBuffer = proxytest.SyncBuffer

// client returns an HTTP client that sends every request through the proxy.
func (tp *testProxy) client(t testing.TB, tlsConf *tls.Config) *http.Client {
	return proxytest.Client(t, tp.URL, tlsConf)
}

// rawConn dials the proxy for tests that speak HTTP/1.1 by hand.
func (tp *testProxy) rawConn(t testing.TB) (net.Conn, *bufio.Reader) {
	t.Helper()
	return proxytest.RawConn(t, tp.Addr)
}

// connect opens a tunnel through the proxy and returns the raw connection
// after a 200, with any early bytes already sent.
func (tp *testProxy) connect(t testing.TB, target, early string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return proxytest.Connect(t, tp.Addr, target, early)
}

// connectTLS sends CONNECT target through the proxy and starts TLS on the
// tunnel as a client trusting roots, offering protos.
func connectTLS(t testing.TB, tp *testProxy, target, serverName string, roots *x509.CertPool, protos ...string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	return proxytest.ConnectTLS(t, tp.Addr, target, serverName, roots, protos...)
}

// tunnelRoundTrip opens a CONNECT tunnel to an echo server, sends n bytes,
// reads them back, and closes.
func tunnelRoundTrip(t testing.TB, tp *testProxy, addr string, n int) {
	t.Helper()
	proxytest.TunnelRoundTrip(t, tp.Addr, addr, n)
}

// send writes one request by hand and returns the status and body.
func send(t *testing.T, tp *testProxy, req string) (int, string, http.Header) {
	t.Helper()
	return proxytest.Send(t, tp.Addr, req)
}

// quiesce waits until the proxy has no request or tunnel in flight, so
// that what they record at their end has been recorded.
func quiesce(t testing.TB, p *Proxy) {
	t.Helper()
	proxytest.Quiesce(t, func() (bool, any) {
		s := p.Stats()
		return s.ActiveRequests == 0 && s.ActiveTunnels == 0, s
	})
}

// promptly bounds how long a refusal or a timeout may take to come (a
// generous bound, not a speed check): before the refusals of Serve's loop,
// each of the clients it answers waited out the 10 s header timeout.
const promptly = 3 * time.Second

// logCapture is a logger whose lines a test can read.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (lc *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{&lc.mu, &lc.buf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
