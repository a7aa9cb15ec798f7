package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"github.com/fwdproxy/fwdproxy/internal/socks5"
)

// The front ends, each as a test sees it: how a Proxy serves it and how a
// client reaches the Proxy through it. ingresses is the one table that the
// tests that must behave alike on every front end run over.

// ingress is one way into the proxy.
type ingress struct {
	name string
	// socks: the client speaks SOCKS5, which has tunnels only and answers
	// with reply codes instead of statuses.
	socks bool
	// h2: the client speaks HTTP/2 over the connection dial makes.
	h2 bool
	// client is the address the proxy must see as the client's.
	client string
	// options are the front end's own (with pki: the proxy's certificate).
	options func(pki *proxytest.PKI, t testing.TB) []Option
	// serve runs the listener (Serve, ServeTLS, ServeSOCKS).
	serve func(p *Proxy, l net.Listener) error
	// dial opens a client connection to addr, ready for HTTP/1.1, HTTP/2
	// or SOCKS5 as the front end speaks.
	dial func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn
}

// tcp reports whether the front end's client connection is plain TCP to
// the proxy (HTTP/1.1, SOCKS5, the PROXY protocol): not TLS, not HTTP/2.
func (fe *ingress) tcp() bool {
	return !fe.h2 && (fe.options == nil || !strings.HasPrefix(fe.name, "HTTPS"))
}

// proxyProtoClient is the client address the PROXY protocol front end's
// header carries.
const proxyProtoClient = "203.0.113.7"

