package proxyproto

import (
	"net"
	"net/netip"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

// BenchmarkAccept measures a connection's way from the client's dial to the
// server's first read of the client's first byte, on a plain listener and
// behind the PROXY-protocol listener: from an untrusted peer (first bytes
// checked on the first Read) and from a trusted one with a v1 and a v2
// header (read in its own goroutine before Accept returns).
func BenchmarkAccept(b *testing.B) {
	v1 := []byte("PROXY TCP4 203.0.113.7 127.0.0.1 1234 80\r\nx")
	h := &pp.Header{Version: 2, Command: pp.PROXY, TransportProtocol: pp.TCPv4,
		SourceAddr: tcpAddr("203.0.113.7:1234"), DestinationAddr: tcpAddr("127.0.0.1:80")}
	v2, err := h.Format()
	if err != nil {
		b.Fatal(err)
	}
	v2 = append(v2, 'x')
	for _, bc := range []struct {
		name    string
		wrap    bool
		trusted bool
		send    []byte
	}{
		{"plain", false, false, []byte("x")},
		{"untrusted", true, false, []byte("x")},
		{"trusted-v1", true, true, v1},
		{"trusted-v2", true, true, v2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener = inner
			if bc.wrap {
				cfg := Config{Logger: discardLogger()}
				if bc.trusted {
					cfg.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				}
				if ln, err = NewListener(inner, cfg); err != nil {
					b.Fatal(err)
				}
			}
			defer ln.Close()
			addr := inner.Addr().String()
			buf := make([]byte, 16)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				// No TIME_WAIT left behind to slow the next dials.
				_ = c.(*net.TCPConn).SetLinger(0)
				if _, err := c.Write(bc.send); err != nil {
					b.Fatal(err)
				}
				sc, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				if n, err := sc.Read(buf); err != nil || n != 1 {
					b.Fatalf("read %d, %v", n, err)
				}
				c.Close()
				sc.Close()
			}
			// CPU time is steadier than wall time on a shared machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
