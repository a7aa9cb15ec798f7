package socks5

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// AuthFunc checks RFC 1929 credentials. It returns the identity to use for
// the connection (usually user itself) and true, or false to refuse them.
// It must be safe for concurrent use.
type AuthFunc func(user, pass string) (identity string, ok bool)

// DefaultHandshakeTimeout bounds a handshake whose Options.Deadline is
// zero, as the proxy's client header timeout bounds an HTTP request head.
const DefaultHandshakeTimeout = 10 * time.Second

// Options configure one Handshake.
type Options struct {
	// Deadline bounds the whole handshake, reads and writes: a client that
	// stalls is cut off with an error wrapping os.ErrDeadlineExceeded. The
	// zero value means DefaultHandshakeTimeout from the call.
	Deadline time.Time
	// Auth, when set, makes username/password (RFC 1929) the only method
	// offered, checked by Auth. When nil, no authentication is asked for:
	// the server picks "no authentication" when the client offers it, else
	// username/password, whose credentials it then reads and ignores (as
	// an HTTP proxy without authentication ignores Proxy-Authorization);
	// Request.User stays empty.
	Auth AuthFunc
	// Prefix holds bytes already read from conn, such as those a listener
	// read to tell SOCKS from HTTP; they are read before conn.
	Prefix []byte
}

// Request is a client's CONNECT request, read by Handshake and not yet
// answered. The caller vets and dials the target, then calls Reply exactly
// once.
type Request struct {
	// Name is the target name as the client sent it (ATYP DOMAINNAME);
	// empty when the client sent an address.
	Name string
	// Addr is the target address: the one the client sent (ATYP IPv4 or
	// IPv6), or the IP literal it sent as a name. It is the zero Addr for
	// names, which the caller resolves.
	Addr netip.Addr
	// Port is the target port, never 0.
	Port uint16
	// Domain reports that the client sent the target as a name (ATYP
	// DOMAINNAME), as `curl --socks5-hostname` does, not as an address.
	Domain bool
	// User is the identity Options.Auth returned; empty without Auth.
	User string
	// Method is the authentication method used: MethodNoAuth or
	// MethodUserPass.
	Method byte

	conn    net.Conn
	early   []byte
	replied bool
	out     [22]byte // the longest reply: IPv6 bound address
}

// Host returns the target host: the address in its text form (without
// brackets) when there is one, else the name.
func (r *Request) Host() string {
	if r.Addr.IsValid() {
		return r.Addr.String()
	}
	return r.Name
}

// Target returns "host:port", as an HTTP CONNECT names its target (IPv6
// addresses in brackets), for the pipeline that vets and dials it.
func (r *Request) Target() string {
	return net.JoinHostPort(r.Host(), strconv.Itoa(int(r.Port)))
}

// Early returns the bytes the client sent after its request without waiting
// for the reply (optimistic data), which Handshake read ahead. After a
// success reply they go to the target first, before the rest of the
// connection. It is usually empty.
func (r *Request) Early() []byte { return r.early }

// Conn returns the client connection the request came on.
func (r *Request) Conn() net.Conn { return r.conn }

// replyWriteTimeout bounds the write of a reply. A reply is at most 22
// bytes into a connection whose client is waiting for it, so the bound only
// matters for a client that stopped reading.
const replyWriteTimeout = 5 * time.Second

// Reply answers the request with code and, for a success, the address the
// proxy's upstream connection is bound to (BND.ADDR, BND.PORT; clients
// rarely use it, and an invalid bound is sent as 0.0.0.0:0). After
// ReplySucceeded the connection carries the tunnel's bytes and has no
// deadline. Any other code ends the connection, as RFC 1928 §6 requires:
// Reply half-closes it, reads what the client still sends for a moment so
// the close does not reset the reply away, and closes it. A second call
// returns ErrReplied.
func (r *Request) Reply(code ReplyCode, bound netip.AddrPort) error {
	if r.replied {
		return ErrReplied
	}
	r.replied = true
	_ = r.conn.SetWriteDeadline(time.Now().Add(replyWriteTimeout))
	_, err := r.conn.Write(appendReply(r.out[:0], code, bound))
	if code == ReplySucceeded {
		_ = r.conn.SetWriteDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("socks5: writing the reply: %w", err)
		}
		return nil
	}
	if err == nil {
		linger(r.conn)
	}
	r.conn.Close()
	if err != nil {
		return fmt.Errorf("socks5: writing the reply: %w", err)
	}
	return nil
}

