package socks5

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
)

// handshakeErrors are the errors Handshake may return on a connection
// whose reads only ever fail with io.EOF.
var handshakeErrors = []error{
	ErrNotSOCKS, ErrSOCKS4, ErrNoAcceptableMethod, ErrAuthFailed, ErrCommandNotSupported,
	ErrAddressTypeNotSupported, ErrMalformed, io.EOF, io.ErrUnexpectedEOF,
}

// FuzzHandshake runs Handshake on arbitrary client bytes, read in chunks of
// every size, with and without authentication. It must never panic, return
// an error outside handshakeErrors, write anything but a protocol answer,
// or return a request the rest of the proxy could not use.
func FuzzHandshake(f *testing.F) {
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	for _, seed := range [][]byte{
		cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80)),
		cat(greetNoAuth, reqIPv6(CmdConnect, v6, 443)),
		cat(greetNoAuth, reqName(CmdConnect, "example.com", 443), []byte("early")),
		cat(greetNoAuth, reqName(CmdConnect, "::1", 443)),
		cat(greetBoth, userPass("alice", "secret"), reqName(CmdConnect, "example.com", 443)),
		cat(greetUserPass, userPass("bob", ""), reqIPv4(CmdConnect, [4]byte{10, 0, 0, 1}, 8080)),
		cat(greetNoAuth, reqIPv4(CmdBind, [4]byte{127, 0, 0, 1}, 80)),
		cat(greetNoAuth, reqIPv4(CmdUDPAssociate, [4]byte{}, 0)),
		cat(greetNoAuth, []byte{5, 1, 0, 2, 0}),
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		{5, 0},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		f.Add(seed, false, uint8(0))
		f.Add(seed, true, uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, auth bool, chunk uint8) {
		conn := &fakeConn{in: in, chunk: int(chunk % 8)}
		opts := Options{}
		if auth {
			opts.Auth = testAuth
		}
		req, err := Handshake(conn, opts)
		out := conn.out.Bytes()
		if len(out) > 2+2+10 {
			t.Fatalf("wrote %d bytes: % x", len(out), out)
		}
		if len(out) > 0 && out[0] != Version && !bytes.Equal(out, socks4Rejected) {
			t.Fatalf("wrote % x", out)
		}
		if err != nil {
			if req != nil {
				t.Fatal("a request with an error")
			}
			for _, known := range handshakeErrors {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		if req.Port == 0 || req.Host() == "" {
			t.Fatalf("request for %q", req.Target())
		}
		host, _, serr := net.SplitHostPort(req.Target())
		if serr != nil || host != req.Host() {
			t.Fatalf("Target %q does not split back to %q: %v", req.Target(), req.Host(), serr)
		}
		if req.Domain && !req.Addr.IsValid() && !validName([]byte(req.Name)) {
			t.Fatalf("invalid name %q accepted", req.Name)
		}
		if auth && req.User != "id:alice" {
			t.Fatalf("user %q passed authentication", req.User)
		}
		if len(req.Early()) > len(in) {
			t.Fatalf("early data longer than the input")
		}
		conn.out.Reset()
		if err := req.Reply(ReplySucceeded, netip.AddrPort{}); err != nil || conn.out.Len() != 10 {
			t.Fatalf("reply: %v, % x", err, conn.out.Bytes())
		}
	})
}
