package socks5

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Pieces of client messages for the table.
var (
	greetNoAuth   = []byte{5, 1, 0}
	greetBoth     = []byte{5, 2, 0, 2}
	greetUserPass = []byte{5, 1, 2}
	chosenNoAuth  = []byte{5, 0}
	chosenUser    = []byte{5, 2}
	authOK        = []byte{1, 0}
	authBad       = []byte{1, 1}
	noMethods     = []byte{5, 0xff}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func userPass(user, pass string) []byte {
	b := []byte{1, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

func reqIPv4(cmd byte, a [4]byte, port uint16) []byte {
	b := []byte{5, cmd, 0, AddrIPv4}
	b = append(b, a[:]...)
	return append(b, byte(port>>8), byte(port))
}

func reqIPv6(cmd byte, a [16]byte, port uint16) []byte {
	b := []byte{5, cmd, 0, AddrIPv6}
	b = append(b, a[:]...)
	return append(b, byte(port>>8), byte(port))
}

func reqName(cmd byte, name string, port uint16) []byte {
	b := []byte{5, cmd, 0, AddrDomain, byte(len(name))}
	b = append(b, name...)
	return append(b, byte(port>>8), byte(port))
}

// failReply is a failure reply with the zero bound address.
func failReply(code ReplyCode) []byte { return []byte{5, byte(code), 0, 1, 0, 0, 0, 0, 0, 0} }

func testAuth(user, pass string) (string, bool) {
	return "id:" + user, user == "alice" && pass == "secret"
}

func TestHandshakeTable(t *testing.T) {
	loop4 := [4]byte{127, 0, 0, 1}
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	mapped := netip.MustParseAddr("::ffff:127.0.0.1").As16()
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) // 253
	for _, tc := range []struct {
		name   string
		auth   bool
		prefix int // bytes of in given as Options.Prefix
		in     []byte
		out    []byte // what the server writes
		err    error  // nil for success
		// on success
		host   string
		port   uint16
		domain bool
		addr   bool // Addr is valid
		user   string
		method byte
		early  string
	}{
		{name: "IPv4 no auth", in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 80)), out: chosenNoAuth, host: "127.0.0.1", port: 80, addr: true},
		{name: "IPv6", in: cat(greetNoAuth, reqIPv6(CmdConnect, v6, 443)), out: chosenNoAuth, host: "2001:db8::1", port: 443, addr: true},
		{name: "IPv4-mapped IPv6 kept as sent", in: cat(greetNoAuth, reqIPv6(CmdConnect, mapped, 443)), out: chosenNoAuth, host: "::ffff:127.0.0.1", port: 443, addr: true},
		{name: "domain", in: cat(greetNoAuth, reqName(CmdConnect, "example.com", 443)), out: chosenNoAuth, host: "example.com", port: 443, domain: true},
		{name: "domain with final dot", in: cat(greetNoAuth, reqName(CmdConnect, "example.com.", 443)), out: chosenNoAuth, host: "example.com.", port: 443, domain: true},
		{name: "domain with underscore", in: cat(greetNoAuth, reqName(CmdConnect, "_svc.example.com", 443)), out: chosenNoAuth, host: "_svc.example.com", port: 443, domain: true},
		{name: "domain of 253 bytes", in: cat(greetNoAuth, reqName(CmdConnect, long, 1)), out: chosenNoAuth, host: long, port: 1, domain: true},
		{name: "domain that is an IPv4 literal", in: cat(greetNoAuth, reqName(CmdConnect, "127.0.0.1", 8080)), out: chosenNoAuth, host: "127.0.0.1", port: 8080, domain: true, addr: true},
		{name: "domain that is an IPv6 literal", in: cat(greetNoAuth, reqName(CmdConnect, "::1", 8080)), out: chosenNoAuth, host: "::1", port: 8080, domain: true, addr: true},
		{name: "numeric name that is no address", in: cat(greetNoAuth, reqName(CmdConnect, "127.1", 80)), out: chosenNoAuth, host: "127.1", port: 80, domain: true},
		{name: "both methods offered, none required", in: cat(greetBoth, reqIPv4(CmdConnect, loop4, 80)), out: chosenNoAuth, host: "127.0.0.1", port: 80, addr: true},
		{name: "only user/pass offered, none required: read and ignored", in: cat(greetUserPass, userPass("bob", "x"), reqIPv4(CmdConnect, loop4, 80)),
			out: cat(chosenUser, authOK), host: "127.0.0.1", port: 80, addr: true, method: MethodUserPass},
		{name: "auth", auth: true, in: cat(greetBoth, userPass("alice", "secret"), reqName(CmdConnect, "example.com", 443)),
			out: cat(chosenUser, authOK), host: "example.com", port: 443, domain: true, user: "id:alice", method: MethodUserPass},
		{name: "auth with longest user and password", auth: true, in: cat(greetUserPass, userPass(strings.Repeat("u", 255), strings.Repeat("p", 255)), reqIPv4(CmdConnect, loop4, 80)),
			out: cat(chosenUser, authBad), err: ErrAuthFailed},
		{name: "early data", in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 80), []byte("GET / HTTP/1.1\r\n")), out: chosenNoAuth, host: "127.0.0.1", port: 80, addr: true, early: "GET / HTTP/1.1\r\n"},
		{name: "prefix", prefix: 1, in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 80)), out: chosenNoAuth, host: "127.0.0.1", port: 80, addr: true},
		{name: "prefix holding everything and early data", prefix: -1, in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 80), []byte("hi")), out: chosenNoAuth, host: "127.0.0.1", port: 80, addr: true, early: "hi"},

		{name: "empty", in: nil, err: io.EOF},
		{name: "SOCKS4", in: []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, out: socks4Rejected, err: ErrSOCKS4},
		{name: "HTTP", in: []byte("GET / HTTP/1.1\r\n\r\n"), err: ErrNotSOCKS},
		{name: "TLS", in: []byte{0x16, 3, 1, 0, 5}, err: ErrNotSOCKS},
		{name: "truncated greeting", in: []byte{5, 2, 0}, err: io.ErrUnexpectedEOF},
		{name: "greeting without methods", in: []byte{5, 0}, out: noMethods, err: ErrMalformed},
		{name: "no acceptable method", in: []byte{5, 1, 0x80}, out: noMethods, err: ErrNoAcceptableMethod},
		{name: "GSSAPI only", in: []byte{5, 1, 1}, out: noMethods, err: ErrNoAcceptableMethod},
		{name: "auth required, none offered", auth: true, in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 80)), out: noMethods, err: ErrNoAcceptableMethod},
		{name: "wrong password", auth: true, in: cat(greetBoth, userPass("alice", "wrong"), reqIPv4(CmdConnect, loop4, 80)), out: cat(chosenUser, authBad), err: ErrAuthFailed},
		{name: "empty credentials", auth: true, in: cat(greetBoth, userPass("", ""), reqIPv4(CmdConnect, loop4, 80)), out: cat(chosenUser, authBad), err: ErrAuthFailed},
		{name: "auth subnegotiation version", auth: true, in: cat(greetBoth, []byte{5, 5}, []byte("alice"), []byte{6}, []byte("secret")), out: cat(chosenUser, authBad), err: ErrMalformed},
		{name: "truncated password", auth: true, in: cat(greetBoth, []byte{1, 5}, []byte("alice"), []byte{6}, []byte("sec")), out: chosenUser, err: io.ErrUnexpectedEOF},
		{name: "truncated request", in: cat(greetNoAuth, []byte{5, 1, 0, 1, 127, 0}), out: chosenNoAuth, err: io.ErrUnexpectedEOF},
		{name: "truncated name", in: cat(greetNoAuth, []byte{5, 1, 0, 3, 20}, []byte("example")), out: chosenNoAuth, err: io.ErrUnexpectedEOF},
		{name: "BIND", in: cat(greetNoAuth, reqIPv4(CmdBind, loop4, 80)), out: cat(chosenNoAuth, failReply(ReplyCommandNotSupported)), err: ErrCommandNotSupported},
		{name: "UDP ASSOCIATE", in: cat(greetNoAuth, reqIPv4(CmdUDPAssociate, [4]byte{}, 0)), out: cat(chosenNoAuth, failReply(ReplyCommandNotSupported)), err: ErrCommandNotSupported},
		{name: "UDP ASSOCIATE with a name", in: cat(greetNoAuth, reqName(CmdUDPAssociate, "x y", 53)), out: cat(chosenNoAuth, failReply(ReplyCommandNotSupported)), err: ErrCommandNotSupported},
		{name: "unknown command", in: cat(greetNoAuth, reqIPv4(9, loop4, 80)), out: cat(chosenNoAuth, failReply(ReplyCommandNotSupported)), err: ErrCommandNotSupported},
		{name: "unknown address type", in: cat(greetNoAuth, []byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 80}), out: cat(chosenNoAuth, failReply(ReplyAddressTypeNotSupported)), err: ErrAddressTypeNotSupported},
		{name: "reserved byte set", in: cat(greetNoAuth, []byte{5, 1, 1, 1, 127, 0, 0, 1, 0, 80}), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "request version", in: cat(greetNoAuth, []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "port 0", in: cat(greetNoAuth, reqIPv4(CmdConnect, loop4, 0)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "empty name", in: cat(greetNoAuth, reqName(CmdConnect, "", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "name with a space", in: cat(greetNoAuth, reqName(CmdConnect, "exa mple.com", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "name with a NUL", in: cat(greetNoAuth, reqName(CmdConnect, "a\x00b", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "name with a newline", in: cat(greetNoAuth, reqName(CmdConnect, "a\nlevel=ERROR", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "name with a port", in: cat(greetNoAuth, reqName(CmdConnect, "example.com:80", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "IPv6 literal with a zone", in: cat(greetNoAuth, reqName(CmdConnect, "fe80::1%eth0", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "bracketed IPv6 literal", in: cat(greetNoAuth, reqName(CmdConnect, "[::1]", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "empty label", in: cat(greetNoAuth, reqName(CmdConnect, "a..b", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "only a dot", in: cat(greetNoAuth, reqName(CmdConnect, ".", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "label of 64 bytes", in: cat(greetNoAuth, reqName(CmdConnect, strings.Repeat("a", 64)+".com", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "name of 254 bytes", in: cat(greetNoAuth, reqName(CmdConnect, long+"e", 80)), out: cat(chosenNoAuth, failReply(ReplyGeneralFailure)), err: ErrMalformed},
	} {
		for _, chunk := range []int{0, 1, 3} {
			conn := &fakeConn{in: tc.in, chunk: chunk}
			opts := Options{}
			if tc.auth {
				opts.Auth = testAuth
			}
			switch {
			case tc.prefix < 0:
				opts.Prefix, conn.in = tc.in, nil
			case tc.prefix > 0:
				opts.Prefix, conn.in = tc.in[:tc.prefix], tc.in[tc.prefix:]
			}
			req, err := Handshake(conn, opts)
			if got := conn.out.Bytes(); !bytes.Equal(got, tc.out) {
				t.Errorf("%s (reads of %d): wrote % x, want % x", tc.name, chunk, got, tc.out)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("%s (reads of %d): error %v, want %v", tc.name, chunk, err, tc.err)
				}
				if req != nil {
					t.Errorf("%s: a request with an error", tc.name)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s (reads of %d): %v", tc.name, chunk, err)
				continue
			}
			// What was read ahead is in Early, the rest still in the connection.
			if req.Host() != tc.host || req.Port != tc.port || req.Domain != tc.domain || req.Addr.IsValid() != tc.addr ||
				req.User != tc.user || req.Method != tc.method || string(req.Early())+string(conn.in) != tc.early {
				t.Errorf("%s (reads of %d): got host %q port %d domain %v addr %v user %q method %d early %q", tc.name, chunk,
					req.Host(), req.Port, req.Domain, req.Addr, req.User, req.Method, req.Early())
			}
			if want := net.JoinHostPort(tc.host, itoa(tc.port)); req.Target() != want {
				t.Errorf("%s: Target %q, want %q", tc.name, req.Target(), want)
			}
			if conn.closed || conn.closedOut {
				t.Errorf("%s: connection closed after a successful handshake", tc.name)
			}
		}
	}
}

func itoa(p uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			return string(b[i:])
		}
	}
}

// TestHandshakeErrorMessages checks that errors say what was wrong and
// what was answered, and never carry the password.
func TestHandshakeErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		auth bool
		want []string
	}{
		{cat(greetNoAuth, reqIPv4(CmdBind, [4]byte{1, 2, 3, 4}, 80)), false, []string{"BIND", "0x07"}},
		{cat(greetNoAuth, reqIPv4(CmdUDPAssociate, [4]byte{}, 0)), false, []string{"UDP ASSOCIATE", "0x07"}},
		{cat(greetBoth, userPass("alice", "hunter2"), reqIPv4(CmdConnect, [4]byte{1, 2, 3, 4}, 80)), true, []string{`user "alice"`, "rejected"}},
		{[]byte{0x47}, false, []string{"0x47", "nothing answered"}},
		{cat(greetNoAuth, reqName(CmdConnect, "a b", 80)), false, []string{`"a b"`, "0x01"}},
		{cat(greetNoAuth, []byte{5, 1, 0, 7}), false, []string{"address type 0x07", "0x08"}},
	} {
		opts := Options{}
		if tc.auth {
			opts.Auth = testAuth
		}
		_, err := Handshake(&fakeConn{in: tc.in}, opts)
		if err == nil {
			t.Fatalf("% x: no error", tc.in)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q carries the password", err)
		}
	}
}

// TestDefaultDeadline checks that a handshake without a deadline gets
// DefaultHandshakeTimeout, and that a successful one leaves none.
func TestDefaultDeadline(t *testing.T) {
	conn := &fakeConn{in: cat(greetNoAuth, []byte{5})}
	start := time.Now()
	if _, err := Handshake(conn, Options{}); err == nil {
		t.Fatal("truncated request accepted")
	}
	if d := conn.deadline.Sub(start); d < DefaultHandshakeTimeout || d > DefaultHandshakeTimeout+time.Second {
		t.Errorf("deadline %v after the start, want %v", d, DefaultHandshakeTimeout)
	}
	conn = &fakeConn{in: cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80))}
	if _, err := Handshake(conn, Options{Deadline: start.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if !conn.deadline.IsZero() {
		t.Errorf("deadline %v left after the handshake", conn.deadline)
	}
}

// TestHandshakeRefusalLingers checks that a refused client's connection is
// half-closed (so the refusal is read before the close) and left for the
// caller to close, and that a success leaves it open.
func TestHandshakeRefusalLingers(t *testing.T) {
	conn := &fakeConn{in: cat(greetNoAuth, reqIPv4(CmdBind, [4]byte{1, 2, 3, 4}, 80))}
	if _, err := Handshake(conn, Options{}); err == nil {
		t.Fatal("BIND accepted")
	}
	if !conn.closedOut || conn.closed {
		t.Errorf("after a refusal: CloseWrite %v, Close %v; want true, false", conn.closedOut, conn.closed)
	}
}

func TestReply(t *testing.T) {
	for _, tc := range []struct {
		code  ReplyCode
		bound netip.AddrPort
		want  []byte
	}{
		{ReplySucceeded, netip.MustParseAddrPort("127.0.0.1:50123"), []byte{5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0xcb}},
		{ReplySucceeded, netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), []byte{5, 0, 0, 1, 10, 0, 0, 1, 0, 1}},
		{ReplySucceeded, netip.MustParseAddrPort("[2001:db8::2]:443"), cat([]byte{5, 0, 0, 4}, netip.MustParseAddr("2001:db8::2").AsSlice(), []byte{1, 0xbb})},
		{ReplySucceeded, netip.AddrPort{}, []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		{ReplyNotAllowed, netip.AddrPort{}, failReply(ReplyNotAllowed)},
		{ReplyTTLExpired, netip.MustParseAddrPort("127.0.0.1:1"), []byte{5, 6, 0, 1, 127, 0, 0, 1, 0, 1}},
	} {
		conn := &fakeConn{in: cat(greetNoAuth, reqIPv4(CmdConnect, [4]byte{127, 0, 0, 1}, 80))}
		req, err := Handshake(conn, Options{})
		if err != nil {
			t.Fatal(err)
		}
		conn.out.Reset()
		if err := req.Reply(tc.code, tc.bound); err != nil {
			t.Fatal(err)
		}
		if got := conn.out.Bytes(); !bytes.Equal(got, tc.want) {
			t.Errorf("Reply(%v, %v) wrote % x, want % x", tc.code, tc.bound, got, tc.want)
		}
		if failed := tc.code != ReplySucceeded; conn.closed != failed {
			t.Errorf("Reply(%v): connection closed %v, want %v", tc.code, conn.closed, failed)
		}
		if err := req.Reply(ReplySucceeded, tc.bound); !errors.Is(err, ErrReplied) {
			t.Errorf("second Reply: %v, want ErrReplied", err)
		}
	}
}

func TestSniff(t *testing.T) {
	for b := 0; b < 256; b++ {
		want := NotSOCKS
		switch b {
		case 4:
			want = SOCKS4
		case 5:
			want = SOCKS5
		}
		if got := Sniff(byte(b)); got != want {
			t.Errorf("Sniff(0x%02x) = %d, want %d", b, got, want)
		}
	}
}

func TestReplyCodeString(t *testing.T) {
	for code, want := range map[ReplyCode]string{
		ReplySucceeded: "succeeded", ReplyNotAllowed: "connection not allowed by ruleset",
		ReplyTTLExpired: "TTL expired", ReplyAddressTypeNotSupported: "address type not supported", 0x42: "reply 0x42",
	} {
		if got := code.String(); got != want {
			t.Errorf("%d: %q, want %q", code, got, want)
		}
	}
}
