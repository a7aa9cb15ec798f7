package netx

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// StreamConn is an HTTP/2 CONNECT stream (RFC 9113 §8.5), as the handler
// of the CONNECT sees it, as a net.Conn: Read reads the request body,
// Write writes the response body and flushes it, Close closes the request
// body. It has no CloseWrite: the response ends when the handler returns.
//
// Reads cost nothing beyond the body's own until a read deadline is set:
// a tunnel, which watches idleness by a timer (and so never sets one),
// reads the body directly. A read deadline needs more, because the
// stream's own ends the stream when it expires, while crypto/tls and
// net/http set one in the past to stop a read (before each request and on
// Hijack), and a peek at the client's first bytes sets one, and all of
// them read on afterwards. So from the first SetReadDeadline on, a
// goroutine reads the body ahead, one chunk at a time into two buffers it
// reuses, and Read waits for a chunk or the deadline. A Read already
// waiting when the first deadline is set is not interrupted by it.
type StreamConn struct {
	body          io.ReadCloser
	w             http.ResponseWriter
	rc            *http.ResponseController
	local, remote net.Addr

	readMu sync.Mutex // held by whoever reads body: Read until readAhead starts, then readAhead

	mu       sync.Mutex    // guards ahead, deadline and changed
	ahead    bool          // readAhead runs: Read takes chunks
	deadline time.Time     // the read deadline
	changed  chan struct{} // closed when the deadline changes

	chunks    chan readResult // from readAhead, unbuffered: a chunk is taken only once the last is used
	stop      chan struct{}   // closed by Close
	closeOnce sync.Once
	left      []byte // the rest of the last chunk, for the next Read
	err       error  // the body's read error, once reached
}

// readResult is one read of the body.
type readResult struct {
	data []byte
	err  error
}

// streamChunk is the size of readAhead's buffers: HTTP/2's default frame
// size.
const streamChunk = 16 << 10

// NewStreamConn returns the stream of an HTTP/2 CONNECT whose request body
// is body and whose ResponseWriter is w, once the handler has answered
// 200 and flushed. local is the server's address (nil when unknown) and
// remote the client's, as in http.Request.RemoteAddr.
func NewStreamConn(body io.ReadCloser, w http.ResponseWriter, local net.Addr, remote string) *StreamConn {
	if local == nil {
		local = stringAddr("")
	}
	return &StreamConn{body: body, w: w, rc: http.NewResponseController(w), local: local, remote: stringAddr(remote),
		stop: make(chan struct{})}
}

// Read implements io.Reader.
func (s *StreamConn) Read(b []byte) (int, error) {
	s.mu.Lock()
	ahead := s.ahead
	s.mu.Unlock()
	if !ahead {
		s.readMu.Lock()
		s.mu.Lock()
		ahead = s.ahead
		s.mu.Unlock()
		if !ahead {
			n, err := s.body.Read(b)
			s.readMu.Unlock()
			return n, err
		}
		s.readMu.Unlock()
	}
	if len(s.left) == 0 && s.err == nil {
		if err := s.await(); err != nil {
			return 0, err
		}
	}
	if len(s.left) > 0 {
		n := copy(b, s.left)
		s.left = s.left[n:]
		return n, nil
	}
	return 0, s.err
}

// await waits for the next chunk until the read deadline.
func (s *StreamConn) await() error {
	for {
		s.mu.Lock()
		deadline, changed := s.deadline, s.changed
		s.mu.Unlock()
		var expired <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			expired = t.C
		}
		select {
		case res := <-s.chunks:
			s.left, s.err = res.data, res.err
			return nil
		case <-expired:
			return os.ErrDeadlineExceeded
		case <-changed:
		case <-s.stop:
			return net.ErrClosed
		}
	}
}

// readAhead reads the body into its two buffers in turn: the chunks channel
// is unbuffered, so a buffer is filled again only once Read has taken the
// chunk after it, which it does once it is done with this one.
func (s *StreamConn) readAhead() {
	s.readMu.Lock() // a Read that was already waiting on the body is done first
	defer s.readMu.Unlock()
	var bufs [2][streamChunk]byte
	for i := 0; ; i ^= 1 {
		n, err := s.body.Read(bufs[i][:])
		select {
		case s.chunks <- readResult{bufs[i][:n], err}:
		case <-s.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Write implements io.Writer: the bytes go out at once.
func (s *StreamConn) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

// Close implements io.Closer: it closes the request body and stops the
// reading ahead.
func (s *StreamConn) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	return s.body.Close()
}

// LocalAddr implements net.Conn.
func (s *StreamConn) LocalAddr() net.Addr { return s.local }

// RemoteAddr implements net.Conn.
func (s *StreamConn) RemoteAddr() net.Addr { return s.remote }

// SetDeadline implements net.Conn.
func (s *StreamConn) SetDeadline(t time.Time) error {
	return errors.Join(s.SetReadDeadline(t), s.SetWriteDeadline(t))
}

// SetReadDeadline implements net.Conn; the first call starts the reading
// ahead that deadlines need.
func (s *StreamConn) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ahead {
		s.ahead = true
		s.chunks = make(chan readResult)
		s.changed = make(chan struct{})
		go s.readAhead()
	}
	s.deadline = t
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// SetWriteDeadline implements net.Conn with the stream's write deadline.
func (s *StreamConn) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

// stringAddr is a net.Addr known only as text.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
