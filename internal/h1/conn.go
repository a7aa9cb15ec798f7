package h1

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/park"
)

// srvConn is a client connection served by the loop.
type srvConn struct {
	s      *Server
	c      net.Conn
	tcp    *net.TCPConn // c, or the TCP connection c carries (TCPCarrier): for writes, splices and half-closes
	br     *bufio.Reader
	state  atomic.Int32
	remote string
	// ctx holds the values requests see (server, local address). It is
	// never cancelled, so that a request's own WithCancel
	// registers nothing with it; shutdown cancels requests through wcancel.
	ctx context.Context

	// The read deadline last set by setReadTimeout, valid until something
	// else sets one (the client watch, Hijack).
	dlValid   bool
	dlSet     time.Time
	dlTimeout time.Duration

	// The client watch (armWatch, watchClient, disarmWatch).
	wmu     sync.Mutex
	wtimer  *time.Timer
	wstate  int // watchOff, watchArmed, watchRunning
	wcancel context.CancelFunc
	wdone   chan struct{}

	// Between requests the connection waits in the Server's Parker, if
	// it has one, without a goroutine or a read buffer (park, Wake).
	entry    park.Entry
	parkable bool // entry is set up (newConn: before Shutdown can see the connection)
	// fresh: parked before its first request (the Server was crowded),
	// which must come by firstBy (ReadHeaderTimeout from the accept).
	fresh   bool
	firstBy time.Time
}

const (
	watchOff = iota
	watchArmed
	watchRunning
)

// serve runs the loop on one connection, from its first request, until it
// closes, is hijacked (a tunnel), handed off, or parked.
func (sc *srvConn) serve() { sc.loop(true) }

// Wake implements park.Waker: the parked connection has bytes (or its
// client left), and a goroutine serves it again; or it stayed idle for
// the idle timeout, and it is closed.
func (sc *srvConn) Wake(expired bool) {
	if expired {
		sc.finish(false)
		return
	}
	first := sc.fresh
	sc.fresh = false
	sc.loop(first)
}

// loop serves requests on the connection until it closes, is hijacked,
// handed off, or parked: between requests, with nothing read ahead, the
// connection gives back its read buffer and waits in the Server's Parker,
// and this goroutine ends; a new one serves the next request (Wake), read
// at once. The first request is always awaited here, under
// ReadHeaderTimeout.
func (sc *srvConn) loop(first bool) {
	s := sc.s
	keep := false   // the connection lives on: hijacked or handed off
	parked := false // the Parker has it
	defer func() {
		if !parked {
			sc.finish(keep)
		}
	}()
	for served := false; ; first, served = false, true {
		st := s.settings() // read once per request, so that a new value applies to the next one
		timed := false     // the wait for the next request has its deadline
		crowded := served && s.crowded()
		if served && s.parker != nil && (crowded || st.IdleTimeout <= 0 || st.IdleTimeout > parkLinger) &&
			(sc.br == nil || sc.br.Buffered() == 0) {
			idleFrom := time.Now()
			if !crowded {
				timed = sc.lingered()
			}
			if !timed {
				if sc.park(idleDeadline(st, idleFrom)) {
					parked = true
					return
				}
				// The Parker would not take it: it waits the rest of
				// its idle timeout here.
				sc.dlValid = false
				var dl time.Time
				if st.IdleTimeout > 0 {
					dl = idleFrom.Add(st.IdleTimeout)
				}
				_ = sc.c.SetReadDeadline(dl)
				timed = true
			}
		}
		switch {
		case timed:
		case first && !sc.firstBy.IsZero():
			// Woken before its first request: the accept's header timeout
			// runs on, but a connection whose turn came late (the Parker's
			// limit) gets a moment to be read: its bytes are there.
			sc.dlValid = false
			_ = sc.c.SetReadDeadline(later(sc.firstBy, time.Now().Add(firstReadGrace)))
		case first:
			sc.setReadTimeout(st.ReadHeaderTimeout)
		default:
			sc.setReadTimeout(st.IdleTimeout)
		}
		sc.reader()
		b, err := sc.br.Peek(1)
		if err != nil {
			return // closed, idle too long, or closed by shutdown
		}
		if first {
			if b[0] == socks5Version && st.SOCKS != nil {
				keep = sc.handSOCKS(st.SOCKS)
				return
			}
			if proto, answer, ok := nonHTTP(b[0]); ok {
				sc.refuseNonHTTP(proto, answer) // TLS or SOCKS: no HTTP will come
				return
			}
		}
		if !sc.state.CompareAndSwap(connIdle, connActive) {
			return
		}
		head, err := sc.readHead(st, !first)
		if err != nil {
			return // timed out or closed mid-header: net/http closes quietly too
		}
		var req *http.Request
		var read []byte // what parsing consumed, for a hand-off
		if head != nil {
			buffered := sc.br.Buffered()
			if req = fastRequest(head); req != nil {
				_, _ = sc.br.Discard(len(head))
			} else if req = parseRequest(sc.br, head); req == nil {
				// The header block was all buffered, so parsing read it
				// without refilling: the bytes it consumed are intact.
				read = bytes.Clone(head[:buffered-sc.br.Buffered()])
			}
		}
		if req == nil {
			keep = sc.handoff(read)
			return
		}
		if sc.br.Buffered() == 0 {
			sc.releaseReader() // nothing pipelined: the buffer is not needed while the request is served
		}
		req.RemoteAddr = sc.remote
		again, hijacked := sc.serveRequest(req, st)
		if hijacked {
			keep = true
			return
		}
		if !again || !sc.state.CompareAndSwap(connActive, connIdle) || s.closing.Load() {
			return
		}
	}
}

