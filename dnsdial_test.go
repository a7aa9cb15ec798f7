package fwdproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// listenLoopbacks listens on the same TCP port of each of ips, all in
// 127.0.0.0/8, and returns the port.
func listenLoopbacks(t *testing.T, ips ...string) uint16 {
	t.Helper()
	for range 10 {
		var ls []net.Listener
		var port string
		for _, ip := range ips {
			if port == "" {
				port = "0"
			}
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break
			}
			ls = append(ls, l)
			_, port, _ = net.SplitHostPort(l.Addr().String())
		}
		if len(ls) == len(ips) {
			t.Cleanup(func() {
				for _, l := range ls {
					l.Close()
				}
			})
			p, _ := strconv.Atoi(port)
			return uint16(p)
		}
		for _, l := range ls {
			l.Close()
		}
	}
	t.Fatalf("no free port on %v", ips)
	return 0
}

// blockingDialer returns a dialer whose connection attempts to the given IPs
// hang until their context ends.
func blockingDialer(blocked ...string) *net.Dialer {
	return &net.Dialer{ControlContext: func(ctx context.Context, _, address string, _ syscall.RawConn) error {
		host, _, _ := net.SplitHostPort(address)
		if slices.Contains(blocked, host) {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
}

func remoteIP(t *testing.T, c net.Conn) string {
	t.Helper()
	return c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String()
}

func TestDialContextRotatesAddresses(t *testing.T) {
	checkLeaks(t)
	port := listenLoopbacks(t, "127.0.0.1", "127.0.0.2")
	srv := dnstest.NewServer(t)
	srv.Add("svc.test. 300 IN A 127.0.0.1", "svc.test. 300 IN A 127.0.0.2")
	r := newTestResolver(t, srv)

	count := map[string]int{}
	for range 10 {
		c, err := r.DialContext(context.Background(), "tcp", net.JoinHostPort("svc.test", strconv.Itoa(int(port))))
		if err != nil {
			t.Fatal(err)
		}
		count[remoteIP(t, c)]++
		c.Close()
	}
	if count["127.0.0.1"] != 5 || count["127.0.0.2"] != 5 {
		t.Errorf("connections per address: %v, want 5 each", count)
	}
}

func TestDialContextFallsBackAtOnce(t *testing.T) {
	checkLeaks(t)
	port := listenLoopbacks(t, "127.0.0.1")
	srv := dnstest.NewServer(t)
	srv.Add("svc.test. 300 IN A 127.0.0.3", "svc.test. 300 IN A 127.0.0.1") // nothing listens on 127.0.0.3
	r := newTestResolver(t, srv)

	for range 4 {
		start := time.Now()
		c, err := r.DialContext(context.Background(), "tcp4", net.JoinHostPort("svc.test", strconv.Itoa(int(port))))
		if err != nil {
			t.Fatal(err)
		}
		if ip := remoteIP(t, c); ip != "127.0.0.1" {
			t.Errorf("connected to %s", ip)
		}
		c.Close()
		if elapsed := time.Since(start); elapsed >= happyEyeballsDelay {
			t.Errorf("dial took %v: the refused attempt did not start the next one at once", elapsed)
		}
	}
}

func TestDialAddrsHappyEyeballs(t *testing.T) {
	checkLeaks(t)
	port := listenLoopbacks(t, "127.0.0.1")
	r := newTestResolver(t, nil, WithDNSServers("127.0.0.1"))
	d := blockingDialer("127.0.0.4")

	start := time.Now()
	c, err := r.dialAddrs(context.Background(), d, "tcp", addrs("127.0.0.4", "127.0.0.1"), port)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ip := remoteIP(t, c); ip != "127.0.0.1" {
		t.Errorf("connected to %s", ip)
	}
	if elapsed < happyEyeballsDelay-10*time.Millisecond || elapsed > happyEyeballsDelay+200*time.Millisecond {
		t.Errorf("second attempt won after %v, want about %v", elapsed, happyEyeballsDelay)
	}
}

func TestDialAddrsContextAbortsAttempts(t *testing.T) {
	checkLeaks(t)
	r := newTestResolver(t, nil, WithDNSServers("127.0.0.1"))
	d := blockingDialer("127.0.0.4", "127.0.0.5")
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()

	start := time.Now()
	_, err := r.dialAddrs(ctx, d, "tcp", addrs("127.0.0.4", "127.0.0.5"), 80)
	if elapsed := time.Since(start); elapsed > 600*time.Millisecond {
		t.Errorf("dial returned after %v", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestDialAddrsReturnsFirstError(t *testing.T) {
	checkLeaks(t)
	port := listenLoopbacks(t, "127.0.0.1") // a port nothing listens on elsewhere
	r := newTestResolver(t, nil, WithDNSServers("127.0.0.1"))

	_, err := r.dialAddrs(context.Background(), &net.Dialer{}, "tcp", addrs("127.0.0.3", "127.0.0.5"), port)
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(oe.Addr.String(), "127.0.0.3:") {
		t.Errorf("err = %v, want the refusal of the first address, 127.0.0.3", err)
	}
}

func TestDialContextErrors(t *testing.T) {
	checkLeaks(t)
	srv := dnstest.NewServer(t)
	srv.Add("v4.test. 300 IN A 127.0.0.1")
	r := newTestResolver(t, srv)
	ctx := context.Background()

	if _, err := r.DialContext(ctx, "udp", "v4.test:80"); err == nil {
		t.Error("udp: no error")
	}
	if _, err := r.DialContext(ctx, "tcp", "v4.test"); err == nil {
		t.Error("missing port: no error")
	}
	if _, err := r.DialContext(ctx, "tcp", "v4.test:nonesuch"); err == nil {
		t.Error("unknown service: no error")
	}
	_, err := r.DialContext(ctx, "tcp", "missing.test:80")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("unknown host: err = %v, want a not-found *net.DNSError", err)
	}
	var ae *net.AddrError
	if _, err := r.DialContext(ctx, "tcp6", "v4.test:80"); !errors.As(err, &ae) {
		t.Errorf("tcp6 to an IPv4-only host: err = %v, want *net.AddrError", err)
	}
}

func TestDialOrder(t *testing.T) {
	tests := []struct {
		name    string
		addrs   []netip.Addr
		network string
		rot     uint32
		want    []netip.Addr
	}{
		{"interleaved, IPv6 first", addrs("2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "192.0.2.3"), "tcp", 0,
			addrs("2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "192.0.2.3")},
		{"interleaved, IPv4 first", addrs("192.0.2.1", "2001:db8::1", "192.0.2.2"), "tcp", 0,
			addrs("192.0.2.1", "2001:db8::1", "192.0.2.2")},
		{"rotated per family", addrs("2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "192.0.2.3"), "tcp", 1,
			addrs("2001:db8::2", "192.0.2.2", "2001:db8::1", "192.0.2.3", "192.0.2.1")},
		{"tcp4", addrs("2001:db8::1", "192.0.2.1", "::ffff:192.0.2.2"), "tcp4", 0, addrs("192.0.2.1", "::ffff:192.0.2.2")},
		{"tcp6", addrs("192.0.2.1", "2001:db8::1"), "tcp6", 0, addrs("2001:db8::1")},
		{"none", addrs("192.0.2.1"), "tcp6", 0, []netip.Addr{}},
	}
	for _, tt := range tests {
		if got := dialOrder(tt.addrs, tt.network, tt.rot); !slices.Equal(got, tt.want) {
			t.Errorf("%s: dialOrder = %v, want %v", tt.name, got, tt.want)
		}
	}
}
