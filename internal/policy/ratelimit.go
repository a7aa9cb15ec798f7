package policy

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// RateLimiter is a token bucket per client key (e.g. the client IP): each
// bucket holds up to burst tokens, refills at ratePerSec, and each allowed
// event takes one token. Memory is bounded: it tracks at most maxClients
// keys, forgetting the least recently seen, whose next event then starts
// with a full bucket. It starts no goroutines and is safe for concurrent use.
type RateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time // the clock; tests replace it

	mu      sync.Mutex
	clients *simplelru.LRU[string, *bucket]
}

type bucket struct {
	tokens float64
	last   time.Time
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
	clients, err := simplelru.NewLRU[string, *bucket](maxClients, nil)
	if err != nil {
		return nil, err
	}
	return &RateLimiter{rate: ratePerSec, burst: float64(burst), now: time.Now, clients: clients}, nil
}

// Allow reports whether client key may have one more event now, and if so
// takes a token from its bucket. It does not allocate for a known client.
func (l *RateLimiter) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.clients.Get(key)
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.clients.Add(key, b)
	} else if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
