package h1

import (
	"net"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// handoff gives the connection to the http.Server with what was read of
// it: first read (what parsing consumed), then the rest of the buffer,
// which goes back to its pool once read. It reports false if that server
// is closed (the connection is then closed by the caller).
func (sc *srvConn) handoff(read []byte) bool {
	hc := netx.NewBufferedConn(sc.c, read, sc.br, putReader)
	if !sc.state.CompareAndSwap(connActive, connGone) {
		return false
	}
	sc.entry.Release()
	if l := sc.s.handOffTo(sc.s.settings()); l == nil || !l.handoff(hc) {
		return false
	}
	sc.br = nil // the handed-off connection reads it empty
	return true
}

// handSOCKS gives the connection to socks (ServerSettings.SOCKS) with the
// bytes buffered of it, and serves it there on this goroutine. It reports
// false when the connection was closed by Shutdown first. The connection
// stays counted: socks takes it out.
func (sc *srvConn) handSOCKS(socks func(net.Conn)) bool {
	if !sc.state.CompareAndSwap(connIdle, connGone) {
		return false
	}
	c := netx.NewBufferedConn(sc.c, nil, sc.br, putReader)
	sc.br = nil
	_ = sc.c.SetDeadline(time.Time{})
	sc.dlValid = false
	socks(c)
	return true
}

// HandedOff reports whether c, a connection the hand-off server got, is
// one the loop handed off: a TCP connection the Server counted (and, past
// MaxConns, refused) when it accepted it. The others are those the
// Server passed on as they were accepted because they are not plain TCP
// (TLS), which the hand-off server's owner counts.
func HandedOff(c net.Conn) bool {
	_, ok := c.(*netx.Conn)
	return ok
}

// handoffListener feeds the connections the loop hands off to the
// http.Server.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) handoff(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}
