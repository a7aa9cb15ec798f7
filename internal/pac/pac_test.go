package pac

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dop251/goja"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dnsResolver looks names up with miekg/dns at one server: a small
// stand-in for the proxy's Resolver.
type dnsResolver struct {
	addr    string
	lookups atomic.Int32
}

func (r *dnsResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	var out []netip.Addr
	c := &dns.Client{Timeout: time.Second}
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(host), qt)
		in, _, err := c.ExchangeContext(ctx, m, r.addr)
		if err != nil {
			return nil, err
		}
		for _, rr := range in.Answer {
			switch a := rr.(type) {
			case *dns.A:
				ip, _ := netip.AddrFromSlice(a.A.To4())
				out = append(out, ip)
			case *dns.AAAA:
				ip, _ := netip.AddrFromSlice(a.AAAA)
				out = append(out, ip)
			}
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func newDNS(t *testing.T) *dnsResolver {
	srv := dnstest.NewServer(t)
	srv.Add(
		"app.corp.test. 60 IN A 10.1.2.3",
		"web.example.test. 60 IN A 192.0.2.10",
		"v6only.example.test. 60 IN AAAA 2001:db8::10",
		"dual.example.test. 60 IN AAAA 2001:db8::11",
		"dual.example.test. 60 IN A 192.0.2.11",
	)
	return &dnsResolver{addr: srv.Addr()}
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const routingPAC = `// A PAC file of the usual shape.
function FindProxyForURL(url, host) {
	if (isPlainHostName(host) || host == "127.0.0.1")
		return "DIRECT";
	if (dnsDomainIs(host, ".corp.test") && isInNet(host, "10.0.0.0", "255.0.0.0"))
		return "PROXY corp1.test:3128; PROXY corp2.test:3128; DIRECT";
	if (shExpMatch(url, "https://secure.*"))
		return "HTTPS tls-proxy.test:8443";
	if (isInNet(dnsResolve(host), "192.0.2.0", "255.255.255.0"))
		return "SOCKS5 socks.test:1080; SOCKS socks2.test";
	if (url.substring(0, 5) == "http:")
		return "PROXY plain.test";
	return "proxy   fallback.test:8080 ;; DIRECT";
}
`

func TestFindProxyForURL(t *testing.T) {
	r := newDNS(t)
	e, err := New([]byte(routingPAC), WithResolver(r))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		url, host string
		want      string
	}{
		{"http://intranet/", "intranet", "DIRECT"},
		{"http://127.0.0.1:8080/x", "127.0.0.1", "DIRECT"},
		{"https://app.corp.test/", "app.corp.test", "PROXY corp1.test:3128; PROXY corp2.test:3128; DIRECT"},
		{"https://secure.example.test/login", "secure.example.test", "HTTPS tls-proxy.test:8443"},
		{"https://web.example.test/", "web.example.test", "SOCKS5 socks.test:1080; SOCKS5 socks2.test:1080"},
		{"https://dual.example.test/", "dual.example.test", "SOCKS5 socks.test:1080; SOCKS5 socks2.test:1080"},
		{"http://v6only.example.test/", "v6only.example.test", "PROXY plain.test:80"},
		{"https://nowhere.example.test:8443/", "nowhere.example.test", "PROXY fallback.test:8080; DIRECT"},
	} {
		entries, err := e.FindProxyForURL(context.Background(), tt.url, tt.host)
		if err != nil {
			t.Fatalf("%s: %v", tt.url, err)
		}
		var got []string
		for _, ent := range entries {
			got = append(got, ent.String())
		}
		if strings.Join(got, "; ") != tt.want {
			t.Errorf("%s: %q, want %q", tt.url, strings.Join(got, "; "), tt.want)
		}
	}
	entries, _ := e.FindProxyForURL(context.Background(), "https://app.corp.test/", "app.corp.test")
	var specs []string
	for _, ent := range entries {
		specs = append(specs, ent.UpstreamSpec())
	}
	if got := strings.Join(specs, " "); got != "http://corp1.test:3128 http://corp2.test:3128 DIRECT" {
		t.Fatalf("UpstreamSpec: %s", got)
	}
}

func TestParseEntry(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Entry
		err  string
	}{
		{"DIRECT", Entry{Kind: Direct}, ""},
		{"direct", Entry{Kind: Direct}, ""},
		{"PROXY p:3128", Entry{HTTP, "p:3128"}, ""},
		{"HTTP p:3128", Entry{HTTP, "p:3128"}, ""},
		{"PROXY p", Entry{HTTP, "p:80"}, ""},
		{"HTTPS p", Entry{HTTPS, "p:443"}, ""},
		{"SOCKS p", Entry{SOCKS5, "p:1080"}, ""},
		{"SOCKS5 [2001:db8::1]:1080", Entry{SOCKS5, "[2001:db8::1]:1080"}, ""},
		{"PROXY [2001:db8::1]", Entry{HTTP, "[2001:db8::1]:80"}, ""},
		{"PROXY 10.0.0.1:8080", Entry{HTTP, "10.0.0.1:8080"}, ""},
		{"SOCKS4 p:1080", Entry{}, "SOCKS4 is not supported"},
		{"FTP p:21", Entry{}, "unknown keyword"},
		{"PROXY", Entry{}, "missing host:port"},
		{"PROXY p:0", Entry{}, "invalid port"},
		{"PROXY p:x", Entry{}, "invalid port"},
		{"PROXY a b:1", Entry{}, "invalid host"},
		{"DIRECT x", Entry{}, "no address"},
	} {
		got, err := parseEntry(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseEntry(%q) = %v, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseEntry(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestBadAnswers(t *testing.T) {
	var logs bytes.Buffer
	e, err := New([]byte(`function FindProxyForURL(url, host) {
		switch (host) {
		case "null": return null;
		case "number": return 42;
		case "empty": return "";
		case "junk": return "SOCKS4 a:1; NOPE b";
		case "some": return "NOPE b; PROXY ok.test:1";
		case "throw": throw new Error("bad host " + host);
		case "recurse": return (function f(n) { return f(n + 1); })(0);
		case "alert": alert("hello from " + host); return "DIRECT";
		}
		return undefined;
	}`), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for host, want := range map[string]string{
		"null":    "returned null, not a string",
		"number":  "returned int64, not a string",
		"empty":   "no usable entry",
		"junk":    "no usable entry",
		"throw":   "bad host throw",
		"recurse": "call stack deeper than 1000",
		"other":   "returned undefined",
	} {
		_, err := e.FindProxyForURL(ctx, "http://"+host+"/", host)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", host, err, want)
		}
	}
	entries, err := e.FindProxyForURL(ctx, "http://some/", "some")
	if err != nil || len(entries) != 1 || entries[0] != (Entry{HTTP, "ok.test:1"}) {
		t.Fatalf("some: %v, %v", entries, err)
	}
	if !strings.Contains(logs.String(), `entry="NOPE b"`) {
		t.Fatalf("the skipped entry is not logged: %s", logs.String())
	}
	if _, err := e.FindProxyForURL(ctx, "http://alert/", "alert"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="pac alert" message="hello from alert"`) {
		t.Fatalf("alert not logged: %s", logs.String())
	}
}

func TestLoadErrors(t *testing.T) {
	src := "// line 1\nfunction FindProxyForURL(url, host) {\n\treturn \"DIRECT\"\n\tif (\n}\n"
	_, err := New([]byte(src))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 5 || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("err = %v (%+v), want a syntax error at line 5", err, se)
	}
	for src, want := range map[string]string{
		"var x = 1;":                      "does not define a function FindProxyForURL",
		"var FindProxyForURL = 'DIRECT';": "does not define a function FindProxyForURL",
		"undefinedThing();":               "undefinedThing is not defined",
		"while (true) {}":                 "timed out",
	} {
		start := time.Now()
		_, err := New([]byte(src), WithTimeout(100*time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want %q", src, err, want)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("New(%q) took %v", src, time.Since(start))
		}
	}
	// A compile-time error found after parsing also has its position.
	_, err = New([]byte("function FindProxyForURL(url, host) {\n\tlet a = 1;\n\tlet a = 2;\n}\n"))
	if !errors.As(err, &se) || se.Line != 3 {
		t.Fatalf("err = %v, want a syntax error at line 3", err)
	}
	// Source maps are off: goja would otherwise read the named file, and
	// fail to load the script when it is missing.
	if _, err := New([]byte(routingPAC + "//# sourceMappingURL=/nonexistent/proxy.pac.map\n")); err != nil {
		t.Fatalf("a sourceMappingURL comment: %v", err)
	}
	if _, err := New([]byte(routingPAC), WithTimeout(0)); err == nil {
		t.Fatal("a zero timeout was accepted")
	}
}

// blockingResolver answers only when its context ends.
type blockingResolver struct{ calls atomic.Int32 }

func (b *blockingResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	b.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestTimeout(t *testing.T) {
	src := `function FindProxyForURL(url, host) {
		if (host == "loop") { for (;;) {} }
		if (host == "dns") { isResolvable(host); for (var i = 0; ; i++) {} }
		if (host == "dnsonly") { return isResolvable(host) ? "PROXY a.test:1" : "DIRECT"; }
		return "DIRECT";
	}`
	br := &blockingResolver{}
	e, err := New([]byte(src), WithTimeout(150*time.Millisecond), WithResolver(br), WithRuntimes(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"loop", "dns", "dnsonly", "loop"} {
		start := time.Now()
		_, err := e.FindProxyForURL(context.Background(), "http://"+host+"/", host)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: err = %v, want ErrTimeout", host, err)
		}
		if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
			t.Fatalf("%s: returned after %v, want about the 150 ms timeout", host, d)
		}
	}
	// The interrupted runtimes were replaced: the evaluator still works.
	entries, err := e.FindProxyForURL(context.Background(), "http://fine/", "fine")
	if err != nil || entries[0].Kind != Direct {
		t.Fatalf("after timeouts: %v, %v", entries, err)
	}
	if s := e.Stats(); s.Timeouts != 4 || s.Errors != 4 || s.Misses != 5 {
		t.Fatalf("stats %+v", s)
	}
	// A caller's own deadline ends its wait, not the shared evaluation.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.FindProxyForURL(ctx, "http://loop2/", "loop"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	// The evaluation goes on to its own timeout (then goleak is content).
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Timeouts != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned evaluation did not time out: %+v", e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCache(t *testing.T) {
	r := newDNS(t)
	clock := &fakeClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	e, err := New([]byte(`function FindProxyForURL(url, host) {
		return isResolvable(host) ? "PROXY " + host + ":1" : "DIRECT";
	}`), WithResolver(r), WithClock(clock.Now), WithCache(2, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	find := func(url, host string) {
		t.Helper()
		if _, err := e.FindProxyForURL(ctx, url, host); err != nil {
			t.Fatal(err)
		}
	}
	find("https://web.example.test/a", "web.example.test")
	find("https://web.example.test/b?x", "web.example.test")       // same origin: cached
	find("https://user:pw@web.example.test/c", "web.example.test") // same origin
	if s := e.Stats(); s.Misses != 1 || s.Hits != 2 || r.lookups.Load() != 1 {
		t.Fatalf("one origin: %+v, %d lookups", s, r.lookups.Load())
	}
	find("http://web.example.test/", "web.example.test") // another scheme
	if s := e.Stats(); s.Misses != 2 {
		t.Fatalf("scheme not in the key: %+v", s)
	}
	clock.Advance(time.Minute)
	find("https://web.example.test/", "web.example.test") // expired
	if s := e.Stats(); s.Misses != 3 {
		t.Fatalf("TTL: %+v", s)
	}
	// LRU of 2: a third origin evicts the least recently used.
	find("https://app.corp.test/", "app.corp.test")
	find("https://dual.example.test/", "dual.example.test")
	find("https://web.example.test/", "web.example.test")
	if s := e.Stats(); s.Misses != 6 {
		t.Fatalf("LRU: %+v", s)
	}
}

// TestCoalesce checks that concurrent callers for one origin share one
// evaluation, and that a pool of runtimes serves different origins at
// once.
func TestCoalesce(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	res := resolverFunc(func(ctx context.Context, host string) ([]netip.Addr, error) {
		calls.Add(1)
		<-release
		return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
	})
	e, err := New([]byte(`function FindProxyForURL(url, host) { return dnsResolve(host) ? "PROXY p.test:1" : "DIRECT"; }`),
		WithResolver(res), WithRuntimes(4))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			host := fmt.Sprintf("h%d.test", i%2)
			if entries, err := e.FindProxyForURL(context.Background(), "https://"+host+"/", host); err != nil || entries[0].Kind != HTTP {
				t.Errorf("%v %v", entries, err)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // both origins evaluating at once, in two runtimes
	}
	close(release)
	wg.Wait()
	if s := e.Stats(); s.Misses != 2 || calls.Load() != 2 {
		t.Fatalf("stats %+v, %d lookups; want 2 evaluations", s, calls.Load())
	}
}

type resolverFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return f(ctx, host)
}

func TestConcurrent(t *testing.T) {
	r := newDNS(t)
	e, err := New([]byte(routingPAC), WithResolver(r), WithRuntimes(3), WithCache(8, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"intranet", "app.corp.test", "secure.x.test", "web.example.test", "nowhere.test"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				h := hosts[(g+i)%len(hosts)]
				url := fmt.Sprintf("https://%s:%d/", h, 1+i%20) // more origins than the cache holds
				if _, err := e.FindProxyForURL(context.Background(), url, h); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSanitizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://h/":                 "https://h/",
		"https://h":                  "https://h/",
		"https://h:8443/a/b?q#f":     "https://h:8443/",
		"http://u:p@h/x":             "http://h/",
		"http://[2001:db8::1]:80/x":  "http://[2001:db8::1]:80/",
		"h:443":                      "h:443",
		"ws://h/?a=http://x@y/":      "ws://h/",
		"https://h/?redirect=a@b.cd": "https://h/",
	} {
		if got := sanitizeURL(in); got != want {
			t.Errorf("sanitizeURL(%q) = %q, want %q", in, got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = sanitizeURL("https://example.com/") }); a != 0 {
		t.Fatalf("sanitizeURL of a clean URL allocates %v", a)
	}
	if h := urlHost("https://[2001:db8::1]:443/"); h != "2001:db8::1" {
		t.Fatal(h)
	}
}

// evalJS evaluates a JavaScript expression in one of e's runtimes.
func evalJS(t *testing.T, e *Evaluator, expr string) goja.Value {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := e.getVM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.idle <- v }()
	ret, err := v.call(ctx, func() (goja.Value, error) { return v.rt.RunString(expr) })
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return ret
}

func TestHelpers(t *testing.T) {
	r := newDNS(t)
	e, err := New([]byte(`function FindProxyForURL(url, host) { return "DIRECT"; }`),
		WithResolver(r), WithMyIPAddress(netip.MustParseAddr("192.0.2.99")))
	if err != nil {
		t.Fatal(err)
	}
	for expr, want := range map[string]any{
		`isPlainHostName("www")`:                                                       true,
		`isPlainHostName("www.example.com")`:                                           false,
		`dnsDomainIs("www.example.com", ".example.com")`:                               true,
		`dnsDomainIs("www.EXAMPLE.com", ".example.com")`:                               true,
		`dnsDomainIs("www", ".example.com")`:                                           false,
		`dnsDomainIs("www.other.com", ".example.com")`:                                 false,
		`localHostOrDomainIs("www.example.com", "www.example.com")`:                    true,
		`localHostOrDomainIs("www", "www.example.com")`:                                true,
		`localHostOrDomainIs("www.other.com", "www.example.com")`:                      false,
		`localHostOrDomainIs("home", "www.example.com")`:                               false,
		`localHostOrDomainIs("ww", "www.example.com")`:                                 false,
		`isResolvable("web.example.test")`:                                             true,
		`isResolvable("missing.example.test")`:                                         false,
		`isResolvable("192.0.2.1")`:                                                    true,
		`dnsResolve("web.example.test")`:                                               "192.0.2.10",
		`dnsResolve("dual.example.test")`:                                              "192.0.2.11",
		`dnsResolve("v6only.example.test")`:                                            "2001:db8::10",
		`dnsResolve("missing.example.test")`:                                           nil,
		`isInNet("app.corp.test", "10.0.0.0", "255.0.0.0")`:                            true,
		`isInNet("app.corp.test", "10.1.3.0", "255.255.255.0")`:                        false,
		`isInNet("10.1.2.3", "10.1.2.0", "255.255.255.0")`:                             true,
		`isInNet("missing.example.test", "0.0.0.0", "0.0.0.0")`:                        false,
		`isInNet("v6only.example.test", "0.0.0.0", "0.0.0.0")`:                         false,
		`isInNet("10.1.2.3", "10.1.2.0", "bad")`:                                       false,
		`convert_addr("104.16.41.2")`:                                                  int64(1745889538),
		`convert_addr("nope")`:                                                         int64(0),
		`myIpAddress()`:                                                                "192.0.2.99",
		`dnsDomainLevels("www")`:                                                       int64(0),
		`dnsDomainLevels("www.example.com")`:                                           int64(2),
		`shExpMatch("http://home.netscape.com/people/ari/index.html", "*/ari/*")`:      true,
		`shExpMatch("http://home.netscape.com/people/montulli/index.html", "*/ari/*")`: false,
		`shExpMatch("www.example.com", "*.example.com")`:                               true,
		`shExpMatch("example.com", "*.example.com")`:                                   false,
		`shExpMatch("a.b", "a?b")`:                                                     true,
		`shExpMatch("axb", "a.b")`:                                                     false, // '.' is not a regexp dot
		`shExpMatch("a(b", "a(b")`:                                                     true,
		`shExpMatch("", "*")`:                                                          true,
		`shExpMatch("abc", "")`:                                                        false,
		`shExpMatch("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*a*a*c")`:        false,
	} {
		got := evalJS(t, e, expr).Export()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v (%T), want %v", expr, got, got, want)
		}
	}
}

func TestDateTime(t *testing.T) {
	// Sunday 2026-03-15 14:30:45 in UTC; 2026-03-16 01:30:45, a Monday, in Sydney.
	clock := &fakeClock{now: time.Date(2026, 3, 15, 14, 30, 45, 0, time.UTC)}
	sydney, err := time.LoadLocation("Australia/Sydney")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	e, err := New([]byte(`function FindProxyForURL(url, host) { return "DIRECT"; }`),
		WithClock(clock.Now), WithLocation(sydney))
	if err != nil {
		t.Fatal(err)
	}
	for expr, want := range map[string]bool{
		`weekdayRange("SUN", "GMT")`:                        true,
		`weekdayRange("MON")`:                               true, // Sydney
		`weekdayRange("MON", "FRI", "GMT")`:                 false,
		`weekdayRange("MON", "FRI")`:                        true,
		`weekdayRange("FRI", "MON", "GMT")`:                 true, // wraps
		`weekdayRange("SAT", "SUN", "GMT")`:                 true,
		`weekdayRange("TUE", "SAT", "GMT")`:                 false,
		`weekdayRange("sun", "GMT")`:                        true,
		`weekdayRange("XYZ")`:                               false,
		`weekdayRange()`:                                    false,
		`dateRange(15, "GMT")`:                              true,
		`dateRange(16)`:                                     true, // Sydney
		`dateRange("MAR", "GMT")`:                           true,
		`dateRange(2026)`:                                   true,
		`dateRange(2025)`:                                   false,
		`dateRange(1, 15, "GMT")`:                           true,
		`dateRange(16, 31, "GMT")`:                          false,
		`dateRange("JAN", "MAR")`:                           true,
		`dateRange("APR", "DEC")`:                           false,
		`dateRange("NOV", "MAR")`:                           true, // wraps
		`dateRange(1, "MAR", 15, "MAR", "GMT")`:             true,
		`dateRange(16, "MAR", 1, "APR", "GMT")`:             false,
		`dateRange(20, "DEC", 20, "MAR", "GMT")`:            true, // wraps
		`dateRange("JAN", 2026, "JUN", 2026)`:               true,
		`dateRange("JUN", 2025, "JAN", 2026)`:               false,
		`dateRange(1, "JAN", 2026, 15, "MAR", 2026, "GMT")`: true,
		`dateRange(1, "JAN", 2026, 14, "MAR", 2026, "GMT")`: false,
		`dateRange(2026, 2027)`:                             true,
		`dateRange(2027, 2026)`:                             false, // years do not wrap
		`dateRange(1, "MAR", 2026)`:                         false, // odd forms are false
		`dateRange(1, "JAN")`:                               false, // bounds of different shapes
		`dateRange("15", "GMT")`:                            true,  // parseInt's reading
		`timeRange(14, "GMT")`:                              true,
		`timeRange(1)`:                                      true, // Sydney
		`timeRange(9, 17, "GMT")`:                           true,
		`timeRange(15, 17, "GMT")`:                          false,
		`timeRange(22, 15, "GMT")`:                          true, // wraps midnight
		`timeRange(14, 0, 14, 30, "GMT")`:                   true, // until 14:30:59
		`timeRange(14, 31, 15, 0, "GMT")`:                   false,
		`timeRange(14, 30, 0, 14, 30, 45, "GMT")`:           true,
		`timeRange(14, 30, 0, 14, 30, 44, "GMT")`:           false,
		`timeRange(23, 0, 2, 0)`:                            true, // Sydney 01:30, wraps
		`timeRange(1, 2, 3)`:                                false,
		`timeRange("x")`:                                    false,
	} {
		if got := evalJS(t, e, expr).ToBoolean(); got != want {
			t.Errorf("%s = %v, want %v", expr, got, want)
		}
	}
	// Scripts' own Date reads the same clock.
	if got := evalJS(t, e, `new Date().getUTCHours() * 100 + new Date().getUTCMinutes()`).ToInteger(); got != 1430 {
		t.Fatalf("Date: %d", got)
	}
	clock.Set(time.Date(2026, 3, 17, 9, 0, 0, 0, time.UTC))
	if !evalJS(t, e, `weekdayRange("TUE", "GMT") && dateRange(17, "GMT") && timeRange(9, "GMT")`).ToBoolean() {
		t.Fatal("the clock change was not seen")
	}
}