// appendReply appends a reply (RFC 1928 §6) to b.
func appendReply(b []byte, code ReplyCode, bound netip.AddrPort) []byte {
	b = append(b, Version, byte(code), 0)
	a := bound.Addr().Unmap()
	switch {
	case a.Is4():
		a4 := a.As4()
		b = append(b, AddrIPv4)
		b = append(b, a4[:]...)
	case a.Is6():
		a16 := a.As16()
		b = append(b, AddrIPv6)
		b = append(b, a16[:]...)
	default:
		b = append(b, AddrIPv4, 0, 0, 0, 0)
	}
	port := bound.Port()
	return append(b, byte(port>>8), byte(port))
}

// Handshake reads a client's greeting, authenticates it and reads its
// request, answering each step as RFC 1928 and RFC 1929 require. It
// returns a Request the caller answers with Request.Reply; the connection
// then has no deadline.
//
// On an error nothing more is to be written: Handshake has already sent
// the refusal the protocol defines for it (see the Err… values), when
// there is one, half-closed the connection and read what the client sent
// after it for a moment. The caller closes conn. Handshake never reads past
// the deadline and never holds more than one small buffer, whatever the
// client sends.
func Handshake(conn net.Conn, opts Options) (*Request, error) {
	deadline := opts.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(DefaultHandshakeTimeout)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("socks5: setting the handshake deadline: %w", err)
	}
	buf := bufPool.Get().(*[bufSize]byte)
	rd := reader{conn: conn, prefix: opts.Prefix, buf: buf}
	req := &Request{conn: conn}
	err := req.handshake(&rd, opts)
	if err == nil {
		if n := rd.w - rd.r + len(rd.prefix); n > 0 {
			req.early = make([]byte, 0, n)
			req.early = append(req.early, rd.buf[rd.r:rd.w]...)
			req.early = append(req.early, rd.prefix...)
		}
	}
	bufPool.Put(buf)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return req, nil
}

// The answers Handshake writes before a request is read.
var (
	socks4Rejected = []byte{0x00, 0x5b, 0, 0, 0, 0, 0, 0} // SOCKS4: request rejected or failed
	noAcceptable   = []byte{Version, MethodNoAcceptable}
	chooseNoAuth   = []byte{Version, MethodNoAuth}
	chooseUserPass = []byte{Version, MethodUserPass}
	authSucceeded  = []byte{userPassVersion, 0x00}
	authFailed     = []byte{userPassVersion, 0x01}
)

// userPassVersion is the version of the RFC 1929 subnegotiation.
const userPassVersion = 0x01

func (req *Request) handshake(rd *reader, opts Options) error {
	// Greeting: VER NMETHODS METHODS (RFC 1928 §3).
	if err := rd.need(1); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("socks5: client closed the connection before its greeting: %w", io.EOF)
		}
		return ioError("the greeting", err)
	}
	switch v := rd.buf[rd.r]; v {
	case Version:
	case 0x04:
		req.refuse(socks4Rejected, rd)
		return fmt.Errorf("%w (answered SOCKS4 request rejected)", ErrSOCKS4)
	default:
		return fmt.Errorf("%w: first byte 0x%02x is no SOCKS version (nothing answered)", ErrNotSOCKS, v)
	}
	if err := rd.need(2); err != nil {
		return ioError("the greeting", err)
	}
	n := int(rd.buf[rd.r+1])
	if n == 0 {
		req.refuse(noAcceptable, rd)
		return fmt.Errorf("%w: the greeting lists no methods (answered 0xff)", ErrMalformed)
	}
	if err := rd.need(2 + n); err != nil {
		return ioError("the greeting", err)
	}
	methods := rd.take(2 + n)[2:]
	var noAuth, userPass bool
	for _, m := range methods {
		switch m {
		case MethodNoAuth:
			noAuth = true
		case MethodUserPass:
			userPass = true
		}
	}
	switch {
	case opts.Auth != nil && userPass, opts.Auth == nil && !noAuth && userPass:
		req.Method = MethodUserPass
	case opts.Auth == nil && noAuth:
		req.Method = MethodNoAuth
	default:
		req.refuse(noAcceptable, rd)
		if opts.Auth != nil {
			return fmt.Errorf("%w: username/password is required, the client offers methods %x (answered 0xff)", ErrNoAcceptableMethod, methods)
		}
		return fmt.Errorf("%w: the client offers methods %x, none of 00 and 02 (answered 0xff)", ErrNoAcceptableMethod, methods)
	}
	if req.Method == MethodNoAuth {
		if err := req.write(chooseNoAuth); err != nil {
			return err
		}
	} else {
		if err := req.write(chooseUserPass); err != nil {
			return err
		}
		if err := req.authenticate(rd, opts.Auth); err != nil {
			return err
		}
	}
	return req.readRequest(rd)
}

