package redisstore

import (
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// fallbackKeys bounds the rate-limit and quota keys the local fallback
// tracks; the least recently used are forgotten.
const fallbackKeys = 65536

// localLeasePrefix marks the ids of leases granted by the local fallback,
// which Renew and Release handle without Redis.
const localLeasePrefix = "local:"

// fallback is a Store's local in-memory state: the limits it enforces alone
// while Redis is unreachable, the quota usage it last saw and has counted
// since, and the leases it holds.
type fallback struct {
	now func() time.Time

	mu     sync.Mutex
	tats   *simplelru.LRU[string, time.Time] // rate-limit key → theoretical arrival time
	quotas *simplelru.LRU[string, *quotaState]
	leases map[string]map[string]time.Time // lease key → id → expiry, every lease this Store holds
}

// quotaState is what a Store knows of one quota key's current window.
type quotaState struct {
	start   int64 // the window's start, in Unix milliseconds
	seen    int64 // the usage Redis last reported for it
	pending int64 // bytes counted while Redis was unreachable, not yet added in Redis
}

func newFallback() *fallback {
	tats, _ := simplelru.NewLRU[string, time.Time](fallbackKeys, nil)
	quotas, _ := simplelru.NewLRU[string, *quotaState](fallbackKeys, nil)
	return &fallback{now: time.Now, tats: tats, quotas: quotas, leases: make(map[string]map[string]time.Time)}
}

// allow is the GCRA of the Lua script, in memory, for rate r scaled by
// share.
func (f *fallback) allow(key string, r Rate, share float64) Decision {
	taken, retry, remaining := f.take(key, r, share, 1)
	return Decision{Allowed: taken == 1, RetryAfter: retry, Remaining: remaining}
}

// take is the GCRA of takeScript, in memory, for rate r scaled by share: it
// takes up to n events (as many as the burst allows now), and when none,
// says when one would be allowed; remaining is what the burst still allows.
func (f *fallback) take(key string, r Rate, share float64, n int) (taken int, retry time.Duration, remaining int) {
	rate := r.PerSecond * share
	burst := max(1, int(math.Ceil(float64(r.Burst)*share)))
	t := time.Duration(float64(time.Second) / rate) // emission interval
	t = max(t, 1)
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	tat, ok := f.tats.Get(key)
	if !ok || tat.Before(now) {
		tat = now
	}
	// Events allowed now: those whose arrival fits in the burst's span.
	avail := int64(now.Add(t*time.Duration(burst)).Sub(tat) / t)
	if avail < 1 {
		return 0, tat.Add(t - t*time.Duration(burst)).Sub(now), 0
	}
	taken = int(min(int64(n), avail))
	f.tats.Add(key, tat.Add(t*time.Duration(taken)))
	return taken, 0, int(avail) - taken
}

// windowOf returns the start and end, in Unix milliseconds, of the window
// of length w (milliseconds) holding now.
func windowOf(now time.Time, w int64) (start, end int64) {
	ms := now.UnixMilli()
	start = ms - ms%w
	return start, start + w
}

// takePending removes and returns the bytes counted locally for key in the
// window starting at start, to be added in Redis; bytes of an older window
// are dropped.
func (f *fallback) takePending(key string, start int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	q, ok := f.quotas.Peek(key)
	if !ok || q.pending == 0 {
		return 0
	}
	n := q.pending
	q.pending = 0
	if q.start != start {
		return 0
	}
	return n
}

// sawQuota records the usage Redis reported for key's window and puts back
// pending bytes that a failed call could not add.
func (f *fallback) sawQuota(key string, start, used, putBack int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.quota(key, start)
	if used >= 0 {
		q.seen = used
	}
	q.pending += putBack
}

// addQuota counts n bytes for key locally while Redis is unreachable and
// returns the usage it estimates: the last usage seen in Redis plus what
// was counted since, scaled by 1/share.
func (f *fallback) addQuota(key string, start, n int64, share float64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.quota(key, start)
	q.pending += n
	local := float64(q.pending) / share
	if local >= float64(math.MaxInt64-q.seen) {
		return math.MaxInt64
	}
	return q.seen + int64(local)
}

// quota returns key's state for the window starting at start, new when the
// window changed. f.mu is held.
func (f *fallback) quota(key string, start int64) *quotaState {
	q, ok := f.quotas.Get(key)
	if !ok || q.start != start {
		q = &quotaState{start: start}
		f.quotas.Add(key, q)
	}
	return q
}

// held records a lease this Store holds until expiry, forgetting those of
// key that expired unreleased.
func (f *fallback) held(key, id string, expiry time.Time) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.leases[key]
	if m == nil {
		m = make(map[string]time.Time)
		f.leases[key] = m
	}
	for old, exp := range m {
		if !exp.After(now) {
			delete(m, old)
		}
	}
	m[id] = expiry
}

// released forgets a lease.
func (f *fallback) released(key, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.leases[key]
	delete(m, id)
	if len(m) == 0 {
		delete(f.leases, key)
	}
}

// acquireLocal grants a local lease on key for ttl when the Store holds
// fewer than limit unexpired leases on it, counting those held in Redis.
func (f *fallback) acquireLocal(key string, limit int, ttl time.Duration) (string, bool) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.leases[key]
	for id, exp := range m {
		if !exp.After(now) {
			delete(m, id)
		}
	}
	if len(m) >= limit {
		return "", false
	}
	if m == nil {
		m = make(map[string]time.Time)
		f.leases[key] = m
	}
	id := localLeasePrefix + newID()
	m[id] = now.Add(ttl)
	return id, true
}

// renewLocal extends a local lease; it reports whether the Store holds it.
func (f *fallback) renewLocal(key, id string, ttl time.Duration) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.leases[key]
	if _, ok := m[id]; !ok {
		return false
	}
	m[id] = now.Add(ttl)
	return true
}

func isLocalLease(id string) bool { return strings.HasPrefix(id, localLeasePrefix) }
