package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// handshakeTimeout bounds connecting and handshaking with an upstream when
// the caller's context has no deadline.
const handshakeTimeout = 30 * time.Second

// maxResponseHeader bounds an upstream's answer to CONNECT.
const maxResponseHeader = 64 << 10

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// errNoDirectDial is returned by DialTunnel on DIRECT without WithDirectDial.
var errNoDirectDial = errors.New("upstream: DIRECT has no dial function (WithDirectDial)")

// DialTunnel opens a TCP tunnel to target ("host:port", IPv6 bracketed)
// through u, bounded by ctx (30 s if ctx has no deadline):
//
//   - HTTP and HTTPS: connects to the upstream (TLS for HTTPS), sends
//     "CONNECT target" with Proxy-Authorization from u's credentials, and
//     returns the connection once a 2xx answer has arrived.
//   - SOCKS5: connects to the upstream and sends a SOCKS5 CONNECT with
//     u's username and password (x/net's client). The target is sent as
//     given, so a name is resolved by the upstream; socks5:// and
//     socks5h:// behave alike. To pin an address the proxy has vetted,
//     pass an IP target.
//   - DIRECT: calls the WithDirectDial function.
//
// Over HTTP and SOCKS5 the result is the connection the WithDial function
// returned, normally a *net.TCPConn, so splice(2) applies to it. If the
// upstream sent bytes after its 2xx answer, the result is a *Conn that
// yields them first and passes ReadFrom, WriteTo and CloseWrite to that
// connection.
//
// Failures are *Error values (see ErrUnreachable and the other kinds);
// DIRECT returns the direct dial's own errors. DialTunnel reports the
// outcome to u's health (see Observe); the caller need not.
func (u *Upstream) DialTunnel(ctx context.Context, target string) (net.Conn, error) {
	if u.kind == Direct {
		if u.directDial == nil {
			return nil, errNoDirectDial
		}
		return u.directDial(ctx, "tcp", target)
	}
	if _, _, err := splitHostPort(target); err != nil {
		return nil, u.newError(ErrRefused, target, "invalid tunnel target", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	conn, err := u.tunnel(ctx, target)
	u.Observe(err)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// errNotHTTP is DialProxy's error for an upstream that is not an HTTP
// proxy.
var errNotHTTP = errors.New("upstream: not an HTTP or HTTPS proxy")

// DialProxy connects to u itself, an HTTP or HTTPS proxy (TLS for HTTPS),
// for a caller that sends it requests in absolute-form, bounded by ctx (30 s
// if ctx has no deadline). A failure is observed in u's health; a
// connection ends a back-off but is not counted as a success, which is the
// caller's request's to observe. Failures are *Error values.
func (u *Upstream) DialProxy(ctx context.Context) (net.Conn, error) {
	if u.kind != HTTP && u.kind != HTTPS {
		return nil, u.newError(ErrProtocol, "", "connecting", errNotHTTP)
	}
	return u.dialSelf(ctx)
}

// dialSelf connects to u itself (TLS for HTTPS), bounded by ctx (30 s if
// ctx has no deadline), for DialProxy and for the connections
// ConfigureTransport's transport opens to u. A failure is observed in u's
// health; a connection ends a back-off but is not counted as a success.
func (u *Upstream) dialSelf(ctx context.Context) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	c, e := u.connect(ctx, "")
	if e != nil {
		u.Observe(e)
		return nil, e
	}
	u.connected()
	return c, nil
}

// tunnel returns either a connection or an *Error.
func (u *Upstream) tunnel(ctx context.Context, target string) (net.Conn, error) {
	conn, e := u.connect(ctx, target)
	if e != nil {
		return nil, e
	}
	// Until the handshake is done, ctx bounds every read and write.
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	var result net.Conn
	if u.kind == SOCKS5 {
		_, err := u.socks.DialWithConn(ctx, conn, "tcp", target)
		if err != nil {
			e = u.socksError(ctx, target, err)
		}
		result = conn
	} else {
		result, e = u.connectHTTP(ctx, conn, target)
	}
	if !stop() && e == nil {
		// ctx ended while the handshake finished: the deadline may have
		// been moved into the past after it succeeded.
		e = u.handshakeError(ctx, target, "handshake", context.Cause(ctx))
	}
	if e == nil {
		if err := conn.SetDeadline(time.Time{}); err != nil {
			e = u.handshakeError(ctx, target, "handshake", err)
		}
	}
	if e != nil {
		conn.Close()
		return nil, e
	}
	return result, nil
}

// connect connects to the upstream proxy, with TLS for HTTPS.
func (u *Upstream) connect(ctx context.Context, target string) (net.Conn, *Error) {
	conn, err := u.dial(ctx, "tcp", u.addr)
	if err != nil {
		return nil, u.dialError(ctx, target, err)
	}
	if u.kind != HTTPS {
		return conn, nil
	}
	tc := tls.Client(conn, u.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, u.handshakeError(ctx, target, "TLS handshake", err)
	}
	return tc, nil
}

// connectHTTP sends CONNECT on conn and reads the answer.
func (u *Upstream) connectHTTP(ctx context.Context, conn net.Conn, target string) (net.Conn, *Error) {
	req := make([]byte, 0, 64+2*len(target)+len(u.authz))
	req = append(req, "CONNECT "...)
	req = append(req, target...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, target...)
	if u.authz != "" {
		req = append(req, "\r\nProxy-Authorization: "...)
		req = append(req, u.authz...)
	}
	req = append(req, "\r\n\r\n"...)
	if _, err := conn.Write(req); err != nil {
		return nil, u.handshakeError(ctx, target, "sending CONNECT", err)
	}
	lr := &io.LimitedReader{R: conn, N: maxResponseHeader}
	br := bufio.NewReaderSize(lr, 4096)
	connectReq := &http.Request{Method: http.MethodConnect}
	for {
		resp, err := http.ReadResponse(br, connectReq)
		if err != nil {
			if lr.N <= 0 {
				return nil, u.newError(ErrProtocol, target, "answer to CONNECT longer than 64 KiB", nil)
			}
			return nil, u.handshakeError(ctx, target, "reading the answer to CONNECT", err)
		}
		switch {
		case resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols:
			continue // an interim answer; the final one follows
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			return nil, u.statusError(target, resp.StatusCode, resp.Status)
		}
		if n := br.Buffered(); n > 0 {
			early, _ := br.Peek(n)
			return &Conn{Conn: conn, early: append([]byte(nil), early...)}, nil
		}
		return conn, nil
	}
}

// Conn is a tunnel whose upstream sent bytes right after its answer to
// CONNECT: Read yields those bytes first. WriteTo, ReadFrom and CloseWrite
// go to the underlying connection once they are out, so that io.Copy
// between two TCP connections still uses splice(2).
type Conn struct {
	net.Conn        // the connection to the upstream
	early    []byte // bytes received after the answer, not yet read
}

// Read reads the early bytes first, then from the connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo writes the early bytes to w, then copies the connection to w:
// with w's ReadFrom if it has one, which splices when both are TCP
// connections.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.early) > 0 {
		n, err := w.Write(c.early)
		total += int64(n)
		c.early = c.early[n:]
		if err != nil {
			return total, err
		}
	}
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(c.Conn) // a *net.TCPConn reading from one splices
	} else {
		n, err = io.Copy(w, c.Conn)
	}
	return total + n, err
}

// ReadFrom copies r to the connection, with its own ReadFrom when it has
// one (*net.TCPConn's splices from a TCP connection).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes the connection, if it can be.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("upstream: connection cannot be half-closed")
}

// Buffered returns the early bytes not yet read, without consuming them.
// A caller that copies the tunnel itself can write them to the client and
// then copy NetConn directly.
func (c *Conn) Buffered() []byte { return c.early }

// NetConn returns the underlying connection. Bytes from Buffered must be
// used first.
func (c *Conn) NetConn() net.Conn { return c.Conn }