// parkLinger is how long a keep-alive connection waits for its next
// request on its own goroutine before it parks. Parking and waking cost a
// request what it costs the scheduler to give the woken connection a new
// goroutine (a fresh stack that grows, often another thread), a good part
// of a small request's CPU; a client that keeps its connection busy sends
// its next request well within the linger and never parks. The read
// deadline that times the linger is the connection's own, refreshed at
// most every tenth of the linger (setReadTimeout), so a busy connection
// costs no timer work per request.
var parkLinger = 250 * time.Millisecond // a variable for tests only

// lingered waits up to parkLinger for the next request and reports
// whether its first bytes came (they are then buffered) or the
// connection failed (the wait that follows finds out at once); false
// means it is time to park. The loop lingers only when the idle timeout
// is longer than parkLinger, so the linger is part of it.
func (sc *srvConn) lingered() bool {
	sc.setReadTimeout(parkLinger)
	sc.reader()
	_, err := sc.br.Peek(1)
	return err == nil || !netx.IsTimeout(err)
}

// firstReadGrace is how long a connection parked from its accept may
// still be read when its turn comes at or past its header timeout.
const firstReadGrace = 100 * time.Millisecond

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// idleDeadline returns the deadline and slack of a connection parked
// after a response: idle since idleFrom for st.IdleTimeout, told at most
// an eighth of it late.
func idleDeadline(st *ServerSettings, idleFrom time.Time) (time.Time, time.Duration) {
	if st.IdleTimeout <= 0 {
		return time.Time{}, 0
	}
	return idleFrom.Add(st.IdleTimeout), st.IdleTimeout / 8
}

// parkFirst parks a connection just accepted by a crowded Server before
// its first request, which must come within st.ReadHeaderTimeout; it
// reports false, having parked nothing, as park does.
func (sc *srvConn) parkFirst(st *ServerSettings) bool {
	var slack time.Duration
	if st.ReadHeaderTimeout > 0 {
		sc.firstBy = time.Now().Add(st.ReadHeaderTimeout)
		slack = min(st.ReadHeaderTimeout/8, time.Second)
	}
	sc.fresh = true
	if !sc.park(sc.firstBy, slack) {
		sc.fresh = false
		return false
	}
	return true
}

// park gives the idle connection to the Server's Parker, with its read
// buffer given back, until it is readable (Wake) or deadline passed (the
// zero time for none; it is told at most slack late). Readable, it counts
// against the Parker's limit on the connections served at once. It reports
// false, having parked nothing, when there is no Parker, the connection
// holds bytes it read from its socket (a TCPCarrier that is not drained),
// or the Parker would not take it: the loop then waits itself.
func (sc *srvConn) park(deadline time.Time, slack time.Duration) bool {
	pk := sc.s.parker
	sc.dlValid = false // the next wait sets its own read deadline
	if pk == nil {
		return false
	}
	if d, ok := sc.c.(interface{ Drained() bool }); ok && !d.Drained() {
		return false // a PROXY protocol connection holds bytes back: read them first
	}
	if !sc.parkable {
		return false
	}
	sc.releaseReader()
	return sc.entry.Park(deadline, slack)
}

// finish lets the connection go, for good: closed unless keep (hijacked
// or handed off), out of the Parker and of the Server's connections.
func (sc *srvConn) finish(keep bool) {
	s := sc.s
	sc.entry.Release()
	if !keep {
		sc.state.Store(connGone)
		sc.c.Close()
		s.open.Add(-1)
	}
	sc.releaseReader()
	s.mu.Lock()
	delete(s.conns, sc)
	s.held.Add(-1)
	s.mu.Unlock()
	s.wg.Done()
}

// setReadTimeout sets the connection's read deadline d from now. Setting
// a deadline costs a timer update; on a busy keep-alive connection the one
// set less than a tenth of d (at most a second) ago is kept, so a timeout
// may come that much early.
func (sc *srvConn) setReadTimeout(d time.Duration) {
	now := time.Now()
	if sc.dlValid && sc.dlTimeout == d && now.Sub(sc.dlSet) < min(d/10, time.Second) {
		return
	}
	if d > 0 {
		_ = sc.c.SetReadDeadline(now.Add(d))
	} else {
		_ = sc.c.SetReadDeadline(time.Time{})
	}
	sc.dlValid, sc.dlSet, sc.dlTimeout = true, now, d
}

