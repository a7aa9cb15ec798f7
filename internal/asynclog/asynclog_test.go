package asynclog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// funcHandler is a next handler that is enabled at every level and handles
// records with itself.
type funcHandler func(context.Context, slog.Record) error

func (f funcHandler) Enabled(context.Context, slog.Level) bool        { return true }
func (f funcHandler) Handle(ctx context.Context, r slog.Record) error { return f(ctx, r) }
func (f funcHandler) WithAttrs([]slog.Attr) slog.Handler              { return f }
func (f funcHandler) WithGroup(string) slog.Handler                   { return f }

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// lines decodes the JSON lines written so far, without their time keys.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(b.b.Bytes()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decoding %q: %v", b.b.Bytes(), err)
		}
		delete(m, slog.TimeKey)
		out = append(out, m)
	}
	return out
}

// closeNow closes h, failing t if the queue does not drain in time.
func closeNow(t *testing.T, h *Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// within runs f and fails t if it has not returned after d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func record(msg string, attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	return r
}

func TestHandleNeverBlocksOnStuckWriter(t *testing.T) {
	pr, pw := io.Pipe() // nobody reads: every write blocks
	h := New(slog.NewJSONHandler(pw, nil), 16)
	const n = 5000
	within(t, 5*time.Second, "Handle with a stuck writer", func() {
		for i := range n {
			if err := h.Handle(t.Context(), record("m", slog.Int("i", i))); err != nil {
				t.Errorf("Handle: %v", err)
			}
		}
	})
	// The goroutine holds one record in the stuck write and 16 are queued.
	if got, want := h.Dropped(), uint64(n-16-1); got < want {
		t.Errorf("Dropped = %d, want at least %d", got, want)
	}
	pr.Close() // the stuck write and the queued ones now fail
	closeNow(t, h)
	if got := h.Written() + h.Dropped() + h.Failed(); got != n {
		t.Errorf("Written+Dropped+Failed = %d, want %d", got, n)
	}
	if h.Failed() == 0 {
		t.Error("Failed = 0, want the writes to the closed pipe counted")
	}
}

func TestOrderPreservedWithDrops(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var got []int64
	h := New(funcHandler(func(_ context.Context, r slog.Record) error {
		<-gate
		r.Attrs(func(a slog.Attr) bool {
			mu.Lock()
			got = append(got, a.Value.Int64())
			mu.Unlock()
			return true
		})
		return nil
	}), 10)
	for i := range 100 {
		h.Handle(t.Context(), record("m", slog.Int("i", i)))
	}
	close(gate)
	closeNow(t, h)
	if h.Written() != uint64(len(got)) || h.Written()+h.Dropped() != 100 {
		t.Fatalf("Written %d, Dropped %d, next saw %d; want Written+Dropped = 100 and next to see Written",
			h.Written(), h.Dropped(), len(got))
	}
	if len(got) < 10 {
		t.Errorf("only %d records written, want at least the 10 queued", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("written out of order: %v", got)
		}
	}
}

func TestDerivedHandlers(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want map[string]any
	}{
		{
			"plain",
			func(l *slog.Logger) { l.Info("m", "k", "v") },
			map[string]any{"level": "INFO", "msg": "m", "k": "v"},
		},
		{
			"with attrs",
			func(l *slog.Logger) { l.With("a", 1).Info("m", "k", "v") },
			map[string]any{"level": "INFO", "msg": "m", "a": 1.0, "k": "v"},
		},
		{
			"with group",
			func(l *slog.Logger) { l.WithGroup("g").Warn("m", "k", "v") },
			map[string]any{"level": "WARN", "msg": "m", "g": map[string]any{"k": "v"}},
		},
		{
			"attrs, group, attrs, nested group",
			func(l *slog.Logger) {
				l.With("a", 1).WithGroup("g").With("b", 2).WithGroup("h").Info("m", "k", "v")
			},
			map[string]any{"level": "INFO", "msg": "m", "a": 1.0,
				"g": map[string]any{"b": 2.0, "h": map[string]any{"k": "v"}}},
		},
		{
			"empty group and no attrs are no-ops",
			func(l *slog.Logger) { l.WithGroup("").With().Info("m", "k", "v") },
			map[string]any{"level": "INFO", "msg": "m", "k": "v"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf lockedBuffer
			h := New(slog.NewJSONHandler(&buf, nil), 8)
			tt.log(slog.New(h))
			closeNow(t, h)
			lines := buf.lines(t)
			if len(lines) != 1 || !reflect.DeepEqual(lines[0], tt.want) {
				t.Errorf("logged %v, want [%v]", lines, tt.want)
			}
		})
	}
}

