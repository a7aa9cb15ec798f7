//go:build linux

package fwdproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/park"
)

// Parked tunnels (issue 16): a tunnel between two TCP connections holds a
// goroutine for a direction only while that direction moves bytes.
//
// Each direction (client→upstream, upstream→client) is parked, running or
// done. Parked, it holds no goroutine and no pipe: its source connection
// waits in the Proxy's Parker (internal/park), with the tunnel's idle
// deadline. Readable, it gets a goroutine that moves bytes with splice(2)
// through a pipe from a small pool, held only while bytes are in it (Go's
// own splice keeps its pipe for as long as it waits, which is six
// descriptors an idle tunnel), waiting in the runtime's poller through
// syscall.RawConn while the source is empty or the destination full. A
// direction whose source has had nothing for parkLinger (a read deadline
// it keeps, refreshed at most four times a linger) parks again. When no
// pipe can be had (out of descriptors) it copies through a pooled buffer
// instead, a chunk at a time.
//
// The tunnel idle timeout needs no timer of its own: every byte moved is
// counted where it is moved, with the time (last); a parked direction's
// deadline is last plus the timeout, and a direction blocked writing has a
// write deadline as long; when either passes, the tunnel closes if nothing
// has moved since, else it waits again. Half-close, Shutdown's closing, a
// Reload's closing of denied tunnels and the request's end work as for the
// tunnels a handler relays (stream.go): a CONNECT tunnel's request ends
// when the tunnel ends (observe, requestEnd), and its handler returns at
// once.

const (
	// parkLinger is how long a running direction waits for more bytes
	// before it parks: long enough that request/response traffic inside a
	// tunnel does not park between each exchange, short enough that an
	// idle tunnel holds no goroutine a second after its last byte.
	parkLinger = 250 * time.Millisecond

	// Pipes: each splice moves at most spliceMax bytes, through a pipe of
	// that size (as Go's own splice code); at most maxFreePipes are kept
	// for reuse.
	spliceMax    = 1 << 20
	maxFreePipes = 64
)

// Direction states, guarded by the tunnel's mu.
const (
	dirRunning int8 = iota // a goroutine owns it (or the one starting the tunnel)
	dirParked              // waiting in the Parker
	dirDone                // its source ended, or the tunnel is closed
)

// monoEpoch is the origin of the tunnels' monotonic times (last).
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// noRequest stands for the request of a tunnel that outlives its handler
// without telemetry: no state hangs off its (background) context.
var noRequest = new(http.Request)

// parkedTunnel is a tunnel between two TCP connections whose directions
// park while idle.
type parkedTunnel struct {
	p     *Proxy
	conns [2]*net.TCPConn // client, upstream
	dirs  [2]tunnelDir    // client→upstream (up), upstream→client (down)
	idle  time.Duration
	last  atomic.Int64 // when a byte last moved (or the tunnel started), monoNow

	mu      sync.Mutex // the directions' states, closing, closed
	closing bool
	closed  bool         // the connections are closed
	live    atomic.Int32 // directions not done

	// via is an end that is a tunnel through an upstream proxy (via.go),
	// counted outstanding on it until closed: closed with the connections.
	via [2]*viaConn

	info  *tunnelInfo
	r     *http.Request // for tunnelEnded: the handler's, a detached one (reqState.detach), or noRequest (also with reqEnd.compact)
	start int64         // monoNow

	// Exactly one of: done, closed at the end for a handler that waits
	// (an upgrade, an intercepted connection tunnelled untouched); reqEnd,
	// the CONNECT's request, ended at the end (the tunnel then gives back
	// the WithMaxTunnels slot too), when the tunnel is detached (done nil).
	done   chan struct{}
	reqEnd requestEnd
}

// tunnelDir is one direction of a parked tunnel: from conns[idx] to
// conns[1-idx].
type tunnelDir struct {
	t     *parkedTunnel
	idx   int8
	state int8 // guarded by t.mu
	entry park.Entry
	total atomic.Int64 // bytes delivered to the destination
}

