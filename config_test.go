package fwdproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// The seam a reload plugs into (issue 15): the configuration is one value
// that swap replaces whole. These tests build configurations with
// buildConfig from the Proxy's own defaults, as a Reload would, and swap
// them in while requests and tunnels run.

// swapFixture is a proxy on 127.0.0.1 whose names a.test and b.test both
// lead to 127.0.0.1, and two configurations of it: "A" allows both names,
// "B" denies b.test; a response hook of each tags the responses it lets
// through with its name (X-Config).
type swapFixture struct {
	tp   *testProxy
	a, b *config
	opts []Option // the options of both
}

func newSwapFixture(t *testing.T, more ...Option) *swapFixture {
	t.Helper()
	ds := dnstest.NewServer(t)
	ds.Add("a.test. 60 IN A 127.0.0.1", "b.test. 60 IN A 127.0.0.1")
	opts := append([]Option{WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort(), WithDNSServers(ds.Addr())}, more...)
	f := &swapFixture{opts: opts}
	f.tp = startGuardedProxy(t, append(opts, tagResponses("A"))...)
	f.a = f.tp.cfg.Load()
	f.b = f.build(t, WithDenyHosts("b.test"), tagResponses("B"))
	return f
}

// build makes a configuration of the fixture's proxy from its options and
// more, as a Reload would.
func (f *swapFixture) build(t *testing.T, more ...Option) *config {
	t.Helper()
	c, err := buildConfig(f.tp.base, append(append([]Option(nil), f.opts...), more...))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.tp.prepare(f.tp.cfg.Load(), c); err != nil { // reload.go: the upstream, the description
		t.Fatal(err)
	}
	return c
}

// tagResponses is a response hook that names the configuration it is part of.
func tagResponses(name string) Option {
	return WithResponseHook(func(_ context.Context, resp *http.Response) error {
		resp.Header.Set("X-Config", name)
		return nil
	})
}

// roundTrip writes req on c and reads the response, body included.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) (int, string, string) {
	t.Helper()
	mustWrite(t, c, req)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("X-Config"), string(b)
}

// TestSwapBetweenRequests: on one keep-alive connection, each request is
// judged by the configuration in force when it started: one that started
// before a swap keeps its configuration to its end (its response hook runs
// after the swap), and the next one on the connection gets the new one.
func TestSwapBetweenRequests(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	f := newSwapFixture(t)
	c, br := f.tp.rawConn(t)
	getB := get("b.test:" + port)

	mustWrite(t, c, "GET http://b.test:"+port+"/slow HTTP/1.1\r\nHost: b.test:"+port+"\r\n\r\n")
	<-arrived
	if old := f.tp.swap(f.b); old != f.a {
		t.Fatalf("swap replaced %p, want the configuration New made (%p)", old, f.a)
	}
	close(release)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Config") != "A" {
		t.Fatalf("request started before the swap: %d, X-Config %q; want 200 from A", resp.StatusCode, resp.Header.Get("X-Config"))
	}

	if status, tag, body := roundTrip(t, c, br, getB); status != 403 || tag != "" || !strings.Contains(body, "access denied") {
		t.Fatalf("b.test after the swap: %d %q %q; want B's 403", status, tag, body)
	}
	if status, tag, _ := roundTrip(t, c, br, get("a.test:"+port)); status != 200 || tag != "B" {
		t.Fatalf("a.test after the swap: %d, X-Config %q; want 200 from B", status, tag)
	}
	f.tp.swap(f.a)
	if status, tag, _ := roundTrip(t, c, br, getB); status != 200 || tag != "A" {
		t.Fatalf("b.test after swapping back: %d, X-Config %q; want 200 from A", status, tag)
	}
}

// TestSwapKeepsTunnels: a tunnel keeps the configuration it started with,
// so one opened before a swap keeps moving bytes when the new configuration
// would refuse it; and the tunnel limit is the new configuration's, counted
// against the tunnels already open.
func TestSwapKeepsTunnels(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	_, port, _ := net.SplitHostPort(echoAddr)
	f := newSwapFixture(t, WithMaxTunnels(2))
	c, br := f.tp.connect(t, "b.test:"+port, "")
	ping := func(msg string) {
		t.Helper()
		mustWrite(t, c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("tunnel echo: %q, %v; want %q", buf, err, msg)
		}
	}
	ping("before the swap")

	f.tp.swap(f.build(t, WithDenyHosts("b.test"), WithMaxTunnels(1)))
	ping("after the swap")
	if status, body, _ := send(t, f.tp, connect("b.test:"+port)); status != 403 {
		t.Errorf("new CONNECT to b.test: %d %q; want 403 from the new rules", status, body)
	}
	if status, body, _ := send(t, f.tp, connect("a.test:"+port)); status != 503 || !strings.Contains(body, "too many open tunnels") {
		t.Errorf("second tunnel with a limit of 1: %d %q; want 503", status, body)
	}

	f.tp.swap(f.a) // a limit of 2 again
	tunnelRoundTrip(t, f.tp, "a.test:"+port, 1000)
	ping("after swapping back")
}

// TestSwapUnderLoad: requests and tunnels run while the configuration
// flips between A and B; every request is judged by exactly one of them
// (b.test is either served by A or refused by B, never served with B's tag),
// none fails otherwise, and no tunnel is cut. Run it with -race.
func TestSwapUnderLoad(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	_, echoPort, _ := net.SplitHostPort(echoAddr)
	f := newSwapFixture(t)

	var tunnels []net.Conn
	var readers []*bufio.Reader
	for range 2 {
		c, br := f.tp.connect(t, "b.test:"+echoPort, "")
		tunnels, readers = append(tunnels, c), append(readers, br)
	}

	const clients = 4
	stop := make(chan struct{})
	var done atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{} // "host status tag"
	var wg sync.WaitGroup
	for i := range clients {
		cl := f.tp.client(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			hosts := []string{"a.test", "b.test"}
			for n := i; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				host := hosts[n%2]
				resp, err := cl.Get("http://" + host + ":" + port + "/")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				tag := resp.Header.Get("X-Config")
				ok := resp.StatusCode == 200 && (tag == "A" || tag == "B" && host == "a.test") ||
					resp.StatusCode == 403 && tag == "" && host == "b.test"
				if !ok {
					t.Errorf("%s: %d, X-Config %q: judged by no one configuration", host, resp.StatusCode, tag)
				}
				mu.Lock()
				seen[host+" "+resp.Status+" "+tag]++
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	tunnelErr := make(chan error, 1)
	go func() {
		// The tunnels opened under A to b.test, which B refuses, keep
		// moving bytes throughout.
		buf := make([]byte, 64)
		for n := 0; ; n++ {
			select {
			case <-stop:
				tunnelErr <- nil
				return
			default:
			}
			c, br := tunnels[n%2], readers[n%2]
			msg := strings.Repeat(string(rune('a'+n%26)), 64)
			if _, err := io.WriteString(c, msg); err != nil {
				tunnelErr <- err
				return
			}
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
				tunnelErr <- err
				return
			}
		}
	}()

	configs := []*config{f.b, f.a}
	for i := range 40 {
		f.tp.swap(configs[i%2])
		// Let a few requests run under each configuration.
		for before := done.Load(); done.Load() < before+clients && !t.Failed(); {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	if err := <-tunnelErr; err != nil {
		t.Errorf("a tunnel opened before the swaps failed: %v", err)
	}
	t.Logf("outcomes: %v", seen)
	if seen["b.test 200 OK A"] == 0 || seen["b.test 403 Forbidden "] == 0 {
		t.Errorf("want b.test both served by A and refused by B, got %v", seen)
	}
}
