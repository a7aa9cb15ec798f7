package fwdproxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/asynclog"
)

// WithLogQueueSize sets how many log records may wait for the logger's
// handler. Records logged while the queue is full are dropped and counted
// (Stats.LogDropped): a slow log never makes a request wait. The default is
// 1024.
func WithLogQueueSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return errors.New("WithLogQueueSize: size must be at least 1")
		}
		c.logQueueSize = n
		return nil
	}
}

// defaultLogQueueSize is the log queue length without WithLogQueueSize.
const defaultLogQueueSize = 1024

// initAccessLog puts the logger's handler behind a bounded asynchronous
// queue. The queue's goroutine starts with the first record, so a Proxy
// that logs nothing starts none; Shutdown stops it.
func (p *Proxy) initAccessLog() {
	size := p.cfg.logQueueSize
	if size == 0 {
		size = defaultLogQueueSize
	}
	p.logq = &lazyAsync{next: p.log.Handler(), size: size}
	p.log = slog.New(p.logq)
}

// accessLogOn reports whether access-log records would be written.
func (p *Proxy) accessLogOn(ctx context.Context) bool {
	return p.log.Enabled(ctx, slog.LevelInfo)
}

// logAccess writes the access-log record of a request or tunnel.
func (p *Proxy) logAccess(ctx context.Context, rs *reqState, status int, d time.Duration) {
	r := rs.req
	var in int64
	if rs.body != nil {
		in = rs.body.n.Load()
	}
	out := rs.bytesOut
	msg := "request"
	if rs.tunnel {
		msg = "tunnel"
		in, out = rs.tunUp, rs.tunDown
	}
	var buf [16]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", r.Method),
		slog.String("target", targetOf(r)),
		slog.Int("status", status),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Duration("duration", d),
		slog.String("upstream", rs.upstream),
		slog.String("client", r.RemoteAddr),
		slog.String("user", rs.userName(ctx)),
	)
	if r.Method != "CONNECT" && r.URL.IsAbs() {
		attrs = append(attrs, slog.String("url", r.URL.Redacted()))
	}
	if rs.intercepted {
		attrs = append(attrs, slog.Int64("requests", rs.requests))
	}
	if rs.errKind != "" {
		attrs = append(attrs, slog.String("error", rs.errKind))
	}
	if rs.span != nil {
		if sc := rs.span.SpanContext(); sc.IsValid() {
			attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
		}
	}
	if rs.capture != nil {
		attrs = append(attrs, rs.capture.attrs(rs.rw.Header())...)
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// logDropped is the number of log records dropped so far.
func (p *Proxy) logDropped() uint64 {
	if p.logq == nil {
		return 0
	}
	return p.logq.dropped()
}

// closeAccessLog writes out the queued records, waiting until ctx is done
// at most, and stops the queue's goroutine.
func (p *Proxy) closeAccessLog(ctx context.Context) error {
	if p.logq == nil {
		return nil
	}
	return p.logq.close(ctx)
}

// lazyAsync is a slog.Handler that starts an asynclog.Handler over next on
// the first record it handles.
type lazyAsync struct {
	next slog.Handler
	size int

	h      atomic.Pointer[asynclog.Handler]
	mu     sync.Mutex
	closed bool
	late   atomic.Uint64 // records that came after close, before any start
}

// get returns the running handler, starting it if need be; nil once closed
// without ever having started.
func (l *lazyAsync) get() *asynclog.Handler {
	if h := l.h.Load(); h != nil {
		return h
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.h.Load(); h != nil || l.closed {
		return h
	}
	h := asynclog.New(l.next, l.size)
	l.h.Store(h)
	return h
}

// Enabled asks next, without starting anything.
func (l *lazyAsync) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Enabled(ctx, level)
}

// Handle queues r, or drops and counts it.
func (l *lazyAsync) Handle(ctx context.Context, r slog.Record) error {
	if h := l.get(); h != nil {
		return h.Handle(ctx, r)
	}
	l.late.Add(1)
	return nil
}

// WithAttrs and WithGroup derive from the running handler, so that derived
// handlers share its queue.
func (l *lazyAsync) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h := l.get(); h != nil {
		return h.WithAttrs(attrs)
	}
	return slog.DiscardHandler
}

func (l *lazyAsync) WithGroup(name string) slog.Handler {
	if h := l.get(); h != nil {
		return h.WithGroup(name)
	}
	return slog.DiscardHandler
}

func (l *lazyAsync) dropped() uint64 {
	n := l.late.Load()
	if h := l.h.Load(); h != nil {
		n += h.Dropped()
	}
	return n
}

func (l *lazyAsync) close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	h := l.h.Load()
	l.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.Close(ctx)
}

// userName is the authenticated user of the request: the one admit found,
// or the one its context carried in (interception).
func (rs *reqState) userName(ctx context.Context) string {
	if rs.user != "" {
		return rs.user
	}
	return authUser(ctx)
}