func (d *tunnelDir) src() *net.TCPConn { return d.t.conns[d.idx] }
func (d *tunnelDir) dst() *net.TCPConn { return d.t.conns[1-d.idx] }

// parkTunnel relays between client and upstream as a parked tunnel, when
// both are TCP connections (tcpOf), and reports true; otherwise it reports
// false, having done nothing. With detach, it returns at once with the
// request's end (observe ends the request when the tunnel ends); without,
// it returns when the tunnel has ended.
func (p *Proxy) parkTunnel(c *config, r *http.Request, client, upstream io.ReadWriteCloser, detach bool) (*requestEnd, bool) {
	if p.parker == nil {
		return nil, false
	}
	ends := [2]io.ReadWriteCloser{client, upstream}
	var rcs [2]syscall.RawConn
	for i, e := range ends {
		tc := tcpOf(e)
		if tc == nil || !drained(e) {
			return nil, false
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			return nil, false
		}
		rcs[i] = rc
	}
	t := &parkedTunnel{p: p, idle: c.tunnelIdleTimeout, start: monoNow(), r: r}
	t.last.Store(t.start)
	t.live.Store(2)
	var early [2][]byte // bytes read ahead of each end
	for i, e := range ends {
		d := &t.dirs[i]
		d.t, d.idx = t, int8(i)
		t.conns[i], early[i], t.via[i] = takeTCP(e)
		d.entry.Init(p.parker, rcs[i], d)
	}
	t.info = newTunnelInfo(c, r, upstream) // reload.go
	if detach {
		t.reqEnd.p = p
	} else {
		t.done = make(chan struct{})
	}
	if !p.track(t) {
		t.closeConns()
		return nil, true
	}
	p.tunnelStarted(r) // telemetry.go
	if detach {
		// The handler and its request go; what the request's end reads
		// stays: a few values when that is all it reads (telemetry.go).
		t.r = noRequest
		if rs := reqStateFrom(r.Context()); rs != nil {
			if rs.compactable() {
				t.reqEnd.keep(rs, r, t.info)
			} else {
				t.r = rs.detach(r, t.info.request())
			}
		}
	}
	if t.sendEarly(early) {
		for i := range t.dirs {
			d := &t.dirs[i]
			switch d.park() {
			case parkClosing:
				d.finish()
			case parkFailed:
				go d.run()
			}
		}
	}
	if detach {
		return &t.reqEnd, true
	}
	<-t.done
	return nil, true
}

// sendEarly sends the bytes read ahead of each end to the other, before
// anything else: a few (a TLS ClientHello sent right behind the CONNECT,
// say), to a connection just opened. It reports false when that failed:
// the tunnel is then closed, and its directions done.
func (t *parkedTunnel) sendEarly(early [2][]byte) bool {
	for i, b := range early {
		if len(b) == 0 {
			continue
		}
		d := &t.dirs[i]
		dst := d.dst()
		_ = dst.SetWriteDeadline(time.Now().Add(t.idle))
		n, err := dst.Write(b)
		d.total.Add(int64(n))
		if err != nil {
			t.close()
			t.dirs[0].finish()
			t.dirs[1].finish()
			return false
		}
	}
	return true
}

// takeTCP returns the TCP connection under c (tcpOf), the bytes c had
// read ahead of it, which it takes, and the tunnel through an upstream
// proxy that c is, if it is one (its Close ends its count there).
func takeTCP(c io.ReadWriteCloser) (*net.TCPConn, []byte, *viaConn) {
	var ahead []byte
	var via *viaConn
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, ahead, via
		case *netx.Conn:
			inner, more := v.Detach()
			ahead = append(ahead, more...)
			c = inner
		case netx.TCPConner:
			return v.TCPConn(), ahead, via
		case *viaConn:
			via = v
			c = v.Conn
		default:
			return nil, nil, nil // not reached: tcpOf said it is TCP
		}
	}
}

