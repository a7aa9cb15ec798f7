package fwdproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// Body idle timeouts (WithBodyIdleTimeout): a plain request or response
// body that moves no byte for the timeout is given up, like nginx's
// client_body_timeout and proxy_read_timeout.
//
// Idleness is watched the way tunnels watch theirs (stream.go): a timer
// ticks four times per timeout and compares a progress counter, which
// reads bump with one atomic add, with its last value; nothing is reset per
// read, and a splice, which reads nothing in user space, is seen through
// the kernel's byte counters of the upstream socket. A body that is all in
// memory already (a small fast-path response) gets no watch at all.
//
//   - Request bodies (read by the upstream transport from the client's
//     server: the hand-off http.Server, a server of the user's, HTTP/2): the
//     time counts only while the transport waits in a read, so an upstream
//     that is slow to take the body is not blamed on the client. When it
//     fires, the client connection's read deadline is set in the past
//     (http.ResponseController), the pending read fails, and the client
//     gets 408 if no response has started; otherwise the upstream exchange
//     fails and the response is cut.
//   - Response bodies (from the own HTTP/1.1 client or http.Transport): the
//     upstream connection's read deadline is set in the past (own client) or
//     the body is closed (transport), the copy fails, and the client
//     connection is cut with a log line naming the upstream.

// errClientBodyIdle is the read error of a request body whose client sent
// no byte for the body idle timeout.
var errClientBodyIdle = errors.New("client sent no request body byte within the body idle timeout")

// idleWatch calls fire once, from its timer, when its progress signature
// has not changed for idle. stop prevents any later fire.
type idleWatch struct {
	idle  time.Duration
	moved atomic.Int64 // bumped by reads; any change is progress
	// With gated set, idle time accrues only while waiting > 0: a read is
	// pending.
	gated   bool
	waiting atomic.Int32
	tcp     *net.TCPConn // its kernel byte counters are progress too (splice)
	fire    func()
	fired   atomic.Bool

	mu         sync.Mutex // check against stop: no fire after stop returns
	timer      *time.Timer
	stopped    bool
	lastSig    int64
	lastActive time.Time
}

// start arms the watch.
func (w *idleWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.timer != nil {
		return
	}
	w.lastActive, w.lastSig = time.Now(), w.signature()
	w.timer = time.AfterFunc(w.tick(), w.check)
}

func (w *idleWatch) tick() time.Duration { return max(w.idle/4, 10*time.Millisecond) }

func (w *idleWatch) signature() int64 {
	sig := w.moved.Load()
	if w.tcp != nil {
		sig += tcpActivity(w.tcp)
	}
	return sig
}

// check runs on the timer; it re-arms the timer at its end, so it never
// runs concurrently with itself.
func (w *idleWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := time.Now()
	if sig := w.signature(); sig != w.lastSig || (w.gated && w.waiting.Load() == 0) {
		w.lastSig, w.lastActive = sig, now
	} else if now.Sub(w.lastActive) >= w.idle {
		w.stopped = true
		w.fired.Store(true)
		w.fire()
		return
	}
	w.timer.Reset(w.tick())
}

// Stop ends the watch; fire is not called after it returns. A nil watch
// may be stopped. An own-transport body stops its watch (h1.Stopper).
func (w *idleWatch) Stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
}

// hasFired reports whether the watch gave up on its body. A nil watch
// never fires.
func (w *idleWatch) hasFired() bool { return w != nil && w.fired.Load() }

// clientBody is the client's request body on its way upstream. It is
// watched by the body idle timeout, whose watch starts with the first read
// so that the time before the transport asks for the body (a slow dial,
// Expect: 100-continue) does not count; and it keeps the first error reading
// it, so that a failed round trip is put down to the client (400: a
// malformed chunked body, say, which net/http's server reports as a read
// error) rather than to the upstream (502).
type clientBody struct {
	io.ReadCloser
	w       idleWatch
	started bool // only the reading goroutine touches it
	err     atomic.Pointer[error]
	counted *atomic.Uint64 // Stats' request body bytes
}

// watchRequestBody wraps body so that a client that stops sending it for
// idle (the body idle timeout) has its pending read interrupted through w's
// http.ResponseController.
func watchRequestBody(idle time.Duration, w http.ResponseWriter, body io.ReadCloser) *clientBody {
	rc := http.NewResponseController(w)
	b := &clientBody{ReadCloser: body}
	b.w.idle, b.w.gated = idle, true
	b.w.fire = func() { _ = rc.SetReadDeadline(netx.PastDeadline()) }
	return b
}

// Read implements io.Reader.
func (b *clientBody) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		b.w.start()
	}
	b.w.waiting.Add(1)
	n, err := b.ReadCloser.Read(p)
	b.w.moved.Add(1)
	if n > 0 && b.counted != nil {
		b.counted.Add(uint64(n))
	}
	b.w.waiting.Add(-1)
	if err != nil {
		// Stopped at the body's end too: a deadline set after it would
		// fail the server's next read of the connection.
		b.w.Stop()
		if b.w.fired.Load() {
			err = errClientBodyIdle
		}
		if err != io.EOF && b.err.Load() == nil {
			b.err.Store(&err)
		}
	}
	return n, err
}

// Close implements io.Closer.
func (b *clientBody) Close() error {
	b.w.Stop()
	return b.ReadCloser.Close()
}

// failed returns the error reading the body, if any (b may be nil).
func (b *clientBody) failed() error {
	if b == nil {
		return nil
	}
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

// watchResponseBody starts the body idle watch (idle, the body idle
// timeout) of an upstream response body, or returns nil when the body needs
// none (it is all in memory). copyBody bumps the watch's counter as it
// copies.
func watchResponseBody(idle time.Duration, body io.ReadCloser) *idleWatch {
	if b, ok := body.(*h1.Body); ok {
		return watchH1Body(b, idle)
	}
	w := &idleWatch{idle: idle, fire: func() { _ = body.Close() }}
	w.start()
	return w
}

// watchH1Body starts the body idle watch of an own-transport body that
// still has bytes to read from the connection; the body stops it (Stop)
// before the connection can go back to the pool. The watch interrupts a
// read or splice by setting the connection's read deadline in the past.
func watchH1Body(b *h1.Body, idle time.Duration) *idleWatch {
	conn, tcp := b.Conn()
	if conn == nil {
		return nil
	}
	w := &idleWatch{idle: idle, tcp: tcp, fire: func() { _ = conn.SetReadDeadline(netx.PastDeadline()) }}
	b.StopOnFinish(w)
	w.start()
	return w
}
