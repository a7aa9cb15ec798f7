package policy

import (
	"math"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestLimiter(t *testing.T, rate float64, burst, maxClients int) (*RateLimiter, *fakeClock) {
	t.Helper()
	l, err := NewRateLimiter(rate, burst, maxClients)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l.now = c.now
	return l, c
}

func TestRateLimiter(t *testing.T) {
	type step struct {
		advance time.Duration
		key     string
		want    bool
	}
	tests := []struct {
		name              string
		rate              float64
		burst, maxClients int
		steps             []step
	}{
		{"burst then empty", 1, 3, 10, []step{
			{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false},
		}},
		{"refill at rate", 2, 1, 10, []step{
			{0, "a", true}, {0, "a", false},
			{250 * time.Millisecond, "a", false}, // half a token
			{250 * time.Millisecond, "a", true},
			{0, "a", false},
		}},
		{"refill capped at burst", 10, 2, 10, []step{
			{0, "a", true}, {0, "a", true}, {0, "a", false},
			{time.Hour, "a", true}, {0, "a", true}, {0, "a", false},
		}},
		{"clients are independent", 1, 1, 10, []step{
			{0, "a", true}, {0, "a", false}, {0, "b", true}, {0, "b", false}, {0, "a", false},
		}},
		{"slow rate", 0.5, 1, 10, []step{
			{0, "a", true}, {time.Second, "a", false}, {time.Second, "a", true},
		}},
		{"least recently seen client is forgotten", 1, 1, 2, []step{
			{0, "a", true}, {0, "b", true},
			{0, "a", false}, // a is now the most recent
			{0, "c", true},  // evicts b
			{0, "a", false}, // a kept its empty bucket
			{0, "b", true},  // b starts over with a full bucket
		}},
		{"clock going back does not refill", 1, 1, 10, []step{
			{0, "a", true}, {-time.Hour, "a", false}, {time.Hour, "a", false}, {time.Second, "a", true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clock := newTestLimiter(t, tt.rate, tt.burst, tt.maxClients)
			for i, s := range tt.steps {
				clock.advance(s.advance)
				if got := l.Allow(s.key); got != s.want {
					t.Fatalf("step %d: Allow(%q) = %v, want %v", i, s.key, got, s.want)
				}
			}
		})
	}
}

func TestRateLimiterBounded(t *testing.T) {
	l, _ := newTestLimiter(t, 1, 1, 100)
	for i := range 1000 {
		l.Allow(strconv.Itoa(i))
	}
	if n := l.clients.Len(); n != 100 {
		t.Errorf("tracking %d clients, want 100", n)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	l, _ := newTestLimiter(t, 1, 50, 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			key := strconv.Itoa(g % 2)
			n := 0
			for range 100 {
				if l.Allow(key) {
					n++
				}
			}
			mu.Lock()
			allowed[key] += n
			mu.Unlock()
		})
	}
	wg.Wait()
	for key, n := range allowed {
		if n != 50 {
			t.Errorf("client %s: %d allowed with the clock stopped, want the burst of 50", key, n)
		}
	}
}

func TestRateLimiterAllowNoAlloc(t *testing.T) {
	l, _ := newTestLimiter(t, 1, 1, 10)
	l.Allow("192.0.2.1")
	if n := testing.AllocsPerRun(100, func() { l.Allow("192.0.2.1") }); n != 0 {
		t.Errorf("Allow for a known client allocates %v times", n)
	}
}

func TestNewRateLimiterErrors(t *testing.T) {
	tests := []struct {
		rate              float64
		burst, maxClients int
	}{
		{0, 1, 1}, {-1, 1, 1}, {math.NaN(), 1, 1}, {math.Inf(1), 1, 1},
		{1, 0, 1}, {1, 1, 0},
	}
	for _, tt := range tests {
		if _, err := NewRateLimiter(tt.rate, tt.burst, tt.maxClients); err == nil {
			t.Errorf("NewRateLimiter(%v, %d, %d) succeeded", tt.rate, tt.burst, tt.maxClients)
		}
	}
}
