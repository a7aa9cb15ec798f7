package dashboard

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"
)

// TopK counts the most frequent keys of a stream in bounded memory, with
// the space-saving algorithm (Metwally, Agrawal, El Abbadi, "Efficient
// computation of frequent and top-k elements in data streams", 2005): it
// tracks at most Capacity keys; a key not tracked takes the place of the
// least counted one and inherits its count plus one. Any key seen more
// than total/Capacity times is tracked, and a count overestimates by at
// most the count it inherited.
//
// Counts decay ([TopK.Decay]), so that the top reflects recent traffic.
// It is safe for concurrent use.
type TopK struct {
	mu    sync.Mutex
	idx   map[string]*topEntry // the tracked keys
	heap  []*topEntry          // the same, a min-heap by count
	total float64              // every observation, decayed alike
	cap   int
}

// topEntry is a tracked key. It knows its place in the heap, so that
// moving it costs no map update.
type topEntry struct {
	key   string
	count float64
	pos   int
}

// TopEntry is a key and its estimated (decayed) count.
type TopEntry struct {
	Key   string  // as given to Observe
	Count float64 // observations, decayed, overestimated by at most what the key inherited
}

// NewTopK returns a counter that tracks up to capacity keys (at least 1).
func NewTopK(capacity int) *TopK {
	capacity = max(capacity, 1)
	return &TopK{idx: make(map[string]*topEntry, capacity), heap: make([]*topEntry, 0, capacity), cap: capacity}
}

// Observe counts one occurrence of key. When key is tracked it costs a
// lock, a map lookup and a few swaps, and does not allocate; a key that
// enters the counter is copied (so that it does not keep a larger string
// alive), which allocates.
func (t *TopK) Observe(key string) {
	t.mu.Lock()
	t.total++
	if e, ok := t.idx[key]; ok {
		e.count++
		t.down(e.pos)
		t.mu.Unlock()
		return
	}
	key = strings.Clone(key)
	if len(t.heap) < t.cap {
		e := &topEntry{key: key, count: 1, pos: len(t.heap)}
		t.heap = append(t.heap, e)
		t.idx[key] = e
		t.up(e.pos)
		t.mu.Unlock()
		return
	}
	least := t.heap[0]
	delete(t.idx, least.key)
	least.key, least.count = key, least.count+1
	t.idx[key] = least
	t.down(0)
	t.mu.Unlock()
}

// Decay multiplies every count by factor (0 < factor ≤ 1).
func (t *TopK) Decay(factor float64) {
	if !(factor > 0 && factor < 1) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.heap {
		e.count *= factor // the order of the heap stays
	}
	t.total *= factor
	if t.total < 1e-9 {
		t.total = 0
	}
}

// Top returns up to n keys with the highest counts, highest first, and
// the decayed count of every observation.
func (t *TopK) Top(n int) (top []TopEntry, total float64) {
	t.mu.Lock()
	out := make([]TopEntry, len(t.heap))
	for i, e := range t.heap {
		out[i] = TopEntry{Key: e.key, Count: e.count}
	}
	total = t.total
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b TopEntry) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Key, b.Key))
	})
	return out[:min(n, len(out))], total
}

func (t *TopK) less(i, j int) bool { return t.heap[i].count < t.heap[j].count }

func (t *TopK) swap(i, j int) {
	h := t.heap
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}

func (t *TopK) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *TopK) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}

// decayFactor is the factor that halves counts every halfLife seconds,
// for elapsed seconds.
func decayFactor(elapsed, halfLife float64) float64 { return math.Exp2(-elapsed / halfLife) }
