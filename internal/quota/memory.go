// Package quota holds the mechanics of per-user quotas: an in-memory store
// of rate limits (GCRA), byte usage in fixed windows and concurrency leases,
// used when no shared store is given; the byte meter that batches a
// subject's transfers into a store; and the lease that renews itself while
// a tunnel lives. It knows nothing of the pipeline: the root package's
// interfaces (shared.go) are matched by method set.
package quota

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxKeys bounds the rate-limit and quota keys a Memory tracks; the least
// recently used are forgotten (a forgotten rate limit is a full bucket, a
// forgotten quota starts again at zero).
const maxKeys = 65536

// Decision is a rate-limit decision (the root package's Decision, which
// converts to it).
type Decision struct {
	Allowed    bool
	RetryAfter time.Duration
	Remaining  int
}

// Memory keeps rate limits, byte quotas and leases in this process: the
// default when a Proxy has no shared store. It is safe for concurrent use
// and starts no goroutine.
type Memory struct {
	now func() time.Time

	mu     sync.Mutex
	tats   *simplelru.LRU[string, time.Time] // rate-limit key → theoretical arrival time
	usage  *simplelru.LRU[string, window]    // quota key → usage in its window
	leases map[string]map[string]time.Time   // lease key → id → expiry
	ids    atomic.Uint64
}

type window struct {
	start int64 // Unix nanoseconds
	used  int64
}

// NewMemory returns an empty Memory on the clock now (time.Now when nil).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	tats, _ := simplelru.NewLRU[string, time.Time](maxKeys, nil)
	usage, _ := simplelru.NewLRU[string, window](maxKeys, nil)
	return &Memory{now: now, tats: tats, usage: usage, leases: make(map[string]map[string]time.Time)}
}

// Allow is the generic cell rate algorithm: perSecond events a second on
// average, bursts of up to burst.
func (m *Memory) Allow(key string, perSecond float64, burst int) Decision {
	t := time.Duration(float64(time.Second) / perSecond) // emission interval
	burst = max(burst, 1)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	tat, ok := m.tats.Get(key)
	if !ok || tat.Before(now) {
		tat = now
	}
	newTAT := tat.Add(t)
	diff := now.Sub(newTAT.Add(-t * time.Duration(burst)))
	if diff < 0 {
		return Decision{RetryAfter: -diff}
	}
	m.tats.Add(key, newTAT)
	return Decision{Allowed: true, Remaining: int(diff / t)}
}

// WindowOf returns the fixed window of length w (aligned to the Unix epoch)
// that holds now: its start and its end.
func WindowOf(now time.Time, w time.Duration) (start, end time.Time) {
	n := now.UnixNano()
	s := n - n%int64(w)
	return time.Unix(0, s), time.Unix(0, s+int64(w))
}

// AddBytes adds n to key's usage in the current window of length w and
// returns the usage after the add and when the window resets.
func (m *Memory) AddBytes(key string, n int64, w time.Duration) (used int64, reset time.Time) {
	start, end := WindowOf(m.now(), w)
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.usage.Get(key)
	if !ok || u.start != start.UnixNano() {
		u = window{start: start.UnixNano()}
	}
	if n > 0 {
		u.used = min(u.used+n, math.MaxInt64/2)
	}
	m.usage.Add(key, u)
	return u.used, end
}

// Acquire takes one of max leases on key for ttl.
func (m *Memory) Acquire(key string, max int, ttl time.Duration) (string, bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	held := m.leases[key]
	for id, exp := range held {
		if !exp.After(now) {
			delete(held, id)
		}
	}
	if len(held) >= max {
		return "", false
	}
	if held == nil {
		held = make(map[string]time.Time)
		m.leases[key] = held
	}
	id := "m" + strconv.FormatUint(m.ids.Add(1), 36)
	held[id] = now.Add(ttl)
	return id, true
}

// Renew extends a lease held on key; it reports false for a lease that is
// not held (expired, or released).
func (m *Memory) Renew(key, id string, ttl time.Duration) bool {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	held := m.leases[key]
	if exp, ok := held[id]; !ok || !exp.After(now) {
		return false
	}
	held[id] = now.Add(ttl)
	return true
}

// Release gives a lease back.
func (m *Memory) Release(key, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	held := m.leases[key]
	delete(held, id)
	if len(held) == 0 {
		delete(m.leases, key)
	}
}

// Held returns how many leases on key are held now.
func (m *Memory) Held(key string) int {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, exp := range m.leases[key] {
		if exp.After(now) {
			n++
		}
	}
	return n
}
