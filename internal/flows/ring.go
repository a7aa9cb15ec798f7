package flows

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Defaults of [Options].
const (
	DefaultMaxFlows     = 1000
	DefaultMaxBytes     = 64 << 20
	DefaultMaxBodyBytes = 64 << 10
)

// Options configures a [Ring]. Zero fields take the defaults.
type Options struct {
	// MaxFlows caps the number of flows kept (DefaultMaxFlows).
	MaxFlows int
	// MaxBytes caps the total Size of the flows kept (DefaultMaxBytes).
	MaxBytes int64
	// MaxBodyBytes caps each captured body prefix; longer prefixes are
	// cut (DefaultMaxBodyBytes). The proxy should capture no more: see
	// [Ring.MaxBodyBytes].
	MaxBodyBytes int
}

// Ring keeps the most recent flows, at most MaxFlows of them and at most
// MaxBytes of them by [Flow.Size]: adding a flow evicts the oldest ones
// until both caps hold. It is safe for concurrent use.
//
// Adding packs the flow into one allocation, then holds a lock for a few
// stores; with subscribers it also copies the flow for them (and its
// headers with credentials, redacted), and each adds a channel send that
// never blocks. Reading a flow unpacks it (Get, Query).
type Ring struct {
	maxBytes int64
	maxBody  int
	paused   atomic.Bool

	mu       sync.Mutex
	entries  []entry // circular: the oldest at head
	head, n  int
	bytes    int64
	nextID   uint64
	subs     []*Subscription // replaced, never changed in place
	added    uint64
	evicted  uint64
	stripped uint64 // flows whose bodies were dropped to fit MaxBytes
	dropped  uint64 // flows too large even without their bodies
}

// entry is a flow kept: its ID, its size as the byte cap counts it, and
// the flow packed (see pack.go).
type entry struct {
	id   uint64
	size int64
	data []byte
}

// NewRing returns an empty ring that records.
func NewRing(o Options) *Ring {
	if o.MaxFlows <= 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &Ring{
		maxBytes: o.MaxBytes,
		maxBody:  o.MaxBodyBytes,
		entries:  make([]entry, o.MaxFlows),
	}
}

// MaxBodyBytes is the longest body prefix the ring keeps: the proxy need
// not capture more for it.
func (r *Ring) MaxBodyBytes() int { return r.maxBody }

// Recording reports whether Add keeps flows, that is whether the ring is
// not paused. The proxy asks it before it builds a Flow, so that a paused
// ring costs a request one atomic load.
func (r *Ring) Recording() bool { return !r.paused.Load() }

// Pause stops recording: Add drops flows until Resume.
func (r *Ring) Pause() { r.paused.Store(true) }

// Resume starts recording again after Pause.
func (r *Ring) Resume() { r.paused.Store(false) }

