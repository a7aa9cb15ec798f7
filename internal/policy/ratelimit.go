package policy

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// RateLimiter is a token bucket per client key (e.g. the client IP): each
// bucket holds up to burst tokens, refills at ratePerSec, and each allowed
// event takes one token. Memory is bounded: it tracks at most maxClients
// keys, forgetting the least recently seen, whose next event then starts
// with a full bucket. It starts no goroutines and is safe for concurrent use.
//
// The bucket is a golang.org/x/time/rate.Limiter; this type adds the
// bounded set of clients around it. Measured against the hand-written
// bucket it replaced (BenchmarkRateLimiterAllow in ratelimit_bench_test.go
// keeps that bucket as the reference): a known client costs about 30 ns
// more (two locks instead of one, rate's own bookkeeping), among 50,000
// clients about 15 ns more, on two cores at once about 30 ns more, none
// allocating; a new client, or one seen again after eviction, allocates
// 160 bytes instead of 112 (about 3 MiB more with 65,536 clients tracked).
// That is well under 0.1% of a proxied request (BenchmarkSmallGET: tens of
// µs), and the issue asked for the library's own token bucket, so it is
// kept.
type RateLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time // the clock; tests replace it

	mu      sync.Mutex
	clients *simplelru.LRU[string, *rate.Limiter]
}

// NewRateLimiter returns a limiter allowing each client ratePerSec events
// per second on average and bursts of up to burst events, tracking at most
// maxClients clients. ratePerSec must be positive and finite, burst and
// maxClients at least 1.
func NewRateLimiter(ratePerSec float64, burst int, maxClients int) (*RateLimiter, error) {
	if !(ratePerSec > 0) || math.IsInf(ratePerSec, 0) {
		return nil, fmt.Errorf("policy: rate %v must be positive and finite", ratePerSec)
	}
	if burst < 1 {
		return nil, fmt.Errorf("policy: burst %d must be at least 1", burst)
	}
	if maxClients < 1 {
		return nil, fmt.Errorf("policy: max clients %d must be at least 1", maxClients)
	}
	clients, err := simplelru.NewLRU[string, *rate.Limiter](maxClients, nil)
	if err != nil {
		return nil, err
	}
	return &RateLimiter{limit: rate.Limit(ratePerSec), burst: burst, now: time.Now, clients: clients}, nil
}

// Allow reports whether client key may have one more event now, and if so
// takes a token from its bucket. It does not allocate for a known client.
func (l *RateLimiter) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	b, ok := l.clients.Get(key)
	if !ok {
		// A new client starts with a full bucket (rate.NewLimiter's).
		b = rate.NewLimiter(l.limit, l.burst)
		l.clients.Add(key, b)
	}
	l.mu.Unlock()
	// The bucket has its own lock: the shared one is held only for the
	// LRU step.
	return b.AllowN(now, 1)
}
