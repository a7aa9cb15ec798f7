package socks5

import (
	"io"
	"net"
	"net/netip"
	"testing"
)

// BenchmarkHandshake measures the parser and its allocations on an
// in-memory connection: a whole handshake and a success reply.
func BenchmarkHandshake(b *testing.B) {
	for _, bc := range []struct {
		name string
		auth AuthFunc
		in   []byte
	}{
		{"IPv4", nil, cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80))},
		{"domain", nil, cat(greetNoAuth, reqName(CmdConnect, "www.example.com", 443))},
		{"userpass+domain", func(user, _ string) (string, bool) { return user, true },
			cat(greetBoth, userPass("alice", "secret"), reqName(CmdConnect, "www.example.com", 443))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			conn := &fakeConn{}
			conn.out.Grow(64)
			b.ReportAllocs()
			for b.Loop() {
				conn.in = bc.in
				conn.out.Reset()
				req, err := Handshake(conn, Options{Auth: bc.auth})
				if err != nil {
					b.Fatal(err)
				}
				if err := req.Reply(ReplySucceeded, netip.AddrPort{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshakeLoopback measures a whole SOCKS5 handshake over a
// loopback TCP connection, syscalls included: the client writes its
// greeting and request together (an optimistic client; x/net/proxy waits
// for the method selection), the server runs Handshake and Reply, and the
// client reads both answers. One goroutine plays both ends on one
// connection, a handshake after another, so that neither connection set-up
// nor scheduling is measured.
func BenchmarkHandshakeLoopback(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	msg := cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80))
	answers := make([]byte, 2+10)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
		req, err := Handshake(server, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := req.Reply(ReplySucceeded, netip.AddrPort{}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, answers); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time is steadier than wall time on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