// readHead returns the request's header block, still buffered, once it is
// complete; nil (and no error) when it is larger than the reader's buffer
// or st.MaxHeaderBytes, which leaves the request to net/http. When the
// block is not all there and timed is set, the header timeout starts (the
// first request's idle wait is already timed by it).
func (sc *srvConn) readHead(st *ServerSettings, timed bool) ([]byte, error) {
	br := sc.br
	limit := min(st.MaxHeaderBytes, br.Size())
	for n := br.Buffered(); ; n = br.Buffered() {
		buf, _ := br.Peek(n)
		if end := headerEnd(buf); end >= 0 {
			if end > limit {
				return nil, nil
			}
			return buf[:end], nil
		}
		if n >= limit || badRequestLine(buf) {
			return nil, nil // net/http answers (431, 400) or serves it
		}
		if timed {
			sc.setReadTimeout(st.ReadHeaderTimeout)
			timed = false
		}
		if _, err := br.Peek(n + 1); err != nil {
			return nil, err
		}
	}
}

// srvReadBufferSize is the size of a client connection's read buffer,
// which bounds the header blocks the loop takes.
const srvReadBufferSize = 4 << 10

// srvReaders are client connections' read buffers. A connection holds one
// while it waits for and reads a request, not while the request is served
// (unless the client pipelined another).
var srvReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, srvReadBufferSize) }}

// reader makes sure the connection has its read buffer.
func (sc *srvConn) reader() {
	if sc.br == nil {
		sc.br = srvReaders.Get().(*bufio.Reader)
		sc.br.Reset(sc.c)
	}
}

func (sc *srvConn) releaseReader() {
	if sc.br != nil {
		putReader(sc.br)
		sc.br = nil
	}
}

// putReader returns a client connection's read buffer to its pool.
func putReader(br *bufio.Reader) {
	br.Reset(nil)
	srvReaders.Put(br)
}

// serveRequest runs ServeHTTP on req. again reports whether the
// connection may serve another request; hijacked that the handler took it.
func (sc *srvConn) serveRequest(req *http.Request, st *ServerSettings) (again, hijacked bool) {
	ctx, cancel := context.WithCancel(sc.ctx)
	defer cancel()
	req = req.WithContext(ctx)
	w := &srvResponse{sc: sc, req: req, cl: -1}
	watch := req.Method != http.MethodConnect
	if watch {
		sc.armWatch(cancel, st.ClientWatchDelay)
	}
	ok := sc.runHandler(w, req)
	if watch && !w.hijacked {
		sc.disarmWatch()
	}
	if w.hijacked {
		return false, true
	}
	if !ok {
		w.release()
		return false, false
	}
	w.finish()
	return !w.closeAfter, false
}

// runHandler calls ServeHTTP and reports whether it returned normally. A
// panic other than http.ErrAbortHandler is logged with its stack, as
// net/http does; either way the connection is then closed.
func (sc *srvConn) runHandler(w *srvResponse, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				sc.s.log.Error("panic serving request", "client", sc.remote, "panic", v, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	sc.s.handler.ServeHTTP(w, req)
	return true
}

// armWatch starts the client watch for the request cancelled by cancel:
// after delay (ClientWatchDelay) a goroutine reads from the connection, and a
// disconnect (EOF or an error) cancels the request.
func (sc *srvConn) armWatch(cancel context.CancelFunc, delay time.Duration) {
	sc.wmu.Lock()
	sc.wstate, sc.wcancel = watchArmed, cancel
	sc.wmu.Unlock()
	if sc.wtimer == nil {
		sc.wtimer = time.AfterFunc(delay, sc.watchClient)
	} else {
		sc.wtimer.Reset(delay)
	}
}

func (sc *srvConn) watchClient() {
	sc.wmu.Lock()
	if sc.wstate != watchArmed {
		sc.wmu.Unlock()
		return
	}
	sc.wstate = watchRunning
	done := make(chan struct{})
	sc.wdone = done
	cancel := sc.wcancel
	// Under the lock, so that disarmWatch's deadline comes after this one.
	_ = sc.c.SetReadDeadline(time.Time{})
	sc.wmu.Unlock()
	defer close(done)
	// A bodyless request leaves the reader alone while it is served, so
	// the watch may peek: bytes that arrive (a pipelined request) stay
	// buffered for the loop.
	sc.reader()
	if _, err := sc.br.Peek(1); err != nil && !netx.IsTimeout(err) {
		cancel()
	}
}

// disarmWatch stops the client watch and, if it is reading, interrupts
// the read and waits for it to end.
func (sc *srvConn) disarmWatch() {
	sc.wtimer.Stop()
	sc.wmu.Lock()
	running := sc.wstate == watchRunning
	sc.wstate, sc.wcancel = watchOff, nil
	done := sc.wdone
	sc.wdone = nil
	if running {
		_ = sc.c.SetReadDeadline(netx.PastDeadline())
	}
	sc.wmu.Unlock()
	if running {
		<-done
		sc.dlValid = false
	}
}
