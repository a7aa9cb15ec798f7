package fwdproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/miekg/dns"
)

// TestPrivateAddressGuard: by default every special-purpose destination is
// refused with 403, whether named by an IP literal in any encoding or by a
// name that resolves to it, for plain requests and CONNECT, and the origin
// is never contacted; the options open it deliberately.
func TestPrivateAddressGuard(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	ds := dnstest.NewServer(t)
	ds.Add(
		"loopback.test. 60 IN A 127.0.0.1",
		"private.test. 60 IN A 10.1.2.3",
		"metadata.test. 60 IN A 169.254.169.254",
		"v6loop.test. 60 IN AAAA ::1",
		"mapped.test. 60 IN AAAA ::ffff:127.0.0.1",
		"nat64.test. 60 IN AAAA 64:ff9b::a9fe:a9fe",
		"ula.test. 60 IN AAAA fd00::1",
		"cgnat.test. 60 IN A 100.64.0.1",
	)
	guarded := startGuardedProxy(t, WithDNSServers(ds.Addr()), allowAnyConnectPort())

	hosts := []struct{ host, want string }{
		{"127.0.0.1", "loopback"},
		{"0x7f000001", "loopback"},
		{"2130706433", "loopback"},
		{"017700000001", "loopback"},
		{"127.1", "loopback"},
		{"[::1]", "loopback"},
		{"[::ffff:127.0.0.1]", "loopback"},
		{"[::ffff:7f00:1]", "loopback"},
		{"[64:ff9b::a9fe:a9fe]", "link-local"},
		{"169.254.169.254", "link-local"},
		{"10.0.0.1", "private"},
		{"0.0.0.0", ""},
		{"loopback.test", "loopback"},
		{"private.test", "private"},
		{"metadata.test", "link-local"},
		{"v6loop.test", "loopback"},
		{"mapped.test", "loopback"},
		{"nat64.test", "link-local"},
		{"ula.test", ""},
		{"cgnat.test", ""},
	}
	for _, tc := range hosts {
		target := tc.host + ":" + port
		for _, req := range []string{get(target), connect(target)} {
			status, body, _ := send(t, guarded, req)
			if status != http.StatusForbidden || !strings.Contains(body, "private addresses are not allowed") ||
				!strings.Contains(body, tc.want) {
				t.Errorf("%.40q: got %d %q, want 403 naming %q", req, status, body, tc.want)
			}
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the origin was contacted %d times through the guard", n)
	}

	// Opened deliberately.
	for _, tc := range []struct {
		name   string
		opt    Option
		host   string
		status int
	}{
		{"allow private", WithAllowPrivate(), "loopback.test", 200},
		{"allowed CIDR", WithAllowedCIDRs("127.0.0.0/8"), "loopback.test", 200},
		{"allowed CIDR via tricky literal", WithAllowedCIDRs("127.0.0.0/8"), "0x7f000001", 200},
		{"allowed CIDR is not everything", WithAllowedCIDRs("127.0.0.0/8"), "private.test", 403},
		{"allowed address", WithAllowedCIDRs("127.0.0.1"), "loopback.test", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startGuardedProxy(t, WithDNSServers(ds.Addr()), tc.opt, WithDialTimeout(time.Second))
			status, body, _ := send(t, tp, get(tc.host+":"+port))
			if status != tc.status {
				t.Errorf("got %d %q, want %d", status, body, tc.status)
			}
		})
	}
}

