package h1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
)

// Body is the body of a response the Transport received. It hands the
// connection back to the pool when the body has been read to its end on a
// keep-alive connection with nothing unexpected behind it, and closes it in
// every other case (body left unread, error, cancellation, Connection:
// close).
type Body struct {
	pool   *connPool
	pc     *pconn // nil once handed back or closed
	br     *bufio.Reader
	rc     io.ReadCloser // the body as http.ReadResponse framed it; nil when fastResponse did
	ctx    context.Context
	stop   func() bool // stops the cancellation watch; false if it fired
	remain int64       // Content-Length bytes left for a splice, or -1
	err    error       // why the exchange ended early, once it has
	watch  Stopper     // a watch on the connection (StopOnFinish), stopped by finish
	// The flags sit together so that a Body fits a 112-byte allocation.
	keep   bool // the exchange allows keep-alive
	eof    bool
	closed bool
}

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.pc == nil {
		// The exchange ended early and the reader went back to its pool.
		return 0, b.err
	}
	var n int
	var err error
	if b.rc != nil {
		n, err = b.rc.Read(p)
		if b.remain > 0 {
			b.remain -= int64(n)
		}
	} else {
		n, err = b.readFixed(p)
	}
	switch {
	case err == io.EOF:
		b.eof = true
		b.finish(true)
	case err != nil:
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		b.err = err
		b.finish(false)
	}
	return n, err
}

// readFixed reads a Content-Length body that fastResponse framed (rc nil)
// as net/http's body would: io.EOF with the last byte, and
// io.ErrUnexpectedEOF if the connection ends before it.
func (b *Body) readFixed(p []byte) (int, error) {
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	switch {
	case b.remain == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close implements io.Closer. A body not read to its end closes the
// connection: draining it could take any time.
func (b *Body) Close() error {
	if !b.closed {
		b.closed = true
		b.finish(false)
	}
	return nil
}

// finish ends the exchange: the connection goes back to the pool when done
// is set and nothing forbids reuse, and is closed otherwise.
func (b *Body) finish(done bool) {
	pc := b.pc
	if pc == nil {
		return
	}
	b.pc = nil
	if b.watch != nil {
		b.watch.Stop() // before the connection can be reused: no deadline from it after
	}
	reuse := b.stop() && done && b.keep && b.br.Buffered() == 0
	b.br.Reset(nil)
	h1Readers.Put(b.br)
	b.br = nil
	if reuse {
		b.pool.put(pc)
	} else {
		pc.conn.Close()
	}
}

// SpliceTo copies the rest of a Content-Length body to w when w can read
// from a reader (the server's response writer, whose ReadFrom hands an
// io.LimitedReader over a *net.TCPConn to the client connection's
// ReadFrom, which splices on Linux): first the body bytes already
// buffered, then the rest straight from the socket. ok is false, and nothing
// is done, when the body cannot be copied this way.
func (b *Body) SpliceTo(w io.Writer) (written int64, readErr, writeErr error, ok bool) {
	rf, isRF := w.(io.ReaderFrom)
	if !isRF || b.pc == nil || b.pc.tcp == nil || b.remain <= 0 || b.closed || b.eof {
		return 0, nil, nil, false
	}
	if k := int64(b.br.Buffered()); k > 0 {
		buf, _ := b.br.Peek(int(min(k, b.remain)))
		m, err := w.Write(buf)
		_, _ = b.br.Discard(m)
		written += int64(m)
		b.remain -= int64(m)
		if err != nil {
			b.err = err
			b.finish(false)
			return written, nil, err, true
		}
	}
	if b.remain > 0 {
		// Header and buffered bytes go out in one write now; without it
		// ReadFrom would first copy 512 bytes through user space (its
		// sniffing step) before it splices.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		lr := &io.LimitedReader{R: b.pc.tcp, N: b.remain}
		n, err := rf.ReadFrom(lr)
		written += n
		b.remain = lr.N
		if err != nil {
			b.err = err
			b.finish(false)
			if b.ctx.Err() != nil {
				return written, nil, b.ctx.Err(), true
			}
			// Either side may have failed; treating it as the upstream's
			// aborts the client connection, which is right in both cases.
			return written, err, nil, true
		}
		if b.remain > 0 {
			b.err = io.ErrUnexpectedEOF
			b.finish(false)
			return written, io.ErrUnexpectedEOF, nil, true
		}
	}
	b.eof = true
	b.finish(true)
	return written, nil, nil, true
}

// Stopper is a watch on a Body's connection (an idle timeout that
// interrupts a stalled read by setting a read deadline in the past, say),
// which the Body stops when its exchange ends.
type Stopper interface {
	// Stop ends the watch; it must do nothing to the connection after it
	// returns.
	Stop()
}

// Conn returns the connection the rest of the body is to be read from, and
// tcp, the same connection when it is a *net.TCPConn (whose kernel byte
// counters show the progress of a splice). It returns nil when the body
// needs no more reads from the connection: all of it is buffered, or the
// exchange has ended.
func (b *Body) Conn() (c net.Conn, tcp *net.TCPConn) {
	if b.pc == nil || b.closed || b.eof || (b.rc == nil && b.remain <= int64(b.br.Buffered())) {
		return nil, nil
	}
	return b.pc.conn, b.pc.tcp
}

// StopOnFinish makes the body stop s when its exchange ends, before the
// connection can go back to the pool, so that no deadline from s reaches
// the connection's next use. A body has one Stopper; a later call replaces
// it.
func (b *Body) StopOnFinish(s Stopper) {
	b.watch = s
}
