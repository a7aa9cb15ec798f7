// Package asynclog provides a [slog.Handler] that never makes its caller
// wait for log I/O: records go into a bounded queue that one goroutine
// writes to the next handler, and a record that finds the queue full is
// dropped and counted.
package asynclog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueueSize is the queue length used when [New] is given less than 1.
// The queue takes 320 bytes a record, whether full or not.
const DefaultQueueSize = 1024

// Handler queues records for a background goroutine that hands them to the
// next handler, in the order they were queued. Handlers derived with
// WithAttrs and WithGroup share the queue, the goroutine and the counters of
// the handler they come from. Call [Handler.Close] to stop the goroutine.
// A record logged while the goroutine is idle is written at once; under load
// the goroutine writes what has gathered every few milliseconds (see
// restAfterDrain), so that records do not each wake it.
//
// Attribute values that are [slog.LogValuer]s are resolved by Handle, on the
// caller's goroutine, so that they capture state as of the log call; other
// values, such as slices or maps passed to [slog.Any], are kept by reference
// and must not be changed after the call.
//
// The next handler receives the caller's context without its cancellation
// (see [context.WithoutCancel]): the values, such as a span, are kept, but a
// request that has ended does not stop its record from being written.
type Handler struct {
	next slog.Handler
	q    *queue
}

// queue is shared by a handler and the handlers derived from it.
type queue struct {
	mu      sync.RWMutex // Handle holds it for reading while it sends, Close for writing while it closes ch
	closed  bool
	ch      chan entry
	quit    chan struct{} // closed when Close gives up waiting: the rest is dropped
	quitOne sync.Once
	done    chan struct{} // closed when the goroutine has ended

	written, dropped, failed atomic.Uint64
}

// entry is one queued record with the handler that is to write it.
type entry struct {
	ctx  context.Context
	next slog.Handler
	r    slog.Record
}

// New returns a handler that queues up to queueSize records for next, and
// starts its goroutine. A queueSize below 1 means [DefaultQueueSize]; a nil
// next discards every record.
func New(next slog.Handler, queueSize int) *Handler {
	if next == nil {
		next = slog.DiscardHandler
	}
	if queueSize < 1 {
		queueSize = DefaultQueueSize
	}
	q := &queue{
		ch:   make(chan entry, queueSize),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go q.run()
	return &Handler{next: next, q: q}
}

// Enabled reports whether the next handler handles records at level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle queues a copy of r, or drops and counts it when the queue is full or
// the handler is closed. It never waits for I/O and always returns nil.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	q := h.q
	if len(q.ch) == cap(q.ch) { // full: spare the work of detach
		q.dropped.Add(1)
		return nil
	}
	e := entry{ctx: ctx, next: h.next, r: detach(r)} // outside the lock: a LogValuer may log
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.dropped.Add(1)
		return nil
	}
	select {
	case q.ch <- e:
	default:
		q.dropped.Add(1)
	}
	return nil
}

// WithAttrs returns a handler that adds attrs to every record and shares
// h's queue.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &Handler{next: h.next.WithAttrs(attrs), q: h.q}
}

// WithGroup returns a handler that puts later attributes in the named group
// and shares h's queue.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{next: h.next.WithGroup(name), q: h.q}
}

// To returns a handler that writes to next, instead of h's next handler,
// through h's queue: it shares the queue, the goroutine and the counters,
// as the handlers WithAttrs derives do. Records keep the handler they were
// queued for, so those queued through h before are still written to h's.
func (h *Handler) To(next slog.Handler) *Handler {
	if next == nil {
		next = slog.DiscardHandler
	}
	return &Handler{next: next, q: h.q}
}

// Close stops the handler and every handler that shares its queue: records
// handled from now on are dropped and counted. It waits until the queued
// records are written or ctx is done; then the records still queued are
// dropped, and the goroutine ends once the next handler returns from the
// record it is writing. Close returns ctx.Err() if it stopped waiting early,
// and may be called more than once.
func (h *Handler) Close(ctx context.Context) error {
	q := h.q
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		select {
		case <-q.done: // both ready: it did drain
			return nil
		default:
		}
		q.quitOne.Do(func() { close(q.quit) })
		return ctx.Err()
	}
}

// Written returns the number of records the next handler accepted.
func (h *Handler) Written() uint64 { return h.q.written.Load() }

// Dropped returns the number of records dropped because the queue was full,
// the handler was closed, or Close stopped waiting for them.
func (h *Handler) Dropped() uint64 { return h.q.dropped.Load() }

// Failed returns the number of records for which the next handler returned
// an error or panicked.
func (h *Handler) Failed() uint64 { return h.q.failed.Load() }

// restAfterDrain is how long the goroutine rests after it has emptied the
// queue, before it waits for the next record. Without the rest, under steady
// load every record would wake the goroutine on its own (a park and a wake-up
// per record, often with an idle OS thread woken too); with it the records
// that gathered are written in one pass. Records logged meanwhile wait in the
// queue, so the queue must hold what arrives in this time (1024 records is
// 50 ms at 20,000 records/s).
const restAfterDrain = 5 * time.Millisecond

// run writes queued records until Close has closed the queue and it is empty.
func (q *queue) run() {
	defer close(q.done)
	rest := time.NewTimer(restAfterDrain)
	rest.Stop()
	for {
		e, ok := <-q.ch // idle: the first record wakes the goroutine at once
		if !ok {
			return
		}
		for ok {
			q.handle(e)
			select {
			case e, ok = <-q.ch:
				if !ok {
					return
				}
			default:
				ok = false
			}
		}
		rest.Reset(restAfterDrain)
		select {
		case <-rest.C:
		case <-q.quit: // Close gave up: drop the rest without resting
			rest.Stop()
		}
	}
}

// handle writes e, or drops it once Close has given up waiting.
func (q *queue) handle(e entry) {
	select {
	case <-q.quit:
		q.dropped.Add(1)
	default:
		if write(e) {
			q.written.Add(1)
		} else {
			q.failed.Add(1)
		}
	}
}

// write hands e to its handler and reports whether that succeeded; a panic
// counts as a failure rather than ending the process.
func write(e entry) (ok bool) {
	defer func() { _ = recover() }() // a panic leaves ok false
	ctx := context.Background()
	if e.ctx != nil {
		ctx = context.WithoutCancel(e.ctx)
	}
	return e.next.Handle(ctx, e.r) == nil
}

// detach returns a copy of r that is safe to keep: its LogValuer attributes,
// also inside groups, are resolved now. Records without any are only cloned.
func detach(r slog.Record) slog.Record {
	lazy := false
	r.Attrs(func(a slog.Attr) bool {
		lazy = needsResolve(a.Value)
		return !lazy
	})
	if !lazy {
		return r.Clone()
	}
	c := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		c.AddAttrs(resolve(a))
		return true
	})
	return c
}

// needsResolve reports whether v is, or is a group holding, a LogValuer.
func needsResolve(v slog.Value) bool {
	switch v.Kind() {
	case slog.KindLogValuer:
		return true
	case slog.KindGroup:
		for _, a := range v.Group() {
			if needsResolve(a.Value) {
				return true
			}
		}
	}
	return false
}

// resolve returns a with every LogValuer in its value resolved.
func resolve(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		group := a.Value.Group()
		resolved := make([]slog.Attr, len(group))
		for i, g := range group {
			resolved[i] = resolve(g)
		}
		a.Value = slog.GroupValue(resolved...)
	}
	return a
}
