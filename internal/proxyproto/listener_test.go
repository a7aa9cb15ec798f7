package proxyproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// curl runs curl with args; the test is skipped when curl is not installed
// (.ci/run installs it).
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "--noproxy", "*", "--max-time", "20"}, args...)...)
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=", "all_proxy=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCurl sends curl's own header (--haproxy-protocol carries curl's real
// source address, so the echo is curl's address as the header gave it) to
// a listener that trusts loopback, and to one that does not.
func TestCurl(t *testing.T) {
	s := startEcho(t, Config{Trusted: loopback})
	out, err := curl(t, "--haproxy-protocol", "-w", " local_port=%{local_port}", "http://"+s.addr+"/")
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	addr, port, ok := strings.Cut(out, " local_port=")
	if !ok || addr != "127.0.0.1:"+port {
		t.Fatalf("echo %q, want curl's address 127.0.0.1:%s", addr, port)
	}
	if st := s.l.Stats(); st.Proxied != 1 {
		t.Errorf("stats %+v, want 1 proxied", st)
	}
	// Without the header, a trusted peer is refused.
	if out, err := curl(t, "http://"+s.addr+"/"); err == nil {
		t.Errorf("trusted peer without a header served: %q", out)
	}
	s.logs.waitFor(t, "sent no PROXY protocol header", "peer=127.0.0.1:")

	u := startEcho(t, Config{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if out, err := curl(t, "--haproxy-protocol", "http://"+u.addr+"/"); err == nil {
		t.Errorf("header from an untrusted peer served: %q", out)
	}
	u.logs.waitFor(t, "PROXY protocol header from an untrusted peer; closed", "peer=127.0.0.1:")
	out, err = curl(t, "-w", " local_port=%{local_port}", "http://"+u.addr+"/")
	if err != nil {
		t.Fatalf("untrusted peer without a header: %v: %s", err, out)
	}
	if addr, port, _ := strings.Cut(out, " local_port="); addr != "127.0.0.1:"+port {
		t.Errorf("untrusted echo %q", out)
	}
	if st := u.l.Stats(); st.RefusedUntrusted != 1 || st.Direct != 2 {
		t.Errorf("stats %+v, want 1 refused, 2 direct", st)
	}
}

func v2Header(t *testing.T, cmd pp.ProtocolVersionAndCommand, proto pp.AddressFamilyAndProtocol, src, dst net.Addr, tlvs ...pp.TLV) []byte {
	t.Helper()
	h := &pp.Header{Version: 2, Command: cmd, TransportProtocol: proto, SourceAddr: src, DestinationAddr: dst}
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// TestHeaders sends hand-written v1 lines and v2 headers built with
// go-proxyproto's Header.Format, each in the same write as the request
// behind it (and some split over several writes), and checks the address
// the server sees.
func TestHeaders(t *testing.T) {
	s := startEcho(t, Config{Trusted: loopback})
	src4, dst4 := tcpAddr("203.0.113.7:1234"), tcpAddr("127.0.0.1:80")
	src6, dst6 := tcpAddr("[2001:db8::7]:1234"), tcpAddr("[::1]:80")
	v2tcp4 := v2Header(t, pp.PROXY, pp.TCPv4, src4, dst4)
	v2withTLVs := v2Header(t, pp.PROXY, pp.TCPv4, src4, dst4,
		pp.TLV{Type: pp.PP2_TYPE_AUTHORITY, Value: []byte("example.com")},
		pp.TLV{Type: pp.PP2_TYPE_UNIQUE_ID, Value: bytes32()})
	for _, tc := range []struct {
		name  string
		parts [][]byte
		want  string // "" for the client's own address
	}{
		{"v1 TCP4", [][]byte{[]byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n")}, "203.0.113.7:1234"},
		{"v1 TCP6", [][]byte{[]byte("PROXY TCP6 2001:db8::7 ::1 1234 80\r\n")}, "[2001:db8::7]:1234"},
		{"v1 UNKNOWN", [][]byte{[]byte("PROXY UNKNOWN\r\n")}, ""},
		{"v1 UNKNOWN with addresses", [][]byte{[]byte("PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n")}, ""},
		{"v1 split over three writes", [][]byte{[]byte("PRO"), []byte("XY TCP4 203.0.113.7 127.0"), []byte(".0.1 1234 80\r\n")}, "203.0.113.7:1234"},
		{"v2 TCPv4", [][]byte{v2tcp4}, "203.0.113.7:1234"},
		{"v2 TCPv6", [][]byte{v2Header(t, pp.PROXY, pp.TCPv6, src6, dst6)}, "[2001:db8::7]:1234"},
		{"v2 TCPv6 with an IPv4-mapped source", [][]byte{v2Header(t, pp.PROXY, pp.TCPv6, tcpAddr("[::ffff:203.0.113.7]:1234"), dst6)}, "203.0.113.7:1234"},
		{"v2 with TLVs", [][]byte{v2withTLVs}, "203.0.113.7:1234"},
		{"v2 LOCAL", [][]byte{v2Header(t, pp.LOCAL, pp.UNSPEC, nil, nil)}, ""},
		{"v2 split in its fixed part", [][]byte{v2tcp4[:5], v2tcp4[5:]}, "203.0.113.7:1234"},
		{"v2 split in its addresses", [][]byte{v2tcp4[:20], v2tcp4[20:]}, "203.0.113.7:1234"},
	} {
		got, err := s.request(t, tc.parts...)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.want == "" {
			if ap, err := netip.ParseAddrPort(got); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("%s: echo %q, want the client's own address", tc.name, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s: echo %q, want %q", tc.name, got, tc.want)
		}
	}
	if st := s.l.Stats(); st.Local != 3 || st.Proxied != 9 {
		t.Errorf("stats %+v, want 3 local, 9 proxied", st)
	}
}

func bytes32() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// TestRefused checks that a trusted peer's malformed, unsupported or
// missing header closes the connection without an answer and logs a line
// naming the peer.
func TestRefused(t *testing.T) {
	v2 := v2Header(t, pp.PROXY, pp.TCPv4, tcpAddr("203.0.113.7:1234"), tcpAddr("127.0.0.1:80"))
	badCmd := append([]byte(nil), v2...)
	badCmd[12] = 0x23 // version 2, command 3
	tooLong := append([]byte(nil), v2[:16]...)
	tooLong[14], tooLong[15] = 0x10, 0x01 // 4097 bytes
	for _, tc := range []struct {
		name string
		send []byte
		log  string
	}{
		{"bad v1 address", []byte("PROXY TCP4 999.1.1.1 127.0.0.1 1234 80\r\n"), "malformed PROXY protocol header"},
		{"v1 IPv6 address under TCP4", []byte("PROXY TCP4 2001:db8::7 127.0.0.1 1234 80\r\n"), "malformed PROXY protocol header"},
		{"v1 without CR", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\n"), "malformed PROXY protocol header"},
		{"v1 bad port", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\n"), "malformed PROXY protocol header"},
		{"v1 unknown protocol", []byte("PROXY UDP4 203.0.113.7 127.0.0.1 1234 80\r\n"), "malformed PROXY protocol header"},
		{"v1 over 107 bytes", []byte("PROXY TCP6 " + strings.Repeat("f", 120) + "\r\n"), "version 1 header must be 107 bytes or less"},
		{"v2 bad command", badCmd, "malformed PROXY protocol header"},
		{"v2 over 4096 bytes", tooLong, "invalid length"},
		{"v2 UDP", v2Header(t, pp.PROXY, pp.UDPv4, &net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 53}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}), "transport UDP over IPv4 is not TCP"},
		{"no header", nil, "sent no PROXY protocol header"},
		{"PROXY without its space", []byte("PROXYTCP4\r\n"), "sent no PROXY protocol header"},
		{"v2 signature broken", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), v2[12:]...), "sent no PROXY protocol header"},
	} {
		// A listener each, so that the one-line-a-second log limit
		// lets every line through.
		s := startEcho(t, Config{Trusted: loopback})
		var parts [][]byte
		if tc.send != nil {
			parts = [][]byte{tc.send}
		}
		got, err := s.request(t, parts...)
		if !closedWithoutAnswer(err) {
			t.Errorf("%s: answered %q, %v", tc.name, got, err)
		}
		s.logs.waitFor(t, tc.log, "peer=127.0.0.1:")
	}
}

// TestRefusedStats checks the counters of refusals and that a peer closing
// before sending anything (a TCP health check) is logged at Debug only.
func TestRefusedStats(t *testing.T) {
	s := startEcho(t, Config{Trusted: loopback, HeaderTimeout: 100 * time.Millisecond})
	for _, send := range [][]byte{[]byte("PROXY TCP4 x\r\n"), nil} {
		if _, err := s.request(t, send); err == nil {
			t.Fatal("answered")
		}
	}
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.logs.waitFor(t, "level=DEBUG msg=\"trusted peer closed before its PROXY protocol header\"")
	silent, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The timeout's log line is held back by the one-line-a-second limit;
	// the counters count every refusal.
	want := Stats{RefusedMalformed: 1, RefusedMissing: 2, RefusedTimeout: 1}
	for deadline := time.Now().Add(5 * time.Second); s.l.Stats() != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", s.l.Stats(), want)
		}
	}
}

// TestUntrusted checks that a peer outside the trusted ranges is served
// with its own address unless it opens with a header, whatever the size of
// its first writes.
func TestUntrusted(t *testing.T) {
	s := startEcho(t, Config{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	v2 := v2Header(t, pp.PROXY, pp.TCPv4, tcpAddr("203.0.113.7:1234"), tcpAddr("127.0.0.1:80"))
	for _, tc := range []struct {
		name   string
		parts  [][]byte
		served bool
	}{
		{"plain request", nil, true},
		{"request split after P", [][]byte{[]byte("P"), []byte("OST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")}, true},
		{"v1", [][]byte{[]byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n")}, false},
		{"v1 split", [][]byte{[]byte("PRO"), []byte("XY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n")}, false},
		{"v2", [][]byte{v2}, false},
		{"v2 split", [][]byte{v2[:3], v2[3:]}, false},
	} {
		got, err := s.request(t, tc.parts...)
		if !tc.served {
			if !closedWithoutAnswer(err) {
				t.Errorf("%s: answered %q, %v", tc.name, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if ap, err := netip.ParseAddrPort(got); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("%s: echo %q", tc.name, got)
		}
	}
	s.logs.waitFor(t, "PROXY protocol header from an untrusted peer; closed", "peer=127.0.0.1:")
	if st := s.l.Stats(); st.RefusedUntrusted != 4 || st.Direct != 6 {
		t.Errorf("stats %+v, want 4 refused of 6", st)
	}
}

// TestUntrustedSmallReads reads an untrusted Conn a byte at a time: the
// check gathers what it needs and hands every byte back in order.
func TestUntrustedSmallReads(t *testing.T) {
	l, addr := listen(t, Config{})
	for _, send := range []string{"GET / HTTP/1.1\r\n", "\r\n\r\nGET", "P", "PROX"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		var b [1]byte
		for {
			n, err := sc.Read(b[:])
			got = append(got, b[:n]...)
			if err != nil {
				if err != io.EOF {
					t.Errorf("%q: %v", send, err)
				}
				break
			}
		}
		if string(got) != send {
			t.Errorf("read %q, want %q", got, send)
		}
		c.Close()
		sc.Close()
	}
}

// listen returns a Listener on loopback, closed at the test's end.
func listen(t *testing.T, cfg Config) (*Listener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	l, err := NewListener(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, inner.Addr().String()
}

// TestSilentPeerDoesNotBlockAccept opens trusted connections that send
// nothing, or half a header, and checks that a connection behind them is
// accepted at once, and that the silent ones are closed at the timeout.
func TestSilentPeerDoesNotBlockAccept(t *testing.T) {
	s := startEcho(t, Config{Trusted: loopback, HeaderTimeout: 2 * time.Second})
	var stalled []net.Conn
	for _, send := range []string{"", "PROXY TCP4 203.0.113.7", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"} {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	start := time.Now()
	got, err := s.request(t, []byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n"))
	if err != nil || got != "203.0.113.7:1234" {
		t.Fatalf("request behind silent peers: %q, %v", got, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("request behind silent peers took %v", d)
	}
	if st := s.l.Stats(); st.RefusedTimeout != 0 {
		t.Errorf("stats %+v before the timeout", st)
	}
	for _, c := range stalled {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !closedWithoutAnswer(err) {
			t.Errorf("stalled peer: read %d, %v; want closed", n, err)
		}
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("stalled peers closed after %v, before the timeout", d)
	}
	s.logs.waitFor(t, "no PROXY protocol header within 2s from a trusted peer; closed")
	if st := s.l.Stats(); st.RefusedTimeout != 3 {
		t.Errorf("stats %+v, want 3 timeouts", st)
	}
}

// TestMaxPending checks that trusted connections past MaxPending awaited
// headers are closed at once.
func TestMaxPending(t *testing.T) {
	s := startEcho(t, Config{Trusted: loopback, MaxPending: 2})
	for range 2 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); s.l.pendingCount() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connections not pending")
		}
	}
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !closedWithoutAnswer(err) {
		t.Fatalf("third connection: %v, want closed", err)
	}
	s.logs.waitFor(t, "too many PROXY protocol headers awaited; closed", "max_pending=2")
	if st := s.l.Stats(); st.RefusedPending != 1 {
		t.Errorf("stats %+v", st)
	}
}

func (l *Listener) pendingCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// TestClose checks that Close ends the awaited headers, that Accept then
// fails with net.ErrClosed, and (through goleak) that no goroutine stays.
func TestClose(t *testing.T) {
	l, addr := listen(t, Config{Trusted: loopback})
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); l.pendingCount() < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connection not pending")
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !closedWithoutAnswer(err) {
		t.Fatalf("pending connection after Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestSplice checks that an accepted Conn reaches its *net.TCPConn with
// nothing read past the header, and that io.Copy from it hands that
// *net.TCPConn to the destination's ReadFrom (which splices between TCP
// connections on Linux).
func TestSplice(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		cfg := Config{}
		if trusted {
			cfg.Trusted = loopback
		}
		l, addr := listen(t, cfg)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		payload := strings.Repeat("spliced bytes ", 1000)
		send := payload
		if trusted {
			send = "PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n" + payload
		}
		go func() {
			_, _ = c.Write([]byte(send))
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		pc := nc.(*Conn)
		if pc.TCPConn() == nil {
			t.Fatal("no *net.TCPConn")
		}
		if pc.Drained() != trusted {
			t.Errorf("trusted %v: Drained %v before the first read", trusted, pc.Drained())
		}
		rec := &readFromRecorder{}
		n, err := io.Copy(rec, pc)
		if err != nil || n != int64(len(payload)) || rec.buf.String() != payload {
			t.Errorf("trusted %v: copied %d, %v; payload intact %v", trusted, n, err, rec.buf.String() == payload)
		}
		if rec.src != "*net.TCPConn" {
			t.Errorf("trusted %v: ReadFrom got a %s, want the *net.TCPConn", trusted, rec.src)
		}
		if !pc.Drained() {
			t.Errorf("trusted %v: not drained after the copy", trusted)
		}
		c.Close()
		pc.Close()
	}
}

// readFromRecorder records the type of the reader its ReadFrom is given.
type readFromRecorder struct {
	src string
	buf strings.Builder
}

func (r *readFromRecorder) Write(p []byte) (int, error) { return r.buf.Write(p) }

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = fmt.Sprintf("%T", src)
	return io.Copy(&r.buf, src)
}

// TestSpliceTCP copies from an accepted Conn to a TCP connection with
// io.Copy and checks, by the bytes the process read with read(2) (rchar in
// /proc/self/io), that the payload never went through user space on the
// way: only the receiving end's reads count.
func TestSpliceTCP(t *testing.T) {
	if _, ok := readBytes(); !ok {
		t.Skip("no /proc/self/io")
	}
	l, addr := listen(t, Config{Trusted: loopback})
	dstLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dstLn.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 8 << 20
	go func() {
		_, _ = c.Write([]byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n"))
		_, _ = c.Write(make([]byte, size))
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	out, err := net.Dial("tcp", dstLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	sink, err := dstLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var wg sync.WaitGroup
	var got int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, _ = io.Copy(io.Discard, sink)
	}()
	before, _ := readBytes()
	n, err := io.Copy(out, nc)
	out.(*net.TCPConn).CloseWrite()
	wg.Wait()
	after, _ := readBytes()
	if err != nil || n != size || got != size {
		t.Fatalf("copied %d (%v), received %d, want %d", n, err, got, size)
	}
	if copied := after - before - got; copied > size/4 {
		t.Errorf("%d bytes read(2) besides the receiver's %d: not spliced", copied, got)
	}
}

// readBytes returns the bytes the process has read with read(2) and the
// like (rchar in /proc/self/io); splice(2) does not count.
func readBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func TestNewListenerErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	if _, err := NewListener(struct{ net.Listener }{inner}, Config{}); err == nil {
		t.Error("a listener without SetDeadline accepted")
	}
	for _, cfg := range []Config{
		{Trusted: []netip.Prefix{{}}},
		{HeaderTimeout: -1},
		{MaxPending: -1},
	} {
		if _, err := NewListener(inner, cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	l, err := NewListener(inner, Config{Trusted: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104"), netip.MustParsePrefix("10.1.2.3/8")}})
	if err != nil {
		t.Fatal(err)
	}
	if !l.trusts(tcpAddr("127.0.0.9:1")) || !l.trusts(tcpAddr("[::ffff:127.0.0.9]:1")) || !l.trusts(tcpAddr("10.9.9.9:1")) || l.trusts(tcpAddr("11.0.0.1:1")) {
		t.Errorf("trusted ranges %v", l.trusted)
	}
}

// flakyListener fails its first Accepts with the given errors.
type flakyListener struct {
	*net.TCPListener
	mu   sync.Mutex
	errs []error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	return f.TCPListener.Accept()
}

// TestAcceptErrors checks that the inner listener's Accept errors are
// passed on as they come, and that accepting goes on after them.
func TestAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	fatal := errors.New("listener broke")
	f := &flakyListener{TCPListener: inner.(*net.TCPListener), errs: []error{emfile}}
	l, err := NewListener(f, Config{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Accept(); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("first Accept: %v", err)
	}
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after a passing error: %v", err)
	}
	sc.Close()

	inner2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := NewListener(&flakyListener{TCPListener: inner2.(*net.TCPListener), errs: []error{emfile, fatal}}, Config{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := l2.Accept(); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("first Accept: %v", err)
	}
	if _, err := l2.Accept(); !errors.Is(err, fatal) {
		t.Fatalf("second Accept: %v", err)
	}
}

// TestReadExact reads headers from a connection that cannot be peeked at
// (net.Pipe), as on systems other than Linux.
func TestReadExact(t *testing.T) {
	v2 := v2Header(t, pp.PROXY, pp.TCPv6, tcpAddr("[2001:db8::7]:1234"), tcpAddr("[::1]:80"))
	for _, tc := range []struct {
		send string
		want string // source, or an error text
	}{
		{"PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\nGET", "203.0.113.7:1234"},
		{string(v2) + "GET", "[2001:db8::7]:1234"},
		{"GET / HTTP/1.1\r\n", ErrMissingHeader.Error()},
		{"POST / HTTP/1.1\r\n", ErrMissingHeader.Error()},
		{"PROXY TCP4 " + strings.Repeat("1", 100) + "\r\n", "107 bytes or less"},
	} {
		client, server := net.Pipe()
		go func() {
			_, _ = client.Write([]byte(tc.send))
		}()
		h, err := readHeader(server, time.Now().Add(2*time.Second))
		var got string
		if err != nil {
			got = err.Error()
		} else {
			got = h.SourceAddr.String()
			// Nothing past the header was read.
			rest := make([]byte, 3)
			if _, err := io.ReadFull(server, rest); err != nil || string(rest) != "GET" {
				t.Errorf("%q: after the header: %q, %v", tc.send, rest, err)
			}
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.send, got, tc.want)
		}
		client.Close()
		server.Close()
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		b    string
		want sigState
	}{
		{"", sigNone}, {"P", sigMore}, {"PROXY", sigMore}, {"PROXY ", sigFound}, {"PROXY TCP4", sigFound},
		{"POST", sigNone}, {"PROXYZ", sigNone}, {"\r", sigMore}, {"\r\n\r\n", sigMore}, {"\r\n\r\n\x00\r\nQUIT\n", sigFound},
		{"\r\nGET", sigNone}, {"\x05\x01\x00", sigNone}, {"\x16\x03\x01", sigNone},
	} {
		if got := sniff([]byte(tc.b)); got != tc.want {
			t.Errorf("sniff(%q) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

// TestTrustFunc: Config.Trust is asked per connection, so what it answers
// can change while the listener runs: the same peer must send a header
// while it is trusted, and is refused for sending one once it is not.
func TestTrustFunc(t *testing.T) {
	var trusted atomic.Bool
	s := startEcho(t, Config{Trust: func(ip netip.Addr) bool { return trusted.Load() && ip.IsLoopback() }})
	v1 := []byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\n")
	if got, err := s.request(t); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("untrusted, no header: %q %v", got, err)
	}
	if got, err := s.request(t, v1); !closedWithoutAnswer(err) {
		t.Fatalf("untrusted, with a header: answered %q %v", got, err)
	}
	trusted.Store(true)
	if got, err := s.request(t, v1); err != nil || got != "203.0.113.7:1234" {
		t.Fatalf("trusted, with a header: %q %v", got, err)
	}
	if got, err := s.request(t); !closedWithoutAnswer(err) {
		t.Fatalf("trusted, no header: answered %q %v", got, err)
	}
}