// drained reports whether every connection c wraps has handed out all it
// read from its socket (a PROXY protocol connection may hold a few bytes
// back: proxyproto.Conn.Drained), so that the socket can be waited for
// and read directly.
func drained(c io.ReadWriteCloser) bool {
	for {
		if d, ok := c.(interface{ Drained() bool }); ok && !d.Drained() {
			return false
		}
		switch v := c.(type) {
		case *netx.Conn:
			c = v.Conn
		case *viaConn:
			c = v.Conn
		default:
			return true
		}
	}
}

func (t *parkedTunnel) regInfo() *tunnelInfo { return t.info }

// quiet is how long nothing has moved.
func (t *parkedTunnel) quiet() time.Duration {
	return time.Duration(monoNow() - t.last.Load())
}

// Results of park.
const (
	parkOK      = iota
	parkClosing // the tunnel is closing: the direction is to finish
	parkFailed  // the Parker would not take it: the direction keeps running
)

// park parks d, with the tunnel's idle deadline.
func (d *tunnelDir) park() int {
	t := d.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return parkClosing
	}
	deadline := monoEpoch.Add(time.Duration(t.last.Load()) + t.idle)
	d.state = dirParked
	if !d.entry.Park(deadline, t.idle/4) {
		d.state = dirRunning
		return parkFailed
	}
	return parkOK
}

// Wake implements park.Waker: d's source is readable (or hung up), or
// the idle deadline passed.
func (d *tunnelDir) Wake(expired bool) {
	t := d.t
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		d.finish()
		return
	}
	d.state = dirRunning
	t.mu.Unlock()
	if expired {
		if t.quiet() >= t.idle {
			t.close()
			d.finish()
			return
		}
		switch d.park() { // the other direction moved bytes since
		case parkOK:
			return
		case parkClosing:
			d.finish()
			return
		}
	}
	d.run()
}

// finish marks d done; the last direction done ends the tunnel.
func (d *tunnelDir) finish() {
	t := d.t
	t.mu.Lock()
	if d.state == dirDone {
		t.mu.Unlock()
		return
	}
	d.state = dirDone
	t.mu.Unlock()
	t.dirDone()
}

func (t *parkedTunnel) dirDone() {
	if t.live.Add(-1) == 0 {
		t.end()
	}
}

// close closes the tunnel: Shutdown, a Reload, the idle timeout, a failed
// direction. Parked directions are done at once; running ones fail on the
// closed connections and finish themselves, as does one whose Wake is on
// its way. The tunnel ends on the goroutine of the last direction done,
// which may be the caller's.
func (t *parkedTunnel) close() {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.closing = true
	var ended [2]bool
	for i := range t.dirs {
		d := &t.dirs[i]
		if d.state == dirParked && d.entry.Unpark() {
			d.state = dirDone
			ended[i] = true
		}
	}
	t.mu.Unlock()
	t.closeConns()
	for _, e := range ended {
		if e {
			t.dirDone()
		}
	}
}

// closeConns closes the tunnel's connections, once. It takes t.mu: its
// callers must not hold it.
func (t *parkedTunnel) closeConns() {
	t.mu.Lock()
	closed := t.closed
	t.closed = true
	t.mu.Unlock()
	if closed {
		return
	}
	t.conns[0].Close()
	t.conns[1].Close()
	for _, v := range t.via {
		if v != nil {
			v.Close() // via.go: no longer outstanding on its upstream proxy
		}
	}
}

// end ends the tunnel, as runTunnel ends one it relays: telemetry, the
// debug record; then the request's end (with the WithMaxTunnels slot), or
// the waiting handler; then the registry. Untracked last: Shutdown waits
// for the registry and then closes the telemetry, so the request's end
// (its access record, span and flow record) must be done by then.
func (t *parkedTunnel) end() {
	t.dirs[0].entry.Release()
	t.dirs[1].entry.Release()
	t.closeConns()
	p := t.p
	up, down := t.dirs[0].total.Load(), t.dirs[1].total.Load()
	d := time.Duration(monoNow() - t.start)
	p.tunnelEnded(t.r, t.conns[1], up, down, d) // telemetry.go
	if t.reqEnd.compact {
		t.reqEnd.rec.tunnelEnded(p, t.conns[1], up, down, d)
	}
	p.log.LogAttrs(t.r.Context(), slog.LevelDebug, "tunnel closed",
		slog.String("target", t.info.target), slog.String("client", t.info.client),
		slog.Int64("bytes_up", up), slog.Int64("bytes_down", down),
		slog.Duration("duration", d))
	if t.done != nil {
		close(t.done)
		p.untrack(t)
		return
	}
	p.closeTunnel() // connect.go: the slot serveConnect took
	t.reqEnd.tunnelDone()
	p.untrack(t)
}

