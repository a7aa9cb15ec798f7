package h1

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// connPool keeps the Transport's idle upstream connections (see
// transport.go). Each host has a LIFO stack of idle
// connections, so the most recently used (warmest) one is reused first and
// the others age out; all idle connections are also on one list, oldest
// first, so the total limit evicts the oldest anywhere and one timer expires
// them. An idle connection holds no buffers; a request borrows them from
// pools.
//
// Only idle connections are limited; a request that finds none dials. The
// limits are enforced by trimming, not at hand-back: connections that go
// idle in a burst beyond a limit stay while they are reused, and those that
// sit unused for trimDelay (at the bottom of the stacks) are closed. Under
// heavy load (1000 concurrent clients, say) the number of requests in flight
// swings far above the per-host limit from one millisecond to the next;
// closing at hand-back would close and redial connections by the thousand
// per second, leaving as many sockets in TIME_WAIT.
type connPool struct {
	// settings gives the limits (TransportSettings), read each time a
	// connection is taken, kept or swept.
	settings func() *TransportSettings

	mu         sync.Mutex
	hosts      map[string][]*pconn // idle per host, oldest first
	head, tail *pconn              // every idle connection, oldest first
	total      int
	over       bool // some limit may be exceeded: the janitor trims
	closed     bool
	janitor    *time.Timer
	due        time.Time // when the janitor fires, if armed
	armed      bool
}

// maxTrimDelay bounds how long surplus idle connections are kept.
const maxTrimDelay = time.Second

// trimDelay is how long connections beyond a limit are kept idle before
// the janitor closes them: the idle timeout, at most maxTrimDelay.
func trimDelay(st *TransportSettings) time.Duration {
	return min(st.IdleConnTimeout, maxTrimDelay)
}

// pconn is an upstream connection owned by a connPool.
type pconn struct {
	conn   net.Conn
	tcp    *net.TCPConn // conn, when it is TCP (splice is possible)
	key    string       // "host:port" dialed
	reused bool         // it served a request before the current one
	idleAt time.Time
	idled  time.Duration // how long it was idle before get returned it
	// suspect is set after a response without a body (HEAD, 204, 304),
	// behind which broken servers send one anyway.
	suspect bool
	// headLeft is what Read may still return while a response head is
	// read (MaxResponseHeaderBytes), or -1 once the body is.
	headLeft int64

	prev, next *pconn // on the pool's idle list

	// Cancellation (the client went away) sets a deadline in the past; mu
	// keeps a later deadline change from undoing it.
	mu         sync.Mutex
	canceled   bool
	cancelFunc func() // pc.cancel, made once rather than per request
}

func (cp *connPool) init(settings func() *TransportSettings) {
	cp.settings = settings
	cp.hosts = make(map[string][]*pconn)
}

func newPconn(c net.Conn, key string) *pconn {
	tc, _ := c.(*net.TCPConn)
	pc := &pconn{conn: c, tcp: tc, key: key}
	pc.cancelFunc = pc.cancel
	return pc
}

// get returns the most recently idled connection to key, or nil.
func (cp *connPool) get(key string) *pconn {
	var expired []*pconn
	var pc *pconn
	cp.mu.Lock()
	list := cp.hosts[key]
	if len(list) > 0 {
		idleTimeout := cp.settings().IdleConnTimeout
		now := time.Now()
		for len(list) > 0 {
			c := list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			cp.unlink(c)
			if now.Sub(c.idleAt) >= idleTimeout {
				expired = append(expired, c)
				continue
			}
			pc = c
			break
		}
		cp.hosts[key] = list
	}
	cp.mu.Unlock()
	for _, c := range expired {
		c.conn.Close()
	}
	if pc != nil {
		pc.reused = true
		pc.idled = time.Since(pc.idleAt)
	}
	return pc
}

// put makes pc idle; when that takes its host or the pool past a limit,
// the janitor is due within trimDelay. After closeIdle it closes pc.
func (cp *connPool) put(pc *pconn) {
	now := time.Now()
	pc.idleAt = now
	cp.mu.Lock()
	if cp.closed {
		cp.mu.Unlock()
		pc.conn.Close()
		return
	}
	list := append(cp.hosts[pc.key], pc)
	cp.hosts[pc.key] = list
	cp.link(pc)
	st := cp.settings()
	wait := st.IdleConnTimeout
	if len(list) > st.MaxIdleConnsPerHost || cp.total > st.MaxIdleConns {
		cp.over = true
		wait = trimDelay(st)
	}
	if !cp.armed || cp.due.After(now.Add(wait)) {
		cp.arm(now, wait)
	}
	cp.mu.Unlock()
}

// arm makes the janitor fire after d. Called with mu held.
func (cp *connPool) arm(now time.Time, d time.Duration) {
	cp.armed, cp.due = true, now.Add(d)
	if cp.janitor == nil {
		cp.janitor = time.AfterFunc(d, cp.sweep)
	} else {
		cp.janitor.Reset(d)
	}
}

