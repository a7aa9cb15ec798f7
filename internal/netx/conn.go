// Package netx holds connection helpers that the front ends and the
// pipeline share: a net.Conn with bytes read ahead of it (Conn, the one
// read-ahead wrapper of the hand-off, CONNECT, upgrades and interception),
// an HTTP/2 CONNECT stream as a net.Conn (StreamConn), the pooled buffers
// that body and tunnel copies use, and deadline helpers.
package netx

import (
	"bufio"
	"errors"
	"io"
	"net"
)

// Conn is a net.Conn with bytes already read from it, by a parser that
// looked ahead: Read returns those first (the bytes given, then what a
// bufio.Reader over the connection still holds), then reads the
// connection. It forwards WriteTo, ReadFrom and CloseWrite to the
// connection (WriteTo once the bytes read ahead are out), so that io.Copy
// between a Conn over a *net.TCPConn and another TCP connection still
// splices on Linux, as between the two *net.TCPConns.
//
// Like a net.Conn, a Conn may be read by one goroutine while another
// writes; reads must not be concurrent with each other.
type Conn struct {
	net.Conn
	ahead   []byte
	br      *bufio.Reader
	release func(*bufio.Reader)
}

// NewConn returns c with ahead to be read first. ahead is not copied.
func NewConn(c net.Conn, ahead []byte) *Conn {
	return &Conn{Conn: c, ahead: ahead}
}

// NewBufferedConn returns c with ahead to be read first, then the bytes
// br, a reader over c, holds buffered. Once those are read, release (when
// not nil) is called with br, which may put it back into a pool: the Conn
// does not use br after that.
func NewBufferedConn(c net.Conn, ahead []byte, br *bufio.Reader, release func(*bufio.Reader)) *Conn {
	return &Conn{Conn: c, ahead: ahead, br: br, release: release}
}

// Buffered returns the number of bytes read ahead that are still to be
// read.
func (c *Conn) Buffered() int {
	n := len(c.ahead)
	if c.br != nil {
		n += c.br.Buffered()
	}
	return n
}

// Read implements io.Reader: the bytes read ahead first, then the
// connection's.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		if len(c.ahead) == 0 {
			c.ahead = nil
		}
		return n, nil
	}
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p) // from the buffer only: it does not read c
		}
		c.releaseReader()
	}
	return c.Conn.Read(p)
}

func (c *Conn) releaseReader() {
	br := c.br
	c.br = nil
	if c.release != nil {
		c.release(br)
	}
}

// WriteTo implements io.WriterTo: first the bytes read ahead, then the
// rest of the connection by the connection's own WriteTo, which on Linux
// splices from a *net.TCPConn to a TCP connection.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.ahead) > 0 {
		m, err := w.Write(c.ahead)
		n += int64(m)
		c.ahead = c.ahead[m:]
		if err != nil {
			return n, err
		}
		c.ahead = nil
	}
	if c.br != nil {
		if k := c.br.Buffered(); k > 0 {
			buf, _ := c.br.Peek(k)
			m, err := w.Write(buf)
			_, _ = c.br.Discard(m)
			n += int64(m)
			if err != nil {
				return n, err
			}
		}
		c.releaseReader()
	}
	var m int64
	var err error
	if wt, ok := c.Conn.(io.WriterTo); ok {
		m, err = wt.WriteTo(w)
	} else {
		buf := GetBuffer()
		defer PutBuffer(buf)
		m, err = io.CopyBuffer(w, readerOnly{c.Conn}, buf[:])
	}
	return n + m, err
}

// ReadFrom implements io.ReaderFrom by the connection's own ReadFrom,
// which on Linux splices from a *net.TCPConn (or an io.LimitedReader over
// one).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	buf := GetBuffer()
	defer PutBuffer(buf)
	return io.CopyBuffer(WriterOnly{c.Conn}, r, buf[:])
}

// Detach returns the connection under c and a copy of the bytes read
// ahead of it that are still to be read, and lets go of c's reader
// (release runs). Reading the connection after the returned bytes is
// reading c. c must not be used after.
func (c *Conn) Detach() (net.Conn, []byte) {
	var ahead []byte
	if n := c.Buffered(); n > 0 {
		ahead = make([]byte, 0, n)
		ahead = append(ahead, c.ahead...)
		if c.br != nil {
			b, _ := c.br.Peek(c.br.Buffered())
			ahead = append(ahead, b...)
		}
	}
	c.ahead = nil
	if c.br != nil {
		c.releaseReader()
	}
	return c.Conn, ahead
}

// TCPConner is implemented by a connection that is, from now on, its TCP
// connection and nothing more: reading and writing it is reading and
// writing the *net.TCPConn that TCPConn returns, with nothing buffered and
// nothing transformed (a PROXY-protocol connection once its header is
// read, say; never a TLS connection). A tunnel relays between two such
// connections (or *net.TCPConns, or Conns over them) from the TCP
// connections themselves: with splice(2), and parked while idle
// (internal/park).
type TCPConner interface {
	TCPConn() *net.TCPConn
}

// CloseWrite shuts down the writing side of the connection, when it can
// be half-closed (a TCP connection can); otherwise it returns
// errors.ErrUnsupported.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// readerOnly hides a reader's WriteTo, so that io.Copy from it does not
// recurse.
type readerOnly struct{ io.Reader }