var errQuiet = errors.New("tunnel direction quiet")

// run moves d's bytes until its source ends (half-close), the tunnel
// fails or closes, or the source is quiet for parkLinger (d parks).
func (d *tunnelDir) run() {
	t := d.t
	ps := pumpStates.Get().(*pumpState)
	ps.reset(d)
	defer func() {
		ps.reset(nil)
		pumpStates.Put(ps)
	}()
	for {
		err := ps.move()
		switch {
		case err == nil: // the source ended: pass the FIN on
			if d.dst().CloseWrite() != nil {
				t.close()
			}
			d.finish()
			return
		case err == errQuiet:
			if t.quiet() >= t.idle {
				t.close()
				d.finish()
				return
			}
			switch d.park() {
			case parkOK:
				return
			case parkClosing:
				d.finish()
				return
			}
			// The Parker would not take it: keep running.
		default:
			t.close()
			d.finish()
			return
		}
	}
}

// pumpState is a running direction's state: its pipe or buffer, the
// deadlines it set, and the callbacks it gives RawConn, made once per
// pooled pumpState so that moving bytes allocates nothing.
type pumpState struct {
	d        *tunnelDir
	pipe     splicePipe
	havePipe bool
	buf      *[netx.CopyBufferSize]byte // when no pipe could be had
	n, off   int                        // bytes in the pipe or buffer still to write; buffer offset
	err      error                      // a callback's error
	rdSet    time.Time                  // when the source's read deadline was set
	wdSet    time.Time                  // when the destination's write deadline was set
	fillFn   func(uintptr) bool
	drainFn  func(uintptr) bool
}

var pumpStates = sync.Pool{New: func() any {
	ps := new(pumpState)
	ps.fillFn, ps.drainFn = ps.fill, ps.drain
	return ps
}}

func (ps *pumpState) reset(d *tunnelDir) {
	ps.d, ps.n, ps.off, ps.err = d, 0, 0, nil
	ps.rdSet, ps.wdSet = time.Time{}, time.Time{}
}

var errPipeEmpty = errors.New("splice: pipe empty")

// move moves bytes from d's source to its destination until the source
// ends (nil), fails, or has been quiet for parkLinger (errQuiet). It
// returns with the pipe and buffer given back.
func (ps *pumpState) move() error {
	d := ps.d
	t := d.t
	src, dst := d.src(), d.dst()
	srcRC, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	for {
		// What the source has (at least a byte, or its end) into the pipe
		// or buffer, waiting at most about parkLinger for it.
		if now := time.Now(); now.Sub(ps.rdSet) > parkLinger/4 {
			_ = src.SetReadDeadline(now.Add(parkLinger))
			ps.rdSet = now
		}
		ps.n, ps.off, ps.err = 0, 0, nil
		err := srcRC.Read(ps.fillFn)
		if err == nil {
			err = ps.err
		}
		if err != nil || ps.n == 0 {
			ps.putPipe()
			ps.putBuf()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errQuiet
			}
			return err
		}
		// All of it to the destination, waiting while it is full: a
		// destination that takes nothing for the idle timeout, with nothing
		// moving the other way either, closes the tunnel.
		for ps.n > 0 {
			if now := time.Now(); now.Sub(ps.wdSet) > t.idle/4 {
				_ = dst.SetWriteDeadline(now.Add(t.idle))
				ps.wdSet = now
			}
			ps.err = nil
			err := dstRC.Write(ps.drainFn)
			if err == nil {
				err = ps.err
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && t.quiet() < t.idle {
					ps.wdSet = time.Time{}
					continue
				}
				ps.dropPipe()
				ps.putBuf()
				return err
			}
		}
		ps.putBuf() // a pipe is tried again next time
	}
}