// TestVetFiltersMixedAnswers: of a name's addresses only the public ones
// are dialed; the answer shared with the cache is not modified.
func TestVetFiltersMixedAnswers(t *testing.T) {
	p, err := New(WithDenyHosts("8.8.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tc := range []struct {
		in, want []netip.Addr
		reason   string
	}{
		{addrs("1.1.1.1", "2606:4700::1111"), addrs("1.1.1.1", "2606:4700::1111"), ""},
		{addrs("127.0.0.1", "1.1.1.1", "10.0.0.1", "9.9.9.9"), addrs("1.1.1.1", "9.9.9.9"), ""},
		{addrs("1.1.1.1", "8.8.4.4"), addrs("1.1.1.1"), ""},
		{addrs("127.0.0.1", "::1"), nil, "loopback"},
		{addrs("8.8.4.4"), nil, "denied by rule 8.8.4.0/24"},
	} {
		before := append([]netip.Addr(nil), tc.in...)
		got, err := p.vet(context.Background(), dialPolicy{cfg: p.cfg.Load()}, "x:80", "x", 80, tc.in)
		if tc.reason != "" {
			if err == nil || !strings.Contains(err.Error(), tc.reason) || !errors.Is(err, ErrForbidden) {
				t.Errorf("%v: got %v, %v; want a 403 error containing %q", tc.in, got, err, tc.reason)
			}
		} else if err != nil || !equalAddrs(got, tc.want) {
			t.Errorf("%v: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if !equalAddrs(tc.in, before) {
			t.Errorf("vet modified its input: %v, was %v", tc.in, before)
		}
	}
}

func equalAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDNSRebinding: a DNS server that answers a public address and then
// loopback, alternately and with TTL 0, cannot make the proxy connect to
// loopback: the address dialed is the one vetted. The dialer's Control
// function sees every connection attempt and refuses it before any packet
// leaves, so the public address is never actually contacted.
func TestDNSRebinding(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	ds := dnstest.NewServer(t)
	var n atomic.Int64
	ds.SetHook(func(req *dns.Msg) *dns.Msg {
		q := req.Question[0]
		if q.Qtype != dns.TypeA {
			return ds.Reply(req)
		}
		if n.Add(1)%2 == 1 {
			return ds.Reply(req, q.Name+" 0 IN A 93.184.215.14")
		}
		return ds.Reply(req, q.Name+" 0 IN A 127.0.0.1")
	})
	r, err := NewResolver(WithDNSServers(ds.Addr()), WithDNSTTL(0, time.Hour), WithDNSServeStale(time.Nanosecond), WithDNSPrefetch(false))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tp := startGuardedProxy(t, WithResolver(r), allowAnyConnectPort())
	var mu sync.Mutex
	var dialed []string
	tp.dialer.Control = func(network, address string, _ syscall.RawConn) error {
		mu.Lock()
		dialed = append(dialed, address)
		mu.Unlock()
		return errors.New("test: no connection leaves this machine")
	}
	statuses := map[int]int{}
	for i := range 8 {
		req := get("rebind.test:" + port)
		if i%2 == 1 {
			req = connect("rebind.test:" + port)
		}
		status, _, _ := send(t, tp, req)
		statuses[status]++
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range dialed {
		if ap := netip.MustParseAddrPort(a); ap.Addr().IsLoopback() {
			t.Errorf("the proxy dialed %s", a)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the loopback origin was reached")
	}
	if statuses[403] == 0 || statuses[502] == 0 || statuses[403]+statuses[502] != 8 {
		t.Errorf("statuses %v: want only 403 (loopback answers) and 502 (public answers, refused by the test dialer)", statuses)
	}
	if n.Load() < 4 {
		t.Errorf("only %d A queries: the test did not exercise re-resolution", n.Load())
	}
}

// TestProxyAuth: Basic proxy authentication on plain requests and CONNECT;
// the credentials are neither forwarded nor logged.
func TestProxyAuth(t *testing.T) {
	var seen atomic.Value
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Proxy-Authorization") + r.Header.Get("Authorization"))
		io.WriteString(w, "ok")
	})
	target := o.Listener.Addr().String()
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var hookUser atomic.Value
	tp := startProxy(t, WithLogger(logger),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "s3cret:pw", "bob": "hunter2"})),
		WithAccessHook(func(ctx context.Context, a Access) error {
			hookUser.Store(a.User)
			return nil
		}))
	basic := func(user, pass string) string {
		return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n"
	}
	for _, tc := range []struct {
		name, creds string
		status      int
	}{
		{"none", "", 407},
		{"wrong password", basic("alice", "nope"), 407},
		{"unknown user", basic("mallory", "s3cret:pw"), 407},
		{"other user's password", basic("bob", "s3cret:pw"), 407},
		{"malformed", "Proxy-Authorization: Basic !!!\r\n", 407},
		{"other scheme", "Proxy-Authorization: Bearer abc\r\n", 407},
		{"twice", basic("alice", "s3cret:pw") + basic("alice", "s3cret:pw"), 407},
		{"alice", basic("alice", "s3cret:pw"), 200},
		{"bob", basic("bob", "hunter2"), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{"GET", "CONNECT"} {
				req := "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n" + tc.creds + "\r\n"
				if method == "CONNECT" {
					req = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n" + tc.creds + "\r\n"
				}
				status, body, h := send(t, tp, req)
				if status != tc.status {
					t.Errorf("%s: got %d %q, want %d", method, status, body, tc.status)
				}
				if status == 407 && h.Get("Proxy-Authenticate") != `Basic realm="fwdproxy", charset="UTF-8"` {
					t.Errorf("%s: Proxy-Authenticate %q", method, h.Get("Proxy-Authenticate"))
				}
			}
		})
	}
	if s, _ := seen.Load().(string); s != "" {
		t.Errorf("the origin saw credentials %q", s)
	}
	if u, _ := hookUser.Load().(string); u != "bob" {
		t.Errorf("access hook saw user %q, want bob (the last one)", u)
	}

	// Go's client sends the proxy URL's user info on requests and CONNECT.
	u := *tp.URL
	u.User = url.UserPassword("alice", "s3cret:pw")
	tr := &http.Transport{Proxy: http.ProxyURL(&u)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("Go client with credentials: %d", resp.StatusCode)
	}

	// The access log (written asynchronously) names the user.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		logMu.Lock()
		found := strings.Contains(logs.String(), "user=bob") && strings.Contains(logs.String(), "user=alice")
		logMu.Unlock()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access-log record names the authenticated users")
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	for _, secret := range []string{"s3cret", "hunter2", base64.StdEncoding.EncodeToString([]byte("alice:s3cret:pw"))} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds the secret %q:\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "status=407") {
		t.Errorf("no log line for the 407s:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestRules: the documented evaluation order, per request kind, with the
// origin contacted only when the request is allowed.
func TestRules(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	ds := dnstest.NewServer(t)
	ds.Add(
		"www.allowed.test. 60 IN A 127.0.0.1",
		"bad.allowed.test. 60 IN A 127.0.0.1",
		"other.test. 60 IN A 127.0.0.1",
		"ranged.test. 60 IN A 127.0.0.2",
	)
	hostPort := func(h string) string { return h + ":" + port }
	type step struct {
		req    string
		status int
		reason string
	}
	for _, tc := range []struct {
		name  string
		opts  []Option
		steps []step
	}{
		{"no rules: any plain port, CONNECT only 443", nil, []step{
			{get(hostPort("other.test")), 200, ""},
			{connect(hostPort("other.test")), 403, "port " + port + " not allowed for CONNECT"},
		}},
		{"allow port opens CONNECT", []Option{WithAllowPorts(mustPort(t, port))}, []step{
			{connect(hostPort("other.test")), 200, ""},
		}},
		{"deny host", []Option{WithDenyHosts("*.allowed.test"), WithAllowPorts(mustPort(t, port))}, []step{
			{get(hostPort("www.allowed.test")), 403, "host denied by rule *.allowed.test"},
			{connect(hostPort("www.allowed.test")), 403, "host denied by rule *.allowed.test"},
			{get(hostPort("other.test")), 200, ""},
		}},
		{"allow list", []Option{WithAllowHosts("*.allowed.test")}, []step{
			{get(hostPort("www.allowed.test")), 200, ""},
			{get(hostPort("other.test")), 403, "not in allow list"},
		}},
		{"deny beats allow", []Option{WithAllowHosts("*.allowed.test"), WithDenyHosts("bad.allowed.test")}, []step{
			{get(hostPort("www.allowed.test")), 200, ""},
			{get(hostPort("bad.allowed.test")), 403, "host denied by rule bad.allowed.test"},
		}},
		{"deny CIDR on resolved address", []Option{WithDenyHosts("127.0.0.2/32")}, []step{
			{get(hostPort("ranged.test")), 403, "address 127.0.0.2 denied by rule 127.0.0.2/32"},
			{get(hostPort("other.test")), 200, ""},
		}},
		// Nothing listens on 127.0.0.2: a refused connection shows that the
		// rules let the request through to dialing.
		{"allow CIDR", []Option{WithAllowHosts("127.0.0.2/32")}, []step{
			{get(hostPort("ranged.test")), 502, "refused the connection"},
			{get(hostPort("other.test")), 403, "not in allow list"},
		}},
		{"hook denies", []Option{WithAccessHook(func(ctx context.Context, a Access) error {
			if a.Host == "other.test" && !a.Connect && a.Method == "GET" && a.Port == mustPort(t, port) && strings.HasPrefix(a.Client, "127.0.0.1:") {
				return Deny(http.StatusUnavailableForLegalReasons, "not today")
			}
			return nil
		})}, []step{
			{get(hostPort("other.test")), 451, "not today"},
			{get(hostPort("www.allowed.test")), 200, ""},
		}},
		{"rules run before the hook", []Option{WithDenyHosts("other.test"), WithAccessHook(func(ctx context.Context, a Access) error {
			t.Errorf("hook called for a request the rules denied: %+v", a)
			return nil
		})}, []step{
			{get(hostPort("other.test")), 403, "host denied"},
		}},
		{"report-only lets through", []Option{WithReportOnly(), WithDenyHosts("other.test", "127.0.0.2/32"),
			WithAccessHook(func(context.Context, Access) error { return errors.New("hook says no") })}, []step{
			{get(hostPort("other.test")), 200, ""},
			{get(hostPort("ranged.test")), 502, "refused the connection"},
			{connect(hostPort("other.test")), 200, ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			opts := append([]Option{WithDNSServers(ds.Addr()), WithAllowPrivate()}, tc.opts...)
			tp := startGuardedProxy(t, opts...)
			allowed := int64(0)
			for _, s := range tc.steps {
				status, body, _ := send(t, tp, s.req)
				if status != s.status || !strings.Contains(body, s.reason) {
					t.Errorf("%.45q: got %d %q, want %d containing %q", s.req, status, body, s.status, s.reason)
				}
				if status == 200 && strings.HasPrefix(s.req, "GET") {
					allowed++
				}
			}
			if got := hits.Load() - before; got != allowed {
				t.Errorf("origin saw %d requests, want %d: denied requests must not reach it", got, allowed)
			}
		})
	}
}

func mustPort(t *testing.T, s string) uint16 {
	ap, err := netip.ParseAddrPort("127.0.0.1:" + s)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// TestReportOnlyLogs: a denial in report-only mode is logged.
func TestReportOnlyLogs(t *testing.T) {
	_, port := hitCountingOrigin(t)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	tp := startProxy(t, WithLogger(logger), WithReportOnly(), WithDenyHosts("127.0.0.1"))
	if status, body, _ := send(t, tp, get("127.0.0.1:"+port)); status != 200 {
		t.Fatalf("got %d %q", status, body)
	}
	// The log goes through the asynchronous queue: wait for the line.
	logged := func() string {
		mu.Lock()
		defer mu.Unlock()
		return logs.String()
	}
	eventually(t, "the report-only log line", func() bool {
		l := logged()
		return strings.Contains(l, "would deny (report-only)") && strings.Contains(l, "127.0.0.1/32")
	})
}

// TestTunnelLimit: with the maximum of tunnels open the next CONNECT gets
// 503 while the open ones keep working; closing one frees a slot.
func TestTunnelLimit(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t, WithMaxTunnels(2))
	var open []net.Conn
	var readers []*bufio.Reader
	for range 2 {
		c, br := tp.connect(t, addr, "")
		open = append(open, c)
		readers = append(readers, br)
	}
	if status, body, _ := send(t, tp, connect(addr)); status != 503 || !strings.Contains(body, "too many open tunnels") {
		t.Fatalf("third tunnel: %d %q, want 503", status, body)
	}
	for i, c := range open {
		mustWrite(t, c, "ping\n")
		if line, err := readers[i].ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("tunnel %d after the refusal: %q %v", i, line, err)
		}
	}
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, _ := send(t, tp, connect(addr))
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tunnel slot freed after closing one: %d", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConnLimit: a client connection past the limit is answered 503 and
// closed; once a connection closes, new ones are served.
func TestConnLimit(t *testing.T) {
	_, port := hitCountingOrigin(t)
	tp := startProxy(t, WithMaxConns(2))
	a, abr := tp.rawConn(t)
	served := func(when string) {
		mustWrite(t, a, get("127.0.0.1:"+port))
		resp, err := http.ReadResponse(abr, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("first connection %s: %v %v", when, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	served("at first")
	b, _ := tp.rawConn(t)
	c, cbr := tp.rawConn(t)
	mustWrite(t, c, get("127.0.0.1:"+port))
	resp, err := http.ReadResponse(cbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || !strings.Contains(string(body), "too many client connections") || !resp.Close {
		t.Fatalf("third connection: %d %q close=%v, want 503 and close", resp.StatusCode, body, resp.Close)
	}
	// Refused at accept, the connection is closed before the request is
	// read, so the request that arrives after the close may draw a reset.
	if _, err := cbr.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("third connection not closed after the 503: %v", err)
	}
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, _ := send(t, tp, get("127.0.0.1:"+port))
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after a connection closed: %d", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	served("later") // the first connection was served throughout
}

// TestRequestLimits: rate limit (429), header size (431), body size (413).
func TestRequestLimits(t *testing.T) {
	hits, port := hitCountingOrigin(t)
	target := "127.0.0.1:" + port
	t.Run("rate", func(t *testing.T) {
		tp := startProxy(t, WithRateLimit(0.001, 2))
		for i, want := range []int{200, 200, 429, 429} {
			status, body, h := send(t, tp, get(target))
			if status != want {
				t.Errorf("request %d: %d %q, want %d", i, status, body, want)
			}
			if status == 429 && h.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		}
	})
	t.Run("header bytes", func(t *testing.T) {
		tp := startProxy(t, WithMaxHeaderBytes(1024))
		status, _, _ := send(t, tp, "GET http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\nX-Big: "+strings.Repeat("a", 8192)+"\r\n\r\n")
		if status != 431 {
			t.Errorf("oversized header: %d, want 431", status)
		}
	})
	t.Run("body bytes", func(t *testing.T) {
		tp := startProxy(t, WithMaxRequestBodyBytes(10))
		before := hits.Load()
		post := func(headers, body string) (int, string) {
			s, b, _ := send(t, tp, "POST http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\n"+headers+"\r\n"+body)
			return s, b
		}
		if s, b := post("Content-Length: 20\r\n", strings.Repeat("x", 20)); s != 413 || !strings.Contains(b, "over the limit of 10") {
			t.Errorf("Content-Length 20: %d %q, want 413", s, b)
		}
		if hits.Load() != before {
			t.Errorf("an oversized request with a known length reached the origin")
		}
		if s, b := post("Transfer-Encoding: chunked\r\n", "14\r\n"+strings.Repeat("x", 20)+"\r\n0\r\n\r\n"); s != 413 {
			t.Errorf("chunked 20 bytes: %d %q, want 413", s, b)
		}
		if s, b := post("Content-Length: 10\r\n", strings.Repeat("x", 10)); s != 200 {
			t.Errorf("Content-Length 10: %d %q, want 200", s, b)
		}
		if s, b := post("Transfer-Encoding: chunked\r\n", "a\r\n"+strings.Repeat("x", 10)+"\r\n0\r\n\r\n"); s != 200 {
			t.Errorf("chunked 10 bytes: %d %q, want 200", s, b)
		}
	})
}

// TestSlowloris: a client that never finishes its headers is cut at the
// read-header timeout, while other clients are served meanwhile.
func TestSlowloris(t *testing.T) {
	_, port := hitCountingOrigin(t)
	tp := startProxy(t, WithReadHeaderTimeout(300*time.Millisecond))
	slow, sbr := tp.rawConn(t)
	start := time.Now()
	mustWrite(t, slow, "GET http://127.0.0.1:"+port+"/ HTTP/1.1\r\nHost: x\r\n")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // trickle a header byte now and then, as slowloris does
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := slow.Write([]byte("X")); err != nil {
					return
				}
			}
		}
	}()
	if status, _, _ := send(t, tp, get("127.0.0.1:"+port)); status != 200 {
		t.Errorf("another client was not served: %d", status)
	}
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(sbr)
	close(stop)
	wg.Wait()
	if elapsed := time.Since(start); err != nil || elapsed > 5*time.Second {
		t.Errorf("slow client: read ended after %v with %v; want the connection closed at the header timeout", elapsed, err)
	}
}