// authenticate runs the RFC 1929 subnegotiation: VER ULEN UNAME PLEN PASSWD.
func (req *Request) authenticate(rd *reader, auth AuthFunc) error {
	if err := rd.need(2); err != nil {
		return ioError("the username/password request", err)
	}
	if v := rd.buf[rd.r]; v != userPassVersion {
		req.refuse(authFailed, rd)
		return fmt.Errorf("%w: username/password request of version 0x%02x, want 0x01 (answered failure)", ErrMalformed, v)
	}
	ulen := int(rd.buf[rd.r+1])
	if err := rd.need(2 + ulen + 1); err != nil {
		return ioError("the username/password request", err)
	}
	plen := int(rd.buf[rd.r+2+ulen])
	if err := rd.need(2 + ulen + 1 + plen); err != nil {
		return ioError("the username/password request", err)
	}
	b := rd.take(2 + ulen + 1 + plen)
	if auth != nil {
		user, pass := string(b[2:2+ulen]), string(b[3+ulen:])
		id, ok := auth(user, pass)
		if !ok {
			req.refuse(authFailed, rd)
			return fmt.Errorf("%w: user %q (answered failure)", ErrAuthFailed, user)
		}
		req.User = id
	}
	return req.write(authSucceeded)
}

// Offsets in a request: VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4).
const (
	reqHead    = 4                // VER CMD RSV ATYP
	reqIPv4Len = reqHead + 4 + 2  // with the address and port
	reqIPv6Len = reqHead + 16 + 2 // likewise
	maxName    = 253              // the longest DNS name, without a final dot
	maxLabel   = 63               // the longest DNS label
)

// readRequest reads the request and fills req, or refuses it.
func (req *Request) readRequest(rd *reader) error {
	if err := rd.need(reqHead); err != nil {
		return ioError("the request", err)
	}
	h := rd.buf[rd.r : rd.r+reqHead]
	ver, cmd, rsv, atyp := h[0], h[1], h[2], h[3]
	if ver != Version {
		req.refuseRequest(ReplyGeneralFailure, rd)
		return fmt.Errorf("%w: request of version 0x%02x, want 0x05 (answered 0x01)", ErrMalformed, ver)
	}
	if rsv != 0 {
		req.refuseRequest(ReplyGeneralFailure, rd)
		return fmt.Errorf("%w: request's reserved byte is 0x%02x, want 0x00 (answered 0x01)", ErrMalformed, rsv)
	}
	var b []byte
	switch atyp {
	case AddrIPv4:
		if err := rd.need(reqIPv4Len); err != nil {
			return ioError("the request", err)
		}
		b = rd.take(reqIPv4Len)
		req.Addr = netip.AddrFrom4([4]byte(b[reqHead : reqHead+4]))
	case AddrIPv6:
		if err := rd.need(reqIPv6Len); err != nil {
			return ioError("the request", err)
		}
		b = rd.take(reqIPv6Len)
		req.Addr = netip.AddrFrom16([16]byte(b[reqHead : reqHead+16]))
	case AddrDomain:
		if err := rd.need(reqHead + 1); err != nil {
			return ioError("the request", err)
		}
		n := int(rd.buf[rd.r+reqHead])
		if err := rd.need(reqHead + 1 + n + 2); err != nil {
			return ioError("the request", err)
		}
		b = rd.take(reqHead + 1 + n + 2)
		req.Domain = true
		if cmd == CmdConnect {
			name := b[reqHead+1 : reqHead+1+n]
			if err := req.setName(name); err != nil {
				req.refuseRequest(ReplyGeneralFailure, rd)
				return err
			}
		}
	default:
		req.refuseRequest(ReplyAddressTypeNotSupported, rd)
		return fmt.Errorf("%w: address type 0x%02x (answered 0x08)", ErrAddressTypeNotSupported, atyp)
	}
	if cmd != CmdConnect {
		req.refuseRequest(ReplyCommandNotSupported, rd)
		return fmt.Errorf("%w: %s (answered 0x07)", ErrCommandNotSupported, commandName(cmd))
	}
	req.Port = uint16(b[len(b)-2])<<8 | uint16(b[len(b)-1])
	if req.Port == 0 {
		req.refuseRequest(ReplyGeneralFailure, rd)
		return fmt.Errorf("%w: target port 0 (answered 0x01)", ErrMalformed)
	}
	return nil
}

