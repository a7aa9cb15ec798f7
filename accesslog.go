package fwdproxy

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/asynclog"
)

// initAccessLog puts the logger's handler behind a bounded asynchronous
// queue of size records (WithLogQueueSize). The queue's goroutine starts
// with the first record, so a Proxy that logs nothing starts none;
// Shutdown stops it.
func (p *Proxy) initAccessLog(size int) {
	p.logq = &lazyAsync{size: size}
	p.logq.setNext(p.log.Handler())
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
	rs.duration.set(d)
	var buf [20]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", r.Method),
		slog.String("target", targetOf(r)),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Any("duration_s", &rs.duration),
		slog.String("upstream", addrString(rs.upAddr)),
		slog.String("client", r.RemoteAddr),
		slog.String("user", rs.userName(ctx)),
	)
	if ua := r.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		attrs = append(attrs, slog.String("user_agent", ua[0]))
	}
	if r.Method != "CONNECT" && r.URL.IsAbs() {
		attrs = append(attrs, slog.String("url", r.URL.Redacted()))
	}
	if rs.via != "" {
		attrs = append(attrs, slog.String("via", rs.via)) // the upstream proxy (via.go)
	}
	if rs.intercepted {
		attrs = append(attrs, slog.Int64("requests", rs.requests))
	}
	errKind := rs.errKind
	if f := rs.failure; f != nil {
		if errKind == "" {
			errKind = kindName(f.Kind) // a failure after the response began
		}
		attrs = append(attrs, slog.String("reason", f.Reason))
		if f.Err != nil {
			attrs = append(attrs, slog.String("cause", f.Err.Error()))
		}
	}
	if errKind != "" {
		attrs = append(attrs, slog.String("error", errKind))
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

// addrString is a's String, or "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// durationSeconds is the access record's duration: a decimal number of seconds
// with microsecond resolution, such as 0.000073, that slog's text and JSON
// handlers both write as a plain number. slog.Float64 would not do: the
// text handler formats floats with strconv's 'g' format, which writes the
// durations of fast requests in exponent form (7.3e-05), and
// slog.Duration is a Go string in text (73.469µs) and nanoseconds in JSON.
// So the value is logged as an Any: the text handler writes MarshalText,
// the JSON handler the JSON number of MarshalJSON, other handlers String.
// The text is formatted once by set, before the record is logged, into the
// value itself (a field of reqState), so that the handlers only read it
// (a handler may format one record on several goroutines) and logging a
// pointer to it allocates nothing.
type durationSeconds struct {
	n   int
	buf [24]byte
}

// set formats d, rounded to the microsecond (negative as zero).
func (s *durationSeconds) set(d time.Duration) {
	us := int64(0)
	if d > 0 {
		us = int64((d + 500*time.Nanosecond) / time.Microsecond)
	}
	b := strconv.AppendInt(s.buf[:0], us/1e6, 10)
	frac := us % 1e6
	b = append(b, '.')
	for div := int64(1e5); div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	s.n = len(b)
}

func (s *durationSeconds) text() []byte { return s.buf[:s.n:s.n] }

// MarshalText is what slog's text handler writes.
func (s *durationSeconds) MarshalText() ([]byte, error) { return s.text(), nil }

// MarshalJSON is what slog's JSON handler writes: a JSON number.
func (s *durationSeconds) MarshalJSON() ([]byte, error) { return s.text(), nil }

func (s *durationSeconds) String() string { return string(s.text()) }

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

// lazyAsync is a slog.Handler that starts an asynclog.Handler on the first
// record it handles, and writes each record to next, the handler of the
// logger in force (WithLogger), which Reload may replace (setNext). The
// queue is the Proxy's, whatever the logger: records already queued are
// written to the logger they were logged for, and the queue's size
// (WithLogQueueSize) cannot change.
type lazyAsync struct {
	next atomic.Pointer[logTarget]
	size int

	h      atomic.Pointer[asynclog.Handler]
	mu     sync.Mutex
	closed bool
	late   atomic.Uint64 // records that came after close, before any start
}

// logTarget is a next handler with its handler on the shared queue, made
// on first use.
type logTarget struct {
	next  slog.Handler
	async atomic.Pointer[asynclog.Handler]
}

// setNext makes next the handler records go to from now on.
func (l *lazyAsync) setNext(next slog.Handler) { l.next.Store(&logTarget{next: next}) }

// get returns the running handler for t, starting the queue if need be;
// nil once closed without ever having started.
func (l *lazyAsync) get(t *logTarget) *asynclog.Handler {
	if h := t.async.Load(); h != nil {
		return h
	}
	h := l.h.Load()
	if h == nil {
		l.mu.Lock()
		if h = l.h.Load(); h == nil && !l.closed {
			h = asynclog.New(t.next, l.size)
			l.h.Store(h)
		}
		l.mu.Unlock()
		if h == nil {
			return nil
		}
	}
	th := h.To(t.next)
	if !t.async.CompareAndSwap(nil, th) {
		th = t.async.Load()
	}
	return th
}

// Enabled asks next, without starting anything.
func (l *lazyAsync) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Load().next.Enabled(ctx, level)
}

// Handle queues r for next, or drops and counts it.
func (l *lazyAsync) Handle(ctx context.Context, r slog.Record) error {
	t := l.next.Load()
	if !t.next.Enabled(ctx, r.Level) {
		return nil // a record of a level the logger took over by a Reload does not log
	}
	if h := l.get(t); h != nil {
		return h.Handle(ctx, r)
	}
	l.late.Add(1)
	return nil
}

// WithAttrs and WithGroup derive from the running handler of the logger in
// force, so that derived handlers share the queue (and keep that logger).
func (l *lazyAsync) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h := l.get(l.next.Load()); h != nil {
		return h.WithAttrs(attrs)
	}
	return slog.DiscardHandler
}

func (l *lazyAsync) WithGroup(name string) slog.Handler {
	if h := l.get(l.next.Load()); h != nil {
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
