package quota

import (
	"context"
	"math"
	"sync"
	"time"
)

// TakeFunc takes up to n events of one shared rate limit at once (the
// root package's RateTaker.Take for one key and rate).
type TakeFunc func(ctx context.Context, n int) (taken int, retryAfter time.Duration, err error)

// BatchSize is the number of events a Stock takes at once for a rate of
// perSecond with burst: those of window at the rate, at least 1, at most
// the burst.
func BatchSize(perSecond float64, burst int, window time.Duration) int {
	k := math.Floor(perSecond * window.Seconds())
	if !(k >= 1) {
		return 1
	}
	return int(min(k, float64(max(burst, 1))))
}

// Stock spends, in this process, the events of a shared rate limit that it
// takes from the store in batches of k: a decision while it holds events
// takes one of them, with no call to the store and no timer. When half a
// batch or less is left it takes the rest of a batch in the background; a
// decision waits for the store (at most timeout) only when none is left.
// When the store grants none, decisions are refused, locally, until the
// store said one would be allowed. So it holds at most k events taken
// from the store and not spent.
type Stock struct {
	k       int
	timeout time.Duration
	take    TakeFunc

	mu      sync.Mutex
	tokens  int       // events taken from the store, not spent
	retryAt time.Time // the store grants none before then
	fill    *fill     // the take in flight, if any
}

// fill is one call of take.
type fill struct {
	done chan struct{}
	err  error
}

// NewStock returns an empty Stock taking k events at a time with take, each
// call bounded by timeout.
func NewStock(k int, timeout time.Duration, take TakeFunc) *Stock {
	return &Stock{k: max(k, 1), timeout: timeout, take: take}
}

// K is the batch size.
func (s *Stock) K() int { return s.k }

// Tokens is the number of events held, taken and not spent.
func (s *Stock) Tokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens
}

// Allow decides one event. An error (the store's, or ctx ending) means no
// decision: the caller decides otherwise.
func (s *Stock) Allow(ctx context.Context) (Decision, error) {
	var deadline <-chan struct{}
	for {
		s.mu.Lock()
		if s.tokens > 0 {
			s.tokens--
			left := s.tokens
			if left <= s.k/2 && s.fill == nil && !time.Now().Before(s.retryAt) {
				s.startFill()
			}
			s.mu.Unlock()
			return Decision{Allowed: true, Remaining: left}, nil
		}
		if now, at := time.Now(), s.retryAt; now.Before(at) {
			s.mu.Unlock()
			return Decision{RetryAfter: at.Sub(now)}, nil
		}
		f := s.fill
		if f == nil {
			f = s.startFill()
		}
		s.mu.Unlock()
		if deadline == nil {
			// The slow path alone pays for a timer.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.timeout)
			defer cancel()
			deadline = ctx.Done()
		}
		select {
		case <-f.done:
			if f.err != nil {
				return Decision{}, f.err
			}
			// Taken (or refused): look again; waiters that found the new
			// batch spent by others take the next.
		case <-deadline:
			return Decision{}, ctx.Err()
		}
	}
}

// startFill takes what a batch lacks, in the background; s.mu is held.
func (s *Stock) startFill() *fill {
	f := &fill{done: make(chan struct{})}
	s.fill = f
	n := s.k - s.tokens
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		taken, retry, err := s.take(ctx, n)
		cancel()
		s.mu.Lock()
		if err == nil {
			s.tokens += taken
			if taken == 0 {
				// At least a millisecond, so that waiters do not spin
				// on a store that grants none and says "now".
				s.retryAt = time.Now().Add(max(retry, time.Millisecond))
			}
		}
		f.err = err
		s.fill = nil
		s.mu.Unlock()
		close(f.done)
	}()
	return f
}