func TestDerivedHandlersShareQueue(t *testing.T) {
	var buf lockedBuffer
	h := New(slog.NewJSONHandler(&buf, nil), 64)
	l := slog.New(h)
	a, g := l.With("who", "a"), l.WithGroup("g")
	for i := range 3 {
		l.Info("root", "i", i)
		a.Info("a", "i", i)
		g.Info("g", "i", i)
	}
	closeNow(t, h)
	var msgs []any
	for _, line := range buf.lines(t) {
		msgs = append(msgs, line["msg"])
	}
	want := []any{"root", "a", "g", "root", "a", "g", "root", "a", "g"}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("messages %v, want %v", msgs, want)
	}
	if h.Written() != 9 {
		t.Errorf("Written = %d, want 9 counted on the root handler", h.Written())
	}
	if err := a.Handler().(*Handler).Close(t.Context()); err != nil {
		t.Errorf("Close of a derived handler after the root's: %v", err)
	}
}

// TestTo: a handler made by To writes to its own next handler through the
// queue it shares, and records keep the handler they were queued for.
func TestTo(t *testing.T) {
	var first, second lockedBuffer
	h := New(slog.NewJSONHandler(&first, nil), 64)
	to := h.To(slog.NewJSONHandler(&second, nil))
	for i := range 3 {
		_ = h.Handle(t.Context(), record("first", slog.Int("i", i)))
		_ = to.Handle(t.Context(), record("second", slog.Int("i", i)))
	}
	closeNow(t, h)
	for _, c := range []struct {
		buf  *lockedBuffer
		want string
	}{{&first, "first"}, {&second, "second"}} {
		lines := c.buf.lines(t)
		if len(lines) != 3 {
			t.Fatalf("%s handler got %d records, want 3", c.want, len(lines))
		}
		for _, line := range lines {
			if line["msg"] != c.want {
				t.Errorf("%s handler got %v", c.want, line)
			}
		}
	}
	if h.Written() != 6 || to.Written() != 6 {
		t.Errorf("Written = %d and %d, want 6 counted on the shared queue", h.Written(), to.Written())
	}
	if err := to.Handle(t.Context(), record("late")); err != nil || to.Dropped() != 1 {
		t.Errorf("after Close: Handle %v, Dropped %d; want a drop", err, to.Dropped())
	}
}

// counter is a LogValuer that logs the value n held when it was resolved.
type counter struct{ n *atomic.Int64 }

func (c counter) LogValue() slog.Value { return slog.Int64Value(c.n.Load()) }

func TestLogValuersResolvedAtHandle(t *testing.T) {
	var buf lockedBuffer
	gate := make(chan struct{})
	next := slog.NewJSONHandler(&buf, nil)
	h := New(funcHandler(func(ctx context.Context, r slog.Record) error {
		<-gate
		return next.Handle(ctx, r)
	}), 8)
	var n atomic.Int64
	n.Store(1)
	l := slog.New(h)
	l.Info("m", "top", counter{&n}, slog.Group("g", "inner", counter{&n}, "plain", "p"))
	l.Info("m", "more", 1, "b", 2, "c", 3, "d", 4, "e", 5, "late", counter{&n}) // beyond the record's inline attrs
	n.Store(2)
	close(gate)
	closeNow(t, h)
	want := []map[string]any{
		{"level": "INFO", "msg": "m", "top": 1.0, "g": map[string]any{"inner": 1.0, "plain": "p"}},
		{"level": "INFO", "msg": "m", "more": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0, "late": 1.0},
	}
	if got := buf.lines(t); !reflect.DeepEqual(got, want) {
		t.Errorf("logged %v, want %v", got, want)
	}
}