// removeOldest takes c, the oldest idle connection of its host (the first
// on its stack), off that stack and off the idle list. Called with mu held.
func (cp *connPool) removeOldest(c *pconn) {
	list := cp.hosts[c.key]
	if len(list) == 0 || list[0] != c {
		panic("h1: connection pool corrupted")
	}
	if list = dropFirst(list); len(list) == 0 {
		delete(cp.hosts, c.key)
	} else {
		cp.hosts[c.key] = list
	}
	cp.unlink(c)
}

// sweep closes the connections idle for longer than the idle timeout, and
// those beyond a limit that have been idle for trimDelay, oldest first; it
// forgets hosts with none left and re-arms itself while any remain.
func (cp *connPool) sweep() {
	var expired []*pconn
	cp.mu.Lock()
	cp.armed = false
	if cp.closed {
		cp.mu.Unlock()
		return
	}
	st := cp.settings()
	idleTimeout, trim := st.IdleConnTimeout, trimDelay(st)
	now := time.Now()
	for c := cp.head; c != nil && now.Sub(c.idleAt) >= idleTimeout; c = cp.head {
		cp.removeOldest(c)
		expired = append(expired, c)
	}
	over := false
	for k, list := range cp.hosts {
		if cp.over {
			for len(list) > st.MaxIdleConnsPerHost && now.Sub(list[0].idleAt) >= trim {
				c := list[0]
				cp.removeOldest(c)
				expired = append(expired, c)
				list = cp.hosts[k]
			}
			over = over || len(list) > st.MaxIdleConnsPerHost
		}
		if len(list) == 0 {
			delete(cp.hosts, k)
		}
	}
	if cp.over {
		for c := cp.head; cp.total > st.MaxIdleConns && now.Sub(c.idleAt) >= trim; c = cp.head {
			cp.removeOldest(c)
			expired = append(expired, c)
		}
		over = over || cp.total > st.MaxIdleConns
	}
	cp.over = over
	if cp.head != nil {
		wait := cp.head.idleAt.Add(idleTimeout).Sub(now) + time.Millisecond
		if over {
			wait = min(wait, trim)
		}
		cp.arm(now, wait)
	}
	cp.mu.Unlock()
	for _, c := range expired {
		c.conn.Close()
	}
}

// closeIdle closes every idle connection; connections handed back later are
// closed rather than kept.
func (cp *connPool) closeIdle() {
	cp.mu.Lock()
	cp.closed = true
	var idle []*pconn
	for c := cp.head; c != nil; c = c.next {
		idle = append(idle, c)
	}
	cp.head, cp.tail, cp.total = nil, nil, 0
	clear(cp.hosts)
	if cp.janitor != nil {
		cp.janitor.Stop()
	}
	cp.armed = false
	cp.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
}

// idleCount reports the idle connections to key and in all.
func (cp *connPool) idleCount(key string) (host, total int) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.hosts[key]), cp.total
}

// dropFirst removes list[0], keeping the order and clearing the freed slot.
func dropFirst(list []*pconn) []*pconn {
	n := copy(list, list[1:])
	list[n] = nil
	return list[:n]
}

func (cp *connPool) link(c *pconn) {
	c.prev, c.next = cp.tail, nil
	if cp.tail != nil {
		cp.tail.next = c
	} else {
		cp.head = c
	}
	cp.tail = c
	cp.total++
}

func (cp *connPool) unlink(c *pconn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		cp.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		cp.tail = c.prev
	}
	c.prev, c.next = nil, nil
	cp.total--
}

// ErrResponseHeadTooLarge is the Transport's error for a response head
// over MaxResponseHeaderBytes: pconn.Read's once the head has used up its
// limit.
var ErrResponseHeadTooLarge = errors.New("response header too large")

// Read reads from the connection; the Transport's bufio.Reader reads
// through it, so that a response head that passes its limit fails (as
// http.Transport's persistConn.Read does).
func (pc *pconn) Read(p []byte) (int, error) {
	if pc.headLeft < 0 {
		return pc.conn.Read(p)
	}
	if pc.headLeft == 0 {
		return 0, ErrResponseHeadTooLarge
	}
	if int64(len(p)) > pc.headLeft {
		p = p[:pc.headLeft]
	}
	n, err := pc.conn.Read(p)
	pc.headLeft -= int64(n)
	return n, err
}

// cancel aborts whatever pc is doing: the client went away.
func (pc *pconn) cancel() {
	pc.mu.Lock()
	pc.canceled = true
	_ = pc.conn.SetDeadline(netx.PastDeadline())
	pc.mu.Unlock()
}

// setReadDeadline sets the read deadline unless pc was cancelled.
func (pc *pconn) setReadDeadline(t time.Time) {
	pc.mu.Lock()
	if !pc.canceled {
		_ = pc.conn.SetReadDeadline(t)
	}
	pc.mu.Unlock()
}