// Add records f and returns its ID; 0 when the ring is paused or f is too
// large to keep even without its bodies. The ring keeps f packed (see
// pack.go): redacted, its body prefixes cut to MaxBodyBytes and its
// bodies' content types filled from its headers; f itself, its maps and
// slices are neither kept nor changed, but for its ID, which Add sets.
// Flows too large for MaxBytes with their bodies are kept without them.
// Subscribers are sent a copy of f redacted as the ring keeps it; one
// whose buffer is full misses it, and its Dropped count grows.
func (r *Ring) Add(f *Flow) uint64 {
	if r.paused.Load() {
		return 0
	}
	data := pack(f, r.maxBody, true)
	size := packedSize(data)
	stripped := false
	if size > r.maxBytes {
		data = pack(f, r.maxBody, false)
		size = packedSize(data)
		stripped = true
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if stripped {
		if size > r.maxBytes {
			r.dropped++
			return 0
		}
		r.stripped++
	}
	for r.n == len(r.entries) || r.bytes+size > r.maxBytes {
		r.evictOldest()
	}
	r.nextID++
	f.ID = r.nextID
	r.entries[(r.head+r.n)%len(r.entries)] = entry{id: f.ID, size: size, data: data}
	r.n++
	r.bytes += size
	r.added++
	if len(r.subs) > 0 {
		g := r.shared(f, stripped)
		for _, s := range r.subs {
			select {
			case s.c <- g:
			default:
				s.dropped.Add(1)
			}
		}
	}
	return f.ID
}

// shared is the copy of f sent to subscribers: redacted (in copies of its
// headers) and filled in as the ring keeps it, without bodies when
// stripped. It shares f's maps and slices that need no change.
func (r *Ring) shared(f *Flow, stripped bool) *Flow {
	g := new(Flow)
	*g = *f
	g.RequestBody.Prefix = r.clip(g.RequestBody.Prefix)
	g.ResponseBody.Prefix = r.clip(g.ResponseBody.Prefix)
	if stripped {
		g.RequestBody.Prefix, g.ResponseBody.Prefix = nil, nil
	}
	fillContentTypes(g)
	redactFlow(g)
	return g
}

// clip cuts a prefix longer than MaxBodyBytes.
func (r *Ring) clip(p []byte) []byte { return clip(p, r.maxBody) }

// evictOldest drops the oldest flow; r.mu is held and r.n > 0.
func (r *Ring) evictOldest() {
	e := &r.entries[r.head]
	r.bytes -= e.size
	*e = entry{}
	r.head = (r.head + 1) % len(r.entries)
	r.n--
	r.evicted++
}

// at returns the i-th flow from the oldest; r.mu is held.
func (r *Ring) at(i int) *entry { return &r.entries[(r.head+i)%len(r.entries)] }

// Get returns the flow with the given ID, or nil when the ring does not
// hold it (any more).
func (r *Ring) Get(id uint64) *Flow {
	r.mu.Lock()
	// IDs grow from the oldest to the newest: search.
	lo, hi := 0, r.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.at(mid).id < id {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < r.n && r.at(lo).id == id {
		e := *r.at(lo)
		r.mu.Unlock()
		return unpack(e.id, e.data)
	}
	r.mu.Unlock()
	return nil
}

// Query returns the flows that match f, newest first, at most f.Limit of
// them (all when f.Limit <= 0).
func (r *Ring) Query(f Filter) []*Flow {
	r.mu.Lock()
	snap := make([]entry, 0, r.n)
	for i := r.n - 1; i >= 0; i-- {
		e := r.at(i)
		if f.BeforeID != 0 && e.id >= f.BeforeID {
			continue
		}
		if e.id <= f.AfterID {
			break
		}
		snap = append(snap, *e)
	}
	r.mu.Unlock()
	out := make([]*Flow, 0, min(len(snap), max(f.Limit, 0)))
	for _, e := range snap {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if fl := unpack(e.id, e.data); f.Match(fl) {
			out = append(out, fl)
		}
	}
	return out
}

// Clear drops every flow. IDs keep growing from where they were.
func (r *Ring) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.entries)
	r.head, r.n, r.bytes = 0, 0, 0
}

// RingStats describes a Ring's contents and history.
type RingStats struct {
	Flows    int    // flows held
	Bytes    int64  // their total Size
	MaxFlows int    // the count cap
	MaxBytes int64  // the byte cap
	Added    uint64 // flows recorded since NewRing
	LastID   uint64 // the ID of the latest flow recorded (kept by Clear)
	Evicted  uint64 // flows dropped to make room
	Stripped uint64 // flows kept without their bodies to fit MaxBytes
	Dropped  uint64 // flows too large for MaxBytes even without bodies
	Paused   bool   // recording is paused
}

// Stats returns the ring's counts.
func (r *Ring) Stats() RingStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return RingStats{
		Flows: r.n, Bytes: r.bytes, MaxFlows: len(r.entries), MaxBytes: r.maxBytes,
		Added: r.added, LastID: r.nextID, Evicted: r.evicted, Stripped: r.stripped, Dropped: r.dropped,
		Paused: r.paused.Load(),
	}
}

// Subscription receives the flows added to a Ring after it was made.
type Subscription struct {
	r       *Ring
	c       chan *Flow
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe returns a subscription whose channel buffers up to buffer
// flows (at least 1). The ring never waits for a subscriber: a flow that
// finds the buffer full is not sent, and counted in Dropped. Close it when
// done.
func (r *Ring) Subscribe(buffer int) *Subscription {
	s := &Subscription{r: r, c: make(chan *Flow, max(buffer, 1))}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(slices.Clip(r.subs), s)
	return s
}

// C is the channel of new flows; it is closed by Close.
func (s *Subscription) C() <-chan *Flow { return s.c }

// Dropped is the number of flows this subscription missed because its
// buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel. It may be called
// more than once.
func (s *Subscription) Close() {
	s.once.Do(func() {
		r := s.r
		r.mu.Lock()
		defer r.mu.Unlock()
		r.subs = slices.DeleteFunc(slices.Clone(r.subs), func(x *Subscription) bool { return x == s })
		close(s.c)
	})
}