func TestCloseDrains(t *testing.T) {
	gate := make(chan struct{})
	var seen atomic.Int64
	h := New(funcHandler(func(context.Context, slog.Record) error {
		<-gate
		seen.Add(1)
		return nil
	}), 100)
	for range 50 {
		h.Handle(t.Context(), record("m"))
	}
	time.AfterFunc(50*time.Millisecond, func() { close(gate) })
	closeNow(t, h)
	if seen.Load() != 50 || h.Written() != 50 || h.Dropped() != 0 {
		t.Errorf("next saw %d, Written %d, Dropped %d; want 50, 50, 0", seen.Load(), h.Written(), h.Dropped())
	}
}

func TestCloseGivesUpAtDeadline(t *testing.T) {
	gate, started := make(chan struct{}), make(chan struct{}, 50)
	h := New(funcHandler(func(context.Context, slog.Record) error {
		started <- struct{}{}
		<-gate
		return nil
	}), 100)
	for range 50 {
		h.Handle(t.Context(), record("m"))
	}
	<-started // the goroutine is stuck writing the first record
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a 50ms deadline", d)
	}
	h.Handle(t.Context(), record("after close")) // must neither panic nor queue

	close(gate) // the goroutine finishes its record and drops the rest
	closeNow(t, h)
	if h.Written() != 1 || h.Dropped() != 50 {
		t.Errorf("Written %d, Dropped %d; want 1 (in hand at the deadline), 50", h.Written(), h.Dropped())
	}
}

func TestHandleAfterClose(t *testing.T) {
	var buf lockedBuffer
	h := New(slog.NewJSONHandler(&buf, nil), 8)
	derived := h.WithGroup("g")
	closeNow(t, h)
	closeNow(t, h) // twice is fine
	for _, hh := range []slog.Handler{h, derived} {
		if err := hh.Handle(t.Context(), record("late")); err != nil {
			t.Errorf("Handle after Close: %v", err)
		}
	}
	if h.Dropped() != 2 || buf.b.Len() != 0 {
		t.Errorf("Dropped %d, output %q; want 2 and nothing", h.Dropped(), buf.b.String())
	}
}

func TestNextFailures(t *testing.T) {
	tests := []struct {
		name string
		next funcHandler
	}{
		{"error", func(context.Context, slog.Record) error { return errors.New("disk full") }},
		{"panic", func(context.Context, slog.Record) error { panic("bug in handler") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fail := true
			h := New(funcHandler(func(ctx context.Context, r slog.Record) error {
				if fail {
					fail = false
					return tt.next(ctx, r)
				}
				return nil
			}), 8)
			h.Handle(t.Context(), record("fails"))
			h.Handle(t.Context(), record("written"))
			closeNow(t, h)
			if h.Failed() != 1 || h.Written() != 1 {
				t.Errorf("Failed %d, Written %d; want 1, 1", h.Failed(), h.Written())
			}
		})
	}
}

func TestContextPassedWithoutCancel(t *testing.T) {
	type key struct{}
	var got context.Context
	h := New(funcHandler(func(ctx context.Context, _ slog.Record) error {
		got = ctx
		return nil
	}), 8)
	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), key{}, "span"))
	cancel()
	h.Handle(ctx, record("m"))
	closeNow(t, h)
	if got == nil || got.Value(key{}) != "span" || got.Err() != nil {
		t.Errorf("next got ctx %v, want the caller's values without its cancellation", got)
	}

	got = nil
	h = New(funcHandler(func(ctx context.Context, _ slog.Record) error {
		got = ctx
		return nil
	}), 8)
	//lint:ignore SA1012 a nil context must not panic
	h.Handle(nil, record("m"))
	closeNow(t, h)
	if got == nil || h.Written() != 1 {
		t.Errorf("with a nil context: next got %v, Written %d; want a context, 1", got, h.Written())
	}
}

