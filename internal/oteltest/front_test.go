package oteltest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// TestTelemetryOnEveryFrontEnd: a request through each front end (plain
// HTTP/1.1, the HTTPS listener, cleartext HTTP/2, SOCKS5, the PROXY
// protocol) gets one server span and one http.server.request.duration
// point, with the attributes of the pipeline's other requests: the method,
// the target, the status, the protocol as the client spoke it (SOCKS5 as
// network.protocol.name socks, version 5; HTTP's name left implied), and
// the client's address (under the PROXY protocol, the header's).
func TestTelemetryOnEveryFrontEnd(t *testing.T) {
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	oHost, oPort, _ := net.SplitHostPort(o.Listener.Addr().String())
	pki := proxytest.NewPKI(t, "fwdproxy test CA")
	proxyCert := pki.Server(t, "127.0.0.1")
	const balanced = "192.0.2.7" // the client a PROXY header names

	// Each way in makes one GET of o's /x through the proxy at addr and
	// returns the response's status and body, its connection closed.
	get := func(t *testing.T, tr *http.Transport) (int, string) {
		defer tr.CloseIdleConnections() // a SOCKS5 tunnel ends with its connection
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(o.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	viaProxyURL := func(scheme string) func(t *testing.T, addr string) (int, string) {
		return func(t *testing.T, addr string) (int, string) {
			return get(t, &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: scheme, Host: addr}), TLSClientConfig: &tls.Config{RootCAs: pki.Pool}})
		}
	}
	h2c := func(t *testing.T, addr string) (int, string) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		return get(t, &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr) // o's URL, to the proxy: absolute-form over HTTP/2
		}})
	}
	proxyHeader := func(t *testing.T, addr string) (int, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, port, _ := net.SplitHostPort(addr)
		proxytest.MustWrite(t, c, "PROXY TCP4 "+balanced+" 127.0.0.1 40000 "+port+"\r\n"+
			"GET "+o.URL+"/x HTTP/1.1\r\nHost: "+o.Listener.Addr().String()+"\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name     string
		opts     []fwdproxy.Option
		serve    func(*fwdproxy.Proxy, net.Listener) error
		do       func(t *testing.T, addr string) (int, string)
		method   string
		protocol string // network.protocol.name; "" for HTTP's, left out
		version  string
		client   string
	}{
		{"HTTP/1.1", nil, (*fwdproxy.Proxy).Serve, viaProxyURL("http"), "GET", "", "1.1", "127.0.0.1"},
		{"HTTPS", []fwdproxy.Option{fwdproxy.WithTLS(&tls.Config{Certificates: []tls.Certificate{proxyCert}})},
			(*fwdproxy.Proxy).ServeTLS, viaProxyURL("https"), "GET", "", "1.1", "127.0.0.1"},
		{"cleartext HTTP/2", []fwdproxy.Option{fwdproxy.WithCleartextHTTP2()}, (*fwdproxy.Proxy).Serve, h2c, "GET", "", "2", "127.0.0.1"},
		{"SOCKS5", nil, (*fwdproxy.Proxy).ServeSOCKS, viaProxyURL("socks5"), "CONNECT", "socks", "5", "127.0.0.1"},
		{"PROXY protocol", []fwdproxy.Option{fwdproxy.WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8"))},
			(*fwdproxy.Proxy).Serve, proxyHeader, "GET", "", "1.1", balanced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			traceOpt, rec := tracing(t)
			meterOpt, rd := metering(t)
			p, err := fwdproxy.New(append([]fwdproxy.Option{fwdproxy.WithLogger(proxytest.Logger(t)), traceOpt, meterOpt,
				fwdproxy.WithAllowPrivate(), allowPortOf(t, o.Listener.Addr().String())}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			addr := serveWith(t, p, tc.serve)[0]
			if status, body := tc.do(t, addr); status != 200 || body != "hello" {
				t.Fatalf("through the proxy: %d %q", status, body)
			}
			quiesce(t, p)

			servers := endedSpans(t, rec, trace.SpanKindServer)
			if len(servers) != 1 {
				t.Fatalf("%d server spans, want 1", len(servers))
			}
			a := attrMap(servers[0].Attributes())
			want := map[string]string{
				"http.request.method":       tc.method,
				"http.response.status_code": "200",
				"network.protocol.version":  tc.version,
				"server.address":            oHost,
				"server.port":               oPort,
				"client.address":            tc.client,
			}
			if tc.protocol != "" {
				want["network.protocol.name"] = tc.protocol
			}
			if tc.method == "GET" {
				want["url.full"] = o.URL + "/x"
			}
			for k, v := range want {
				if a[k] != v {
					t.Errorf("span attribute %s = %q, want %q", k, a[k], v)
				}
			}
			if _, ok := a["network.protocol.name"]; ok && tc.protocol == "" {
				t.Errorf("span has network.protocol.name %q, want it left out for HTTP", a["network.protocol.name"])
			}
			if len(a) != len(want)+2*boolInt(tc.method == "CONNECT") {
				t.Errorf("span attributes %v, want %v (and the tunnel's byte counts)", a, want)
			}

			ms := collect(t, rd)
			point := []attribute.KeyValue{attribute.String("http.request.method", tc.method),
				attribute.String("network.protocol.version", tc.version), attribute.Int("http.response.status_code", 200)}
			if tc.protocol != "" {
				point = append(point, attribute.String("network.protocol.name", tc.protocol))
			}
			d := ms["http.server.request.duration"]
			if n, all := histCount(t, d, point...), histCount(t, d); n != 1 || all != 1 {
				t.Errorf("http.server.request.duration: %d points with %v, %d in all; want 1 and 1", n, point, all)
			}
		})
	}
}

// TestHandshakeRefusalMetric: the connections the front ends refuse before
// any request are fwdproxy.handshake.refusals, by front end: a PROXY
// protocol header missing from a trusted peer, a plain-HTTP client on the
// HTTPS listener, a SOCKS4 client on the SOCKS5 listener.
func TestHandshakeRefusalMetric(t *testing.T) {
	pki := proxytest.NewPKI(t, "fwdproxy test CA")
	meterOpt, rd := metering(t)
	p, err := fwdproxy.New(fwdproxy.WithLogger(proxytest.Logger(t)), meterOpt,
		fwdproxy.WithTLS(&tls.Config{Certificates: []tls.Certificate{pki.Server(t, "127.0.0.1")}}),
		fwdproxy.WithProxyProtocol(netip.MustParsePrefix("127.0.0.1/32")))
	if err != nil {
		t.Fatal(err)
	}
	addrs := serveWith(t, p, (*fwdproxy.Proxy).ServeTLS, (*fwdproxy.Proxy).ServeSOCKS)
	send := func(addr string, header bool, b string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if header {
			_, port, _ := net.SplitHostPort(addr)
			b = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 " + port + "\r\n" + b
		}
		proxytest.MustWrite(t, c, b)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c) // until the proxy closes it
	}
	send(addrs[0], false, "GET / HTTP/1.1\r\n\r\n")              // no PROXY header
	send(addrs[0], true, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")    // not TLS
	send(addrs[1], true, "\x04\x01\x00\x50\x7f\x00\x00\x01\x00") // SOCKS4
	want := fwdproxy.HandshakeRefusals{ProxyProtocol: 1, TLS: 1, SOCKS: 1}
	proxytest.Quiesce(t, func() (bool, any) { s := p.Stats().RefusedHandshakes; return s == want, s })
	ms := collect(t, rd)
	for _, fe := range []string{"proxy_protocol", "tls", "socks"} {
		if n := sumOf(t, ms["fwdproxy.handshake.refusals"], attribute.String("fwdproxy.front_end", fe)); n != 1 {
			t.Errorf("fwdproxy.handshake.refusals{fwdproxy.front_end=%s} = %d, want 1", fe, n)
		}
	}
}

// serveWith serves p with each of serves (Serve, ServeTLS, ServeSOCKS) on
// a listener on 127.0.0.1 until the test ends, and returns their addresses
// (the first when there is one).
func serveWith(t *testing.T, p *fwdproxy.Proxy, serves ...func(*fwdproxy.Proxy, net.Listener) error) []string {
	t.Helper()
	served := make(chan error, len(serves))
	var addrs []string
	for _, serve := range serves {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		go func() { served <- serve(p, l) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range serves {
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return addrs
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