// setName checks a DOMAINNAME target and sets Name, and Addr when the name
// is an IP literal. A name is letters, digits, hyphens, underscores and
// dots, in labels of at most 63 bytes, at most 253 bytes without a final
// dot; anything else (spaces, control bytes, '%', '@', '/', ':' outside an
// IPv6 literal) cannot be looked up and must not reach the rules or the log.
func (req *Request) setName(name []byte) error {
	if len(name) == 0 {
		return fmt.Errorf("%w: empty target name (answered 0x01)", ErrMalformed)
	}
	if validName(name) {
		req.Name = string(name)
		if looksNumeric(name) {
			if a, err := netip.ParseAddr(req.Name); err == nil {
				req.Addr = a
			}
		}
		return nil
	}
	if a, err := netip.ParseAddr(string(name)); err == nil && a.Zone() == "" {
		req.Name = string(name)
		req.Addr = a
		return nil
	}
	return fmt.Errorf("%w: target name %q is not a host name (answered 0x01)", ErrMalformed, name)
}

// validName reports whether b is a syntactically valid host name (RFC 1123,
// with underscores, which some service names use, and an optional final dot).
func validName(b []byte) bool {
	if b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > maxName {
		return false
	}
	label := 0
	for _, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > maxLabel {
			return false
		}
	}
	return true
}

// looksNumeric reports whether b is digits and dots only, the shape of an
// IPv4 literal.
func looksNumeric(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

func commandName(cmd byte) string {
	switch cmd {
	case CmdBind:
		return "BIND"
	case CmdUDPAssociate:
		return "UDP ASSOCIATE (UDP is not relayed)"
	}
	return fmt.Sprintf("unknown command 0x%02x", cmd)
}

// write sends one handshake answer.
func (req *Request) write(b []byte) error {
	if _, err := req.conn.Write(b); err != nil {
		return fmt.Errorf("socks5: writing the handshake answer: %w", err)
	}
	return nil
}

// refuse sends a refusal during the handshake, then lingers (see linger).
func (req *Request) refuse(b []byte, rd *reader) {
	if _, err := req.conn.Write(b); err == nil {
		rd.discard()
		linger(req.conn)
	}
}

// refuseRequest answers a request with a failure reply and lingers.
func (req *Request) refuseRequest(code ReplyCode, rd *reader) {
	req.replied = true
	req.refuse(appendReply(req.out[:0], code, netip.AddrPort{}), rd)
}

// lingerTime bounds how long a refused connection is read after its answer.
const lingerTime = 500 * time.Millisecond

// linger half-closes conn after a refusal and reads what the client still
// sends until it closes, for at most lingerTime, so that closing conn does
// not reset the connection over bytes unread and the client reads the
// refusal. Connections without CloseWrite are left as they are.
func linger(conn net.Conn) {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [256]byte
	for range 64 {
		if _, err := conn.Read(buf[:]); err != nil {
			return
		}
	}
}

func ioError(what string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("socks5: reading %s: %w", what, err)
}

// bufSize is the handshake buffer's size. It holds the longest message, an
// RFC 1929 request of 513 bytes, with room for what a client sends ahead.
const bufSize = 1024

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// reader reads the handshake's messages: first from prefix, then from conn,
// into buf, as much as each read returns; buf[r:w] is read and not yet
// taken.
type reader struct {
	conn   net.Conn
	prefix []byte
	buf    *[bufSize]byte
	r, w   int
}

// maxEmptyReads bounds the reads in a row that return nothing and no error,
// which io.Reader discourages but allows.
const maxEmptyReads = 100

// need makes n bytes (n <= bufSize) available at buf[r:].
func (rd *reader) need(n int) error {
	if rd.w-rd.r >= n {
		return nil
	}
	if rd.r+n > bufSize {
		rd.w = copy(rd.buf[:], rd.buf[rd.r:rd.w])
		rd.r = 0
	}
	empty := 0
	for rd.w-rd.r < n {
		var m int
		var err error
		if len(rd.prefix) > 0 {
			m = copy(rd.buf[rd.w:], rd.prefix)
			rd.prefix = rd.prefix[m:]
		} else {
			m, err = rd.conn.Read(rd.buf[rd.w:])
		}
		rd.w += m
		if rd.w-rd.r >= n {
			return nil
		}
		if err != nil {
			return err
		}
		if m == 0 {
			if empty++; empty == maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// take consumes n bytes made available by need.
func (rd *reader) take(n int) []byte {
	b := rd.buf[rd.r : rd.r+n]
	rd.r += n
	return b
}

// discard drops what is buffered, before a refusal's linger.
func (rd *reader) discard() {
	rd.r, rd.w, rd.prefix = 0, 0, nil
}
