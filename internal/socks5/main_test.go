package socks5

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeConn is a net.Conn that reads a script and records what is written,
// for the parser's table tests, the fuzz target and the benchmarks. Reads
// return at most chunk bytes (all that is left when chunk is 0), then
// io.EOF.
type fakeConn struct {
	in        []byte
	chunk     int
	out       bytes.Buffer
	closed    bool
	closedOut bool      // CloseWrite was called
	deadline  time.Time // the last SetDeadline
}

func (c *fakeConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := len(c.in)
	if c.chunk > 0 && n > c.chunk {
		n = c.chunk
	}
	n = copy(p, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}

func (c *fakeConn) Write(p []byte) (int, error) {
	if c.closedOut || c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *fakeConn) Close() error        { c.closed = true; return nil }
func (c *fakeConn) CloseWrite() error   { c.closedOut = true; return nil }
func (c *fakeConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1080} }
func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *fakeConn) SetDeadline(t time.Time) error    { c.deadline = t; return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
