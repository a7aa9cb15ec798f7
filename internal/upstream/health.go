package upstream

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// health is an upstream's passive health and request accounting. The
// fields read on every Pick and every success are atomics; a failure,
// rare, takes the mutex.
type health struct {
	down    atomic.Bool  // in back-off since a fault, until a success
	retryAt atomic.Int64 // unix ns when a down upstream may be tried again

	outstanding atomic.Int64
	requests    atomic.Uint64 // Begin calls
	successes   atomic.Uint64 // Observe(nil)
	faults      atomic.Uint64 // Observe of a fault
	refusals    atomic.Uint64 // Observe of a refusal or credential rejection

	mu          sync.Mutex
	consecutive int           // faults since the last success
	period      time.Duration // the current back-off
	lastFailure time.Time
	lastError   string
}

// Stats is a snapshot of an upstream's health and counters.
type Stats struct {
	Name string // the upstream's Name
	Kind Kind   // the upstream's protocol
	// Up is false while the upstream is in back-off after a fault.
	Up bool
	// ConsecutiveFailures counts faults since the last success.
	ConsecutiveFailures int
	// NextRetry is when a down upstream is next let through (zero when up).
	NextRetry time.Time
	// LastFailure and LastError describe the latest fault (zero and "" if none).
	LastFailure time.Time // when the latest fault was observed
	LastError   string    // its error, which names no credentials
	// Outstanding counts requests between Begin and End.
	Outstanding int64
	// Requests counts Begin calls; Successes, Failures (faults) and
	// Refusals (refused targets, rejected credentials) count outcomes
	// reported to Observe.
	Requests, Successes, Failures, Refusals uint64
}

// Begin counts a request or tunnel starting on u, for the least
// outstanding policy and Stats. Call End when it ends.
func (u *Upstream) Begin() {
	u.health.requests.Add(1)
	u.health.outstanding.Add(1)
}

// End counts the end of a request or tunnel started with Begin.
func (u *Upstream) End() { u.health.outstanding.Add(-1) }

// Outstanding returns the number of requests between Begin and End.
func (u *Upstream) Outstanding() int64 { return u.health.outstanding.Load() }

// Observe reports the outcome of an attempt to use u, for passive health:
//
//   - nil: u works; a down upstream is up again at once.
//   - a fault (an *Error whose Fault is true, a timeout, a refused, reset
//     or unreachable connection, an EOF): u is down for a back-off that
//     grows with consecutive faults (see Backoff).
//   - a refusal or a rejection of our credentials (ErrRefused, ErrAuth):
//     counted, health unchanged: u answered.
//   - a cancellation by the caller, anything else: ignored.
//
// DialTunnel and the dial that ConfigureTransport installs observe their
// own outcomes, and an error they returned is not counted again, however
// it was wrapped; so the caller may pass every attempt's error here, such
// as a RoundTrip's. Observe on DIRECT does nothing.
func (u *Upstream) Observe(err error) {
	if u.kind == Direct {
		return
	}
	h := &u.health
	if err == nil {
		h.successes.Add(1)
		if h.down.Load() {
			u.markUp()
		}
		return
	}
	var e *Error
	if errors.As(err, &e) {
		if e.observed.Swap(true) {
			return
		}
		switch {
		case e.Fault():
		case e.Kind == ErrRefused, e.Kind == ErrAuth:
			h.refusals.Add(1)
			return
		default:
			return
		}
	} else if !isFault(err) {
		return
	}
	h.faults.Add(1)
	now := u.now()
	h.mu.Lock()
	h.consecutive++
	h.lastFailure = now
	h.lastError = err.Error()
	if h.down.Load() && now.UnixNano() < h.retryAt.Load() {
		// A request that was on its way when u went down, failing within
		// the back-off in force: it says nothing new about u, so the
		// back-off stands. It grows with the failed trials after each
		// back-off, not with how many requests were in flight (eight
		// concurrent failures at a death would otherwise make 1 s into
		// 2 min).
		h.mu.Unlock()
		return
	}
	if h.period == 0 {
		h.period = u.backoff.Min
	} else {
		h.period = min(2*h.period, u.backoff.Max)
	}
	h.retryAt.Store(now.Add(u.backoff.jitter(h.period)).UnixNano())
	h.down.Store(true)
	h.mu.Unlock()
}

// connected reports a connection made to u for a request whose outcome
// the caller observes (ConfigureTransport's dial, DialProxy): u works, so
// it is up again at once, but the success is the request's to count.
func (u *Upstream) connected() {
	if u.health.down.Load() {
		u.markUp()
	}
}

// markUp ends u's back-off.
func (u *Upstream) markUp() {
	h := &u.health
	h.mu.Lock()
	h.consecutive, h.period = 0, 0
	h.retryAt.Store(0)
	h.down.Store(false)
	h.mu.Unlock()
}

// isFault reports whether an error from elsewhere (a RoundTrip through u)
// is the upstream's fault.
func isFault(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	return isTimeout(err) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// jitter varies d at random by ±b.Jitter.
func (b Backoff) jitter(d time.Duration) time.Duration {
	if b.Jitter == 0 {
		return d
	}
	f := 1 + b.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// Up reports whether u is up (not in back-off).
func (u *Upstream) Up() bool { return !u.health.down.Load() }

// available reports whether u may be tried now in its place in a pick
// order: it is up, or its back-off has passed and this caller is the one
// that claims the trial. A claim moves the retry time on by the current
// back-off, so that until the trial's outcome is observed the other picks
// still treat u as down.
func (u *Upstream) available() bool {
	h := &u.health
	if !h.down.Load() {
		return true
	}
	at := h.retryAt.Load()
	now := u.now()
	if now.UnixNano() < at {
		return false
	}
	h.mu.Lock()
	period := h.period
	h.mu.Unlock()
	return h.retryAt.CompareAndSwap(at, now.Add(period).UnixNano())
}

// lastFailureNs orders down upstreams, least recently failed first.
func (u *Upstream) lastFailureNs() int64 {
	u.health.mu.Lock()
	defer u.health.mu.Unlock()
	return u.health.lastFailure.UnixNano()
}

// Stats returns a snapshot of u's health and counters.
func (u *Upstream) Stats() Stats {
	h := &u.health
	s := Stats{
		Name:        u.name,
		Kind:        u.kind,
		Up:          !h.down.Load(),
		Outstanding: h.outstanding.Load(),
		Requests:    h.requests.Load(),
		Successes:   h.successes.Load(),
		Failures:    h.faults.Load(),
		Refusals:    h.refusals.Load(),
	}
	h.mu.Lock()
	s.ConsecutiveFailures = h.consecutive
	s.LastFailure = h.lastFailure
	s.LastError = h.lastError
	h.mu.Unlock()
	if !s.Up {
		s.NextRetry = time.Unix(0, h.retryAt.Load())
	}
	return s
}
