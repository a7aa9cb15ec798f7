package proxyproto

import (
	"io"
	"log/slog"
	"net"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// Conn is a connection accepted by a Listener. Its RemoteAddr is the
// client's address: the one a trusted peer's header carries, else the
// peer's own. LocalAddr stays the listener's socket address (the header's
// destination is in Header).
//
// A trusted peer's Conn is ready when Accept returns it: its header was
// read, and nothing past it, so TCPConn is the client's stream from its
// first byte. An untrusted peer's Conn checks its first bytes on the first
// Read (or WriteTo): if they are a PROXY header, the connection is closed
// and logged, and Read returns ErrUntrustedHeader; otherwise they are
// returned as read. Once Drained reports true (always for a trusted peer,
// after the first Read for the others), the *net.TCPConn from TCPConn can
// be read, written, spliced and half-closed directly with nothing lost.
//
// Conn forwards io.WriterTo, io.ReaderFrom, CloseWrite and CloseRead to the
// TCP connection, so io.Copy from and to a Conn splices on Linux.
type Conn struct {
	raw    net.Conn
	tcp    *net.TCPConn // raw, when it is TCP
	remote net.Addr
	header *pp.Header
	l      *Listener // set while an untrusted Conn's first bytes are unchecked

	pending []byte // read while checking and not yet returned; a slice of acc
	acc     [12]byte
	err     error // returned once pending is empty: a read error held back, or the refusal
}

func newConn(c net.Conn, remote net.Addr, h *pp.Header, l *Listener) *Conn {
	tcp, _ := c.(*net.TCPConn)
	return &Conn{raw: c, tcp: tcp, remote: remote, header: h, l: l}
}

// Read reads from the connection; on an untrusted Conn, the first call
// checks that the client does not open with a PROXY header.
func (c *Conn) Read(p []byte) (int, error) {
	if c.l != nil {
		return c.readFirst(p)
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.raw.Read(p)
}

// maxEmptyReads bounds the reads in a row that return nothing and no error
// while the first bytes are checked.
const maxEmptyReads = 100

// readFirst reads an untrusted connection's first bytes, as many as decide
// whether they are a PROXY header (at most 12), into p when it is large
// enough, else into acc.
func (c *Conn) readFirst(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	got := c.acc[:0]
	if len(p) >= len(c.acc) {
		n, err := c.raw.Read(p)
		switch s := sniff(p[:n]); {
		case s == sigFound:
			return 0, c.refuse()
		case s == sigNone && n > 0, err != nil:
			c.l = nil
			return n, err
		}
		got = append(got, p[:n]...) // a proper prefix of a signature: shorter than acc
	}
	for empty := 0; ; {
		m, err := c.raw.Read(c.acc[len(got):])
		got = c.acc[:len(got)+m]
		s := sniff(got)
		if s == sigFound {
			return 0, c.refuse()
		}
		if (s == sigNone && len(got) > 0) || err != nil {
			c.l = nil
			c.pending, c.err = got, err
			return c.Read(p)
		}
		if m == 0 {
			if empty++; empty == maxEmptyReads {
				c.l = nil
				c.pending, c.err = got, io.ErrNoProgress
				return c.Read(p)
			}
		}
	}
}

// refuse closes an untrusted connection that opened with a PROXY header.
func (c *Conn) refuse() error {
	l := c.l
	c.l = nil
	c.err = ErrUntrustedHeader
	c.raw.Close()
	l.stats.untrusted.Add(1)
	l.logRefusal("PROXY protocol header from an untrusted peer; closed", c.raw.RemoteAddr(),
		slog.String("hint", "only peers in the trusted ranges may send one"))
	return c.err
}

// Drained reports whether every byte taken from the socket has been
// returned by Read and the first bytes have been checked: from then on the
// connection can be used through TCPConn directly.
func (c *Conn) Drained() bool { return c.l == nil && len(c.pending) == 0 && c.err == nil }

// TCPConn returns the underlying TCP connection (nil when the inner
// listener is not TCP). Use it for reads only once Drained reports true;
// its RemoteAddr is the peer's (the load balancer's), not the client's.
func (c *Conn) TCPConn() *net.TCPConn { return c.tcp }

// Header returns the PROXY header a trusted peer sent, with its
// destination address and TLVs; nil for an untrusted peer.
func (c *Conn) Header() *pp.Header { return c.header }

// PeerAddr returns the address of the peer that opened the connection:
// the load balancer for a trusted peer.
func (c *Conn) PeerAddr() net.Addr { return c.raw.RemoteAddr() }

// RemoteAddr returns the client's address: the source a PROXY header
// carries, or the peer's own address (untrusted peers, LOCAL and UNKNOWN
// headers). IPv4-mapped IPv6 sources are given as IPv4.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the listener's socket address, which is what the proxy
// compares a target with to catch loops.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// Write writes to the connection.
func (c *Conn) Write(p []byte) (int, error) { return c.raw.Write(p) }

// Close closes the connection.
func (c *Conn) Close() error { return c.raw.Close() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// CloseWrite shuts down the writing side (a TCP half-close).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: c.raw.LocalAddr().Network(), Err: net.ErrClosed}
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error {
	if cr, ok := c.raw.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return &net.OpError{Op: "close", Net: c.raw.LocalAddr().Network(), Err: net.ErrClosed}
}

// WriteTo implements io.WriterTo: it returns what the check read first,
// then hands the TCP connection itself to w's ReadFrom, so that a copy to
// a *net.TCPConn splices.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if !c.Drained() {
		buf := make([]byte, 512)
		for c.l != nil || len(c.pending) > 0 || c.err != nil {
			n, err := c.Read(buf)
			if n > 0 {
				m, werr := w.Write(buf[:n])
				total += int64(m)
				if werr != nil {
					return total, werr
				}
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
	}
	if rf, ok := w.(io.ReaderFrom); ok && c.tcp != nil {
		n, err := rf.ReadFrom(c.tcp)
		return total + n, err
	}
	n, err := io.Copy(w, c.raw)
	return total + n, err
}

// ReadFrom implements io.ReaderFrom: it hands r to the TCP connection's
// ReadFrom (unwrapping a drained Conn), so that a copy from a *net.TCPConn
// splices.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if src, ok := r.(*Conn); ok && src.tcp != nil && src.Drained() {
		r = src.tcp
	}
	if rf, ok := c.raw.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.raw}, r)
}

// writerOnly hides a writer's ReadFrom, so that io.Copy does not call back
// into it.
type writerOnly struct{ io.Writer }