// fill is the RawConn read callback: one splice from the source into the
// pipe (taken first), or one read into the buffer when no pipe can be had.
// It gives both back before a wait.
func (ps *pumpState) fill(fd uintptr) bool {
	if !ps.havePipe && ps.buf == nil {
		if p, err := ps.d.t.p.pipes.get(); err == nil {
			ps.pipe, ps.havePipe = p, true
		} else {
			ps.buf = netx.GetBuffer()
		}
	}
	for {
		var m int
		var e error
		if ps.havePipe {
			var m64 int64
			m64, e = unix.Splice(int(fd), nil, ps.pipe.w, nil, spliceMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			m = int(m64)
		} else {
			m, e = unix.Read(int(fd), ps.buf[:])
		}
		switch e {
		case nil:
			ps.n = m
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			ps.putPipe() // empty: no reason to hold it while waiting
			ps.putBuf()
			return false
		default:
			ps.err = e
			return true
		}
	}
}

// drain is the RawConn write callback: it writes what the pipe or buffer
// holds to the destination, counting it, until it is all out or the
// destination is full.
func (ps *pumpState) drain(fd uintptr) bool {
	d := ps.d
	for ps.n > 0 {
		var m int
		var e error
		if ps.havePipe {
			var m64 int64
			m64, e = unix.Splice(ps.pipe.r, nil, int(fd), nil, ps.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			m = int(m64)
		} else {
			m, e = unix.Write(int(fd), ps.buf[ps.off:ps.off+ps.n])
		}
		switch {
		case e == nil && m > 0:
			ps.n -= m
			ps.off += m
			d.total.Add(int64(m))
			d.t.last.Store(monoNow())
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case e == nil:
			ps.err = errPipeEmpty
			return true
		default:
			ps.err = e
			return true
		}
	}
	return true
}

// putPipe gives back the direction's pipe, which is empty.
func (ps *pumpState) putPipe() {
	if ps.havePipe {
		ps.d.t.p.pipes.put(ps.pipe)
		ps.havePipe = false
	}
}

// dropPipe closes the direction's pipe, which may hold bytes.
func (ps *pumpState) dropPipe() {
	if ps.havePipe {
		ps.pipe.close()
		ps.havePipe = false
	}
}

func (ps *pumpState) putBuf() {
	if ps.buf != nil {
		netx.PutBuffer(ps.buf)
		ps.buf = nil
	}
}

// splicePipe is a pipe for splice(2): its read and write ends.
type splicePipe struct{ r, w int }

func (sp splicePipe) close() {
	_ = unix.Close(sp.r)
	_ = unix.Close(sp.w)
}

// pipePool keeps up to maxFreePipes empty pipes for the running
// directions of parked tunnels; Shutdown closes them (closeAll).
type pipePool struct {
	mu     sync.Mutex
	free   []splicePipe
	closed bool
}

// get returns an empty pipe: a free one, or a new one.
func (pp *pipePool) get() (splicePipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		sp := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return sp, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return splicePipe{}, err
	}
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceMax) // a smaller pipe works too
	return splicePipe{r: fds[0], w: fds[1]}, nil
}

// put keeps an empty pipe for reuse, or closes it.
func (pp *pipePool) put(sp splicePipe) {
	pp.mu.Lock()
	if len(pp.free) < maxFreePipes && !pp.closed {
		pp.free = append(pp.free, sp)
		pp.mu.Unlock()
		return
	}
	pp.mu.Unlock()
	sp.close()
}

// closeAll closes the free pipes, and every pipe given back from now on.
func (pp *pipePool) closeAll() {
	pp.mu.Lock()
	free := pp.free
	pp.free, pp.closed = nil, true
	pp.mu.Unlock()
	for _, sp := range free {
		sp.close()
	}
}