func TestEnabledDelegates(t *testing.T) {
	h := New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}), 8)
	defer closeNow(t, h)
	for _, tt := range []struct {
		level slog.Level
		want  bool
	}{{slog.LevelDebug, false}, {slog.LevelInfo, false}, {slog.LevelWarn, true}, {slog.LevelError, true}} {
		if got := h.Enabled(t.Context(), tt.level); got != tt.want {
			t.Errorf("Enabled(%v) = %v, want %v", tt.level, got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	h := New(nil, 0)
	if got := cap(h.q.ch); got != DefaultQueueSize {
		t.Errorf("queue size %d, want %d", got, DefaultQueueSize)
	}
	h.Handle(t.Context(), record("m"))
	closeNow(t, h)
	if h.Written() != 1 {
		t.Errorf("Written = %d with a nil next, want 1 (discarded)", h.Written())
	}
}

func TestConcurrentHandleAndClose(t *testing.T) {
	const goroutines, each = 8, 2000
	var seen atomic.Uint64
	h := New(funcHandler(func(context.Context, slog.Record) error {
		seen.Add(1)
		return nil
	}), 64)
	l := slog.New(h)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			lg := l.With("g", g)
			for i := range each {
				lg.Info("m", "i", i)
			}
		})
	}
	time.Sleep(time.Millisecond)
	wg.Go(func() { // Close while others still log
		if err := h.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wg.Wait()
	closeNow(t, h)
	if got := h.Written() + h.Dropped(); got != goroutines*each {
		t.Errorf("Written+Dropped = %d, want %d", got, goroutines*each)
	}
	if seen.Load() != h.Written() {
		t.Errorf("next saw %d records, Written = %d", seen.Load(), h.Written())
	}
}

func TestHandleAllocations(t *testing.T) {
	h := New(funcHandler(func(context.Context, slog.Record) error { return nil }), 1<<16)
	defer closeNow(t, h)
	r := record("m", slog.String("k", "v"), slog.Int("n", 1))
	if n := testing.AllocsPerRun(1000, func() { h.Handle(t.Context(), r) }); n != 0 {
		t.Errorf("Handle allocates %v times, want 0", n)
	}
}

func BenchmarkHandle(b *testing.B) {
	discard := funcHandler(func(context.Context, slog.Record) error { return nil })
	r := record("request", slog.String("method", "GET"), slog.Int("status", 200), slog.Duration("took", time.Millisecond))
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		h := New(discard, DefaultQueueSize)
		defer h.Close(ctx)
		for b.Loop() {
			h.Handle(ctx, r)
		}
		b.ReportMetric(float64(h.Dropped())/float64(b.N), "dropped/op")
	})
	b.Run("parallel", func(b *testing.B) {
		h := New(discard, DefaultQueueSize)
		defer h.Close(ctx)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Handle(ctx, r)
			}
		})
		b.ReportMetric(float64(h.Dropped())/float64(b.N), "dropped/op")
	})
	b.Run("full", func(b *testing.B) {
		gate := make(chan struct{})
		h := New(funcHandler(func(context.Context, slog.Record) error { <-gate; return nil }), 1)
		defer h.Close(ctx)
		defer close(gate)
		for b.Loop() {
			h.Handle(ctx, r)
		}
	})
	b.Run("logger", func(b *testing.B) {
		h := New(discard, DefaultQueueSize)
		defer h.Close(ctx)
		l := slog.New(h)
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelInfo, "request", slog.String("method", "GET"), slog.Int("status", 200))
		}
	})
}

func TestRedactedHeaderCapturedAtLogCall(t *testing.T) {
	// The contract redact.HeaderAttr relies on: the header may change as soon
	// as the log call returns.
	var buf lockedBuffer
	gate := make(chan struct{})
	next := slog.NewJSONHandler(&buf, nil)
	h := New(funcHandler(func(ctx context.Context, r slog.Record) error {
		<-gate
		return next.Handle(ctx, r)
	}), 8)
	hdr := http.Header{"Authorization": {"Bearer abc"}, "Accept": {"*/*"}}
	slog.New(h).Info("m", redact.HeaderAttr("hdr", hdr))
	hdr.Set("Accept", "changed")
	hdr.Del("Authorization")
	close(gate)
	closeNow(t, h)
	want := []map[string]any{{"level": "INFO", "msg": "m",
		"hdr": map[string]any{"Accept": "*/*", "Authorization": redact.Redacted}}}
	if got := buf.lines(t); !reflect.DeepEqual(got, want) {
		t.Errorf("logged %v, want %v", got, want)
	}
}
