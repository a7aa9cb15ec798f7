package oteltest

import (
	"net"
	"net/url"
	"strconv"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testProxy is a Proxy served on a loopback listener for one test.
type testProxy struct {
	*fwdproxy.Proxy
	URL  *url.URL
	Addr string
}

// startProxy starts a Proxy with opts on 127.0.0.1 and shuts it down when
// the test ends. Since test origins listen on loopback, the private-address
// guard is lifted; startGuardedProxy keeps it. CONNECT is open to port 443
// only, as by default: a test that tunnels to an origin adds
// allowPortOf(origin).
func startProxy(t testing.TB, opts ...fwdproxy.Option) *testProxy {
	t.Helper()
	return startGuardedProxy(t, append([]fwdproxy.Option{fwdproxy.WithAllowPrivate()}, opts...)...)
}

// startGuardedProxy is startProxy with the default private-address guard.
func startGuardedProxy(t testing.TB, opts ...fwdproxy.Option) *testProxy {
	t.Helper()
	p, err := fwdproxy.New(append([]fwdproxy.Option{fwdproxy.WithLogger(proxytest.Logger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, p)
}

// serve serves p on 127.0.0.1 until the test ends.
func serve(t testing.TB, p *fwdproxy.Proxy) *testProxy {
	t.Helper()
	addr := proxytest.Serve(t, p)
	return &testProxy{Proxy: p, URL: &url.URL{Scheme: "http", Host: addr}, Addr: addr}
}

// allowPortOf opens CONNECT to the port of addr (host:port), as test
// origins listen on random ones.
func allowPortOf(t testing.TB, addr string) fwdproxy.Option {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return fwdproxy.WithAllowPorts(uint16(n))
}

// quiesce waits until the proxy has no request or tunnel in flight, so
// that what they record at their end has been recorded.
func quiesce(t testing.TB, p *fwdproxy.Proxy) {
	t.Helper()
	proxytest.Quiesce(t, func() (bool, any) {
		s := p.Stats()
		return s.ActiveRequests == 0 && s.ActiveTunnels == 0, s
	})
}