func plainDial(t testing.TB, _ *proxytest.PKI, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// tlsDial dials the proxy's TLS listener, offering proto by ALPN.
func tlsDial(proto string) func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn {
	return func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn {
		t.Helper()
		raw := plainDial(t, pki, addr)
		tc := tls.Client(raw, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1", NextProtos: []string{proto}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
			t.Fatalf("ALPN chose %q, want %q", got, proto)
		}
		return tc
	}
}

func withProxyCert(pki *proxytest.PKI, t testing.TB) []Option {
	return []Option{WithTLS(&tls.Config{Certificates: []tls.Certificate{pki.Server(t, "127.0.0.1", "localhost")}})}
}

var ingresses = []ingress{
	{
		name: "HTTP/1.1", client: "127.0.0.1",
		serve: (*Proxy).Serve, dial: plainDial,
	},
	{
		name: "HTTPS HTTP/1.1", client: "127.0.0.1",
		options: withProxyCert, serve: (*Proxy).ServeTLS, dial: tlsDial("http/1.1"),
	},
	{
		name: "HTTPS HTTP/2", client: "127.0.0.1", h2: true,
		options: withProxyCert, serve: (*Proxy).ServeTLS, dial: tlsDial("h2"),
	},
	{
		name: "cleartext HTTP/2", client: "127.0.0.1", h2: true,
		options: func(*proxytest.PKI, testing.TB) []Option { return []Option{WithCleartextHTTP2()} },
		serve:   (*Proxy).Serve, dial: plainDial,
	},
	{
		name: "SOCKS5", client: "127.0.0.1", socks: true,
		serve: (*Proxy).ServeSOCKS, dial: plainDial,
	},
	{
		name: "SOCKS5 on the HTTP listener", client: "127.0.0.1", socks: true,
		options: func(*proxytest.PKI, testing.TB) []Option { return []Option{WithSOCKSOnHTTPListener()} },
		serve:   (*Proxy).Serve, dial: plainDial,
	},
	{
		name: "PROXY protocol", client: proxyProtoClient,
		options: func(*proxytest.PKI, testing.TB) []Option {
			return []Option{WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8"))}
		},
		serve: (*Proxy).Serve,
		dial: func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn {
			c := plainDial(t, pki, addr)
			_, port, _ := net.SplitHostPort(addr)
			mustWrite(t, c, "PROXY TCP4 "+proxyProtoClient+" 127.0.0.1 40000 "+port+"\r\n")
			return c
		},
	},
	{
		name: "HTTPS HTTP/1.1 under the PROXY protocol", client: proxyProtoClient,
		options: func(pki *proxytest.PKI, t testing.TB) []Option {
			return append(withProxyCert(pki, t), WithProxyProtocol(netip.MustParsePrefix("127.0.0.0/8")))
		},
		serve: (*Proxy).ServeTLS,
		dial: func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn {
			c := plainDial(t, pki, addr)
			_, port, _ := net.SplitHostPort(addr)
			mustWrite(t, c, "PROXY TCP4 "+proxyProtoClient+" 127.0.0.1 40000 "+port+"\r\n") // before TLS
			tc := tls.Client(c, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc
		},
	},
}

// frontProxy is a Proxy served by one front end, with its JSON log.
type frontProxy struct {
	*Proxy
	fe   *ingress
	pki  *proxytest.PKI
	addr string
	logs *syncBuffer
}

// startFront starts a Proxy with opts (and the front end's own options) on
// a loopback listener served by fe, logging JSON at Info (the access log)
// into the frontProxy's buffer and at Debug to the test log. It is shut
// down when the test ends.
func startFront(t testing.TB, fe *ingress, opts ...Option) *frontProxy {
	t.Helper()
	fp := &frontProxy{fe: fe, pki: proxytest.NewPKI(t, "fwdproxy test CA"), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(fp.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	all := []Option{WithLogger(logger)}
	if fe.options != nil {
		all = append(all, fe.options(fp.pki, t)...)
	}
	p, err := New(append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	fp.Proxy = p
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp.addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- fe.serve(p, l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s's serve returned %v", fe.name, err)
		}
	})
	return fp
}

// creds are proxy credentials; the zero value sends none.
type creds struct{ user, pass string }

func (c creds) header() string {
	if c.user == "" {
		return ""
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+c.pass))
}

// get sends GET rawURL through the proxy (HTTP front ends only) and
// returns the status and body.
func (fp *frontProxy) get(t testing.TB, rawURL string, cr creds) (int, string) {
	t.Helper()
	c := fp.fe.dial(t, fp.pki, fp.addr)
	defer c.Close()
	if fp.fe.h2 {
		cc := h2Conn(t, c)
		req, err := http.NewRequest(http.MethodGet, rawURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h := cr.header(); h != "" {
			req.Header.Set("Proxy-Authorization", h)
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %s over HTTP/2: %v", rawURL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	req := "GET " + rawURL + " HTTP/1.1\r\nHost: " + u.Host + "\r\nConnection: close\r\n"
	if h := cr.header(); h != "" {
		req += "Proxy-Authorization: " + h + "\r\n"
	}
	mustWrite(t, c, req+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// h2Conn starts an HTTP/2 client connection on c: over TLS when c is a
// *tls.Conn (which negotiated h2), else with prior knowledge. Its requests
// are sent as they are: a URL for another host makes an absolute-form
// request (:scheme and :authority of that host).
func h2Conn(t testing.TB, c net.Conn) *http.ClientConn {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	given := func(context.Context, string, string) (net.Conn, error) { return c, nil }
	scheme := "http"
	if _, ok := c.(*tls.Conn); ok {
		scheme = "https"
		tr.Protocols.SetHTTP2(true)
		tr.DialTLSContext = given
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
		tr.DialContext = given
	}
	cc, err := tr.NewClientConn(context.Background(), scheme, "proxy.invalid:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// tunnel opens a tunnel to target through the proxy (a CONNECT, or a
// SOCKS5 CONNECT) and returns it and the answer: the status, or for SOCKS
// the reply code. The tunnel is nil unless the answer is a success.
func (fp *frontProxy) tunnel(t testing.TB, target string, cr creds) (io.ReadWriteCloser, int) {
	t.Helper()
	c := fp.fe.dial(t, fp.pki, fp.addr)
	switch {
	case fp.fe.socks:
		code, err := socksConnect(c, target, cr)
		if err != nil {
			c.Close()
			t.Fatalf("SOCKS5 CONNECT %s: %v", target, err)
		}
		if code != 0 {
			c.Close()
			return nil, code
		}
		return c, 0
	case fp.fe.h2:
		s, code := h2StreamConnect(t, h2Conn(t, c), target, cr)
		if s == nil {
			c.Close()
			return nil, code
		}
		s.(*h2Stream).conn = c // one stream per connection here: closing it closes both
		return s, code
	}
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if h := cr.header(); h != "" {
		req += "Proxy-Authorization: " + h + "\r\n"
	}
	mustWrite(t, c, req+"\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != 200 {
		c.Close()
		return nil, resp.StatusCode
	}
	return readerConn{Reader: br, Conn: c}, 200
}

// readerConn reads through a bufio.Reader over its connection.
type readerConn struct {
	io.Reader
	net.Conn
}

func (c readerConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

// h2StreamConnect sends a CONNECT to target on cc and returns the stream and the
// status.
func h2StreamConnect(t testing.TB, cc *http.ClientConn, target string, cr creds) (io.ReadWriteCloser, int) {
	t.Helper()
	pr, pw := io.Pipe()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: target}, Host: target, Header: http.Header{}, Body: pr}
	if h := cr.header(); h != "" {
		req.Header.Set("Proxy-Authorization", h)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		pw.Close()
		t.Fatalf("CONNECT %s over HTTP/2: %v", target, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		pw.Close()
		return nil, resp.StatusCode
	}
	return &h2Stream{w: pw, r: resp.Body}, 200
}

// h2Stream is a client's CONNECT stream: writes go to the request body,
// reads come from the response body.
type h2Stream struct {
	w    *io.PipeWriter
	r    io.ReadCloser
	conn net.Conn // closed with the stream, when set
}

func (s *h2Stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *h2Stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *h2Stream) Close() error {
	s.w.Close()
	err := s.r.Close()
	if s.conn != nil {
		s.conn.Close()
	}
	return err
}

// socksConnect speaks a SOCKS5 client's handshake on c (RFC 1928, with
// RFC 1929 credentials when cr has them) for a CONNECT to target, and
// returns the reply code. A target host that is not an IP address is sent
// as a name, as curl --socks5-hostname does.
func socksConnect(c net.Conn, target string, cr creds) (int, error) {
	method := byte(0x00)
	if cr.user != "" {
		method = 0x02
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return 0, err
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	if b[1] != method {
		return 0, fmt.Errorf("server chose method %#x", b[1])
	}
	if method == 0x02 {
		msg := append([]byte{1, byte(len(cr.user))}, cr.user...)
		msg = append(append(msg, byte(len(cr.pass))), cr.pass...)
		if _, err := c.Write(msg); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return 0, err
		}
		if b[1] != 0 {
			return 0, fmt.Errorf("authentication failed: %#x", b[1])
		}
	}
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return 0, err
	}
	port, _ := strconv.Atoi(portStr)
	req := []byte{5, 1, 0}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		a := ip.As4()
		req = append(append(req, 1), a[:]...)
	} else if err == nil {
		a := ip.As16()
		req = append(append(req, 4), a[:]...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return 0, err
	}
	n := 4 + 2
	if head[3] == 4 {
		n = 16 + 2
	}
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		return 0, err
	}
	return int(head[1]), nil
}

// try makes a GET of the policy tables' origin (http://origin.test:httpPort/)
// or, with tunnel, opens a tunnel to its echo port as cr, and returns the
// status (the SOCKS5 reply code on a SOCKS front end). A tunnel opened
// echoes a line and is kept in *held for the caller to close.
func (fp *frontProxy) try(t testing.TB, tunnel bool, httpPort, echoPort string, cr creds, held *[]io.Closer) int {
	t.Helper()
	if !tunnel {
		status, body := fp.get(t, "http://origin.test:"+httpPort+"/", cr)
		if status == 200 && body != "hello from the origin" {
			t.Errorf("GET: body %q", body)
		}
		return status
	}
	c, code := fp.tunnel(t, "origin.test:"+echoPort, cr)
	if c == nil {
		return code
	}
	mustWrite(t, c, "ping\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("tunnel echo: %q %v", line, err)
	}
	*held = append(*held, c)
	return code
}

// answer is what fe answers for an HTTP status: the status itself, or on
// a SOCKS front end its reply code (ReplySucceeded for 200).
func (fe *ingress) answer(status int) int {
	if !fe.socks {
		return status
	}
	if status == 200 {
		return int(socks5.ReplySucceeded)
	}
	return int(socks5.ReplyForStatus(status, nil))
}
