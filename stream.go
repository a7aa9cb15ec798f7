package fwdproxy

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/quota"
)

// copyBody streams src to w in pooled buffers, never holding more than one
// buffer of the body. With flush set, every chunk is flushed to the client
// as soon as it is written, for responses that stream. Each read bumps
// watch's progress counter (the body idle timeout), when there is a watch.
// It reports the bytes written and which side failed: readErr for the
// source, writeErr for the client.
func copyBody(w io.Writer, src io.Reader, flush bool, watch *idleWatch) (written int64, readErr, writeErr error) {
	if b, ok := src.(*h1.Body); ok && !flush {
		if n, rerr, werr, spliced := b.SpliceTo(w); spliced {
			return n, rerr, werr
		}
	}
	var f http.Flusher
	if flush {
		f, _ = w.(http.Flusher)
	}
	buf := netx.GetBuffer()
	defer netx.PutBuffer(buf)
	for {
		n, rerr := src.Read(buf[:])
		if watch != nil {
			watch.moved.Add(1)
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, nil, werr
			}
			if f != nil {
				f.Flush()
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return written, rerr, nil
		}
	}
}

// A tunnel relays bytes both ways between a client and an upstream
// connection: CONNECT tunnels and upgraded (101) connections. Between two
// TCP connections on Linux io.Copy uses splice(2), so the bytes never enter
// user space; other pairs are copied through pooled buffers.
//
// Idleness is watched by a timer, not by read deadlines, so that splice is
// never interrupted: every tick the tunnel compares a signature of its
// activity (the bytes counted by buffered copies plus the kernel's byte
// counters of its TCP sockets) with the previous one, and closes both ends
// once nothing has moved for the idle timeout.
type tunnel struct {
	client, upstream io.ReadWriteCloser // bytes read ahead of client come first (netx.Conn)
	idle             time.Duration

	up, down atomic.Int64 // bytes client→upstream and upstream→client

	timer      *time.Timer
	ended      atomic.Bool // set when run returns; the timer must not re-arm
	lastSig    int64
	lastActive time.Time

	closeOnce sync.Once

	// meter, when set, is the byte quota both directions count against
	// (WithPolicies): the relay stops at it and onCut is called once.
	meter   *quota.Meter
	onCut   func()
	cutOnce sync.Once

	// info is what a Reload that closes the tunnels the new configuration
	// refuses checks (reload.go); set before the tunnel is tracked.
	info *tunnelInfo
}

type closeWriter interface{ CloseWrite() error }

func newTunnel(client, upstream io.ReadWriteCloser, idle time.Duration) *tunnel {
	return &tunnel{client: client, upstream: upstream, idle: idle}
}

// run relays until both directions have ended or the tunnel is closed, then
// closes both ends. It returns when every goroutine it started has ended.
func (t *tunnel) run() (up, down int64) {
	t.lastActive = time.Now()
	t.lastSig = t.signature()
	t.timer = time.AfterFunc(t.tick(), t.check)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pump(t.upstream, t.client, &t.up)
	}()
	t.pump(t.client, t.upstream, &t.down)
	<-done
	t.ended.Store(true)
	t.timer.Stop()
	t.close()
	return t.up.Load(), t.down.Load()
}

func (t *tunnel) regInfo() *tunnelInfo { return t.info }

// close closes both ends; the pumps then return. Safe to call many times and
// from any goroutine.
func (t *tunnel) close() {
	t.closeOnce.Do(func() {
		t.client.Close()
		t.upstream.Close()
	})
}

func (t *tunnel) tick() time.Duration {
	return max(t.idle/4, 10*time.Millisecond)
}

// check runs on the timer. It is never run concurrently with itself: the
// timer is re-armed only at its end.
func (t *tunnel) check() {
	if t.ended.Load() {
		return
	}
	now := time.Now()
	if sig := t.signature(); sig != t.lastSig {
		t.lastSig, t.lastActive = sig, now
	} else if now.Sub(t.lastActive) >= t.idle {
		t.close()
		return
	}
	t.timer.Reset(t.tick())
}

func (t *tunnel) signature() int64 {
	return t.up.Load() + t.down.Load() + tcpActivity(t.client) + tcpActivity(t.upstream)
}

// pump copies src to dst until src ends, then half-closes dst when it can;
// on any error, or when dst cannot be half-closed, it closes the tunnel.
func (t *tunnel) pump(dst, src io.ReadWriteCloser, total *atomic.Int64) {
	var err error
	if t.meter != nil {
		err = copyMetered(dst, src, total, t.meter, spliceable(dst, src)) // userpolicy.go
		if err == errQuotaReached {
			t.cutOnce.Do(t.onCut)
		}
	} else if spliceable(dst, src) {
		// io.Copy through the ends as they are: a netx.Conn's WriteTo sends
		// the bytes read ahead of it, then hands the rest to its TCP
		// connection, and its ReadFrom hands over at once, so that the
		// kernel splices either way.
		var n int64
		n, err = io.Copy(dst, src)
		total.Add(n)
	} else {
		err = copyCounting(dst, src, total)
	}
	if err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	t.close()
}

// copyCounting copies src to dst through a pooled buffer, adding to total
// as it goes so the idle watch sees progress. A clean EOF returns nil.
func copyCounting(dst io.Writer, src io.Reader, total *atomic.Int64) error {
	buf := netx.GetBuffer()
	defer netx.PutBuffer(buf)
	for {
		n, rerr := src.Read(buf[:])
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			total.Add(int64(m))
			if werr != nil {
				return werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// tcpOf returns the *net.TCPConn that c is, or that c reads ahead of
// (netx.Conn), or that c carries (a PROXY protocol connection, whose
// WriteTo and ReadFrom hand over to it), if there is one.
func tcpOf(c io.ReadWriteCloser) *net.TCPConn {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *netx.Conn:
			c = v.Conn
		case h1.TCPCarrier:
			return v.TCPConn()
		case *viaConn: // through an upstream proxy (via.go)
			c = v.Conn
		default:
			return nil
		}
	}
}
