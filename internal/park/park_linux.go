//go:build linux

package park

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parker is a set of parked connections and the one goroutine that waits
// for them. Its zero value is not usable; make one with New. A Parker is
// safe for concurrent use.
//
// The epoll set holds each parked socket one-shot (EPOLLONESHOT,
// level-triggered, for EPOLLIN and EPOLLRDHUP), with the Entry's slot and
// generation as its data, so that an event for an Entry released since is
// recognised and dropped. Every epoll_ctl on a socket runs inside its
// RawConn's Control, so that the runtime cannot close the descriptor (and
// give its number to another connection) under it; a socket closed while
// parked leaves the set by itself when its file is released.
//
// Deadlines: the goroutine sleeps (a read deadline on the epoll set's
// file) until the earliest time an armed Entry must be told its deadline
// passed, its deadline plus its slack, and then tells every armed Entry
// whose deadline has passed. So each is told between its deadline and its
// deadline plus slack, and Entries parked at about the same time are told
// together. Nothing runs while every parked connection is quiet and no
// deadline is due.
type Parker struct {
	mu     sync.Mutex
	f      *os.File // the epoll set, in the runtime's poller; nil while stopped
	epfd   int
	broken bool     // the epoll set failed: nothing parks any more
	slots  []*Entry // by slot number minus one (the events carry it)
	free   []int32  // free slot numbers
	n      int      // Entries holding a slot; the goroutine stops at 0
	epoch  time.Time
	next   int64 // when an armed Entry's deadline must be told, ns since epoch; 0 none
	set    int64 // the read deadline on f, ns since epoch; 0 none, -1 in the past

	// The epoll_ctl that ctlFn (ctl, bound once) makes inside a socket's
	// RawConn.Control, under mu: a closure made per call would be an
	// allocation per Park.
	ctlFn  func(fd uintptr)
	ctlOp  int
	ctlEv  unix.EpollEvent
	ctlErr error

	lim limiter // the limited Wakes (limit_linux.go)
}

// New returns a Parker. Its goroutine starts with the first Park.
func New() *Parker {
	pk := &Parker{epoch: time.Now()}
	pk.ctlFn = pk.ctl
	return pk
}

// ctl is ctlFn: the epoll_ctl set up under mu, on fd.
func (pk *Parker) ctl(fd uintptr) {
	ev := &pk.ctlEv
	if pk.ctlOp == unix.EPOLL_CTL_DEL {
		ev = nil
	}
	pk.ctlErr = unix.EpollCtl(pk.epfd, pk.ctlOp, int(fd), ev)
	if pk.ctlErr == unix.ENOENT && pk.ctlOp == unix.EPOLL_CTL_MOD {
		// Not in the set after all (a socket closed and reopened under
		// the same number cannot be: Control holds it open).
		pk.ctlErr = unix.EpollCtl(pk.epfd, unix.EPOLL_CTL_ADD, int(fd), ev)
	}
}

// Entry is one connection's registration with a Parker. The owner keeps
// it (it may be a field of the owner's own struct) for as long as it may
// park the connection, and releases it before it forgets the connection.
type Entry struct {
	pk       *Parker
	w        Waker
	rc       syscall.RawConn
	slot     int32 // slot number, from 1; 0 none
	gen      int32 // changes with each slot taken, so stale events are dropped
	armed    bool  // parked: Wake is due
	inSet    bool  // the socket is in the epoll set (added, not deleted)
	deadline int64 // ns since the Parker's epoch; 0 none
	by       int64 // deadline plus slack
	limited  bool  // its readable Wakes count against the Parker's limit (InitLimited)
}

// Init sets the Parker (nil parks nothing), the socket and the owner of
// e, which must not be parked.
func (e *Entry) Init(pk *Parker, rc syscall.RawConn, w Waker) {
	e.pk, e.rc, e.w, e.limited = pk, rc, w, false
}

// Park parks the connection until it is readable, or until deadline (the
// zero time for none) has passed, when w.Wake is told so at most slack
// later. It reports false when the connection cannot be parked: the owner
// keeps it and waits itself. After true, the owner must not read the
// connection, nor park it again, until Wake runs or Unpark reports true.
func (e *Entry) Park(deadline time.Time, slack time.Duration) bool {
	pk := e.pk
	if pk == nil || e.rc == nil {
		return false
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.broken || e.armed || !pk.startLocked() {
		return false
	}
	if e.slot == 0 {
		pk.takeSlotLocked(e)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: e.slot, Pad: e.gen}
	if !e.ctlLocked(ev) {
		return false
	}
	e.armed = true
	e.deadline, e.by = 0, 0
	if !deadline.IsZero() {
		e.deadline = max(int64(deadline.Sub(pk.epoch)), 1)
		e.by = e.deadline + int64(max(slack, 0))
		if pk.next == 0 || e.by < pk.next {
			pk.next = e.by
			pk.setDeadlineLocked(pk.next)
		}
	}
	return true
}

// ctlLocked arms e's socket in the epoll set with ev: added the first
// time, modified after (a one-shot registration stays in the set,
// disabled, once it has fired).
func (e *Entry) ctlLocked(ev unix.EpollEvent) bool {
	pk := e.pk
	pk.ctlOp, pk.ctlEv, pk.ctlErr = unix.EPOLL_CTL_MOD, ev, nil
	if !e.inSet {
		pk.ctlOp = unix.EPOLL_CTL_ADD
	}
	if err := e.rc.Control(pk.ctlFn); err != nil || pk.ctlErr != nil {
		return false
	}
	e.inSet = true
	return true
}

// delLocked takes e's socket out of the epoll set. A socket already
// closed has left it by itself.
func (e *Entry) delLocked() {
	if !e.inSet {
		return
	}
	e.inSet = false
	pk := e.pk
	if pk.f == nil {
		return // the set is gone
	}
	pk.ctlOp = unix.EPOLL_CTL_DEL
	_ = e.rc.Control(pk.ctlFn)
}

// Unpark takes a parked connection back. It reports true when it was
// parked: its Wake will not run for that Park, and the owner has the
// connection again. False means it was not parked, or Wake is on its way.
func (e *Entry) Unpark() bool {
	pk := e.pk
	if pk == nil {
		return false
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if !e.armed {
		return false
	}
	e.armed = false
	e.delLocked()
	return true
}

// Release unparks e, if it is parked (its Wake will not run), and forgets
// it. The owner may then close the connection, or may have closed it
// already. Init and Park may use e again after.
func (e *Entry) Release() {
	pk := e.pk
	if pk == nil {
		return
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	e.armed = false
	e.delLocked()
	if e.slot == 0 {
		return
	}
	pk.slots[e.slot-1] = nil
	pk.free = append(pk.free, e.slot)
	e.slot = 0
	if pk.n--; pk.n == 0 && pk.f != nil {
		pk.setDeadlineLocked(-1) // wake the goroutine, which stops
	}
}

func (pk *Parker) takeSlotLocked(e *Entry) {
	if n := len(pk.free); n > 0 {
		e.slot = pk.free[n-1]
		pk.free = pk.free[:n-1]
	} else {
		pk.slots = append(pk.slots, nil)
		e.slot = int32(len(pk.slots))
	}
	e.gen++
	pk.slots[e.slot-1] = e
	pk.n++
}

// startLocked makes the epoll set and starts the goroutine, unless they
// run already.
func (pk *Parker) startLocked() bool {
	if pk.f != nil {
		return true
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	// Non-blocking before os.NewFile, which then puts it in the runtime's
	// poller (a blocking descriptor it would not).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false
	}
	f := os.NewFile(uintptr(fd), "park-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return false
	}
	pk.f, pk.epfd, pk.set, pk.next = f, fd, 0, 0
	go pk.loop(f, rc)
	return true
}

// setDeadlineLocked makes the goroutine wake at at (ns since epoch; 0 for
// never, -1 at once).
func (pk *Parker) setDeadlineLocked(at int64) {
	if pk.f == nil || at == pk.set {
		return
	}
	pk.set = at
	switch {
	case at == 0:
		_ = pk.f.SetReadDeadline(time.Time{})
	case at < 0:
		_ = pk.f.SetReadDeadline(time.Unix(1, 0))
	default:
		_ = pk.f.SetReadDeadline(pk.epoch.Add(time.Duration(at)))
	}
}

// woken is a Waker due, and why.
type woken struct {
	w       Waker
	expired bool
	limited bool // a readable Wake of an Entry made with InitLimited
}

// wakes is the queue of the Wakers due, which every Parker shares: wakeAll
// appends them and starts a goroutine for each, which takes one (runWake).
// A go statement with arguments, or with a method value, allocates a
// closure; one calling a plain function without arguments does not, and
// keep-alive connections wake once a request.
var wakes struct {
	mu sync.Mutex
	q  wakeQueue
}

func wakeAll(due []woken) {
	wakes.mu.Lock()
	wakes.q.push(due)
	wakes.mu.Unlock()
	for range due {
		go runWake()
	}
}

func runWake() {
	wakes.mu.Lock()
	d := wakes.q.pop()
	wakes.mu.Unlock()
	d.w.Wake(d.expired)
}

// wakeQueue is a FIFO of Wakes due; its owner locks it.
type wakeQueue struct {
	q    []woken // from head
	head int
}

func (wq *wakeQueue) push(due []woken) { wq.q = append(wq.q, due...) }

// len returns how many Wakes are queued.
func (wq *wakeQueue) len() int { return len(wq.q) - wq.head }

// pop takes the first Wake queued (there must be one), and moves the rest
// to the front of the slice once it is empty or half taken.
func (wq *wakeQueue) pop() woken {
	d := wq.q[wq.head]
	wq.q[wq.head] = woken{}
	wq.head++
	switch n := len(wq.q); {
	case wq.head == n:
		wq.q, wq.head = wq.q[:0], 0
	case wq.head >= 64 && 2*wq.head >= n:
		k := copy(wq.q, wq.q[wq.head:])
		clear(wq.q[k:])
		wq.q, wq.head = wq.q[:k], 0
	}
	return d
}

// loop is the Parker's goroutine: it waits for the epoll set to be
// readable or for the next deadline, wakes the owners due, and stops,
// closing the set, once no Entry holds a slot.
func (pk *Parker) loop(f *os.File, rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 128)
	var got int
	var due, limited []woken
	ready := func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				return false // nothing ready: wait for the set to be readable
			}
			got = n
			return true
		}
	}
	for {
		got = 0
		err := rc.Read(ready)
		pk.mu.Lock()
		due = pk.readyLocked(events[:got], due)
		now := int64(time.Since(pk.epoch))
		if pk.next != 0 && now >= pk.next {
			due = pk.expireLocked(now, due)
		}
		stop := pk.n == 0
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			// Not expected: the set itself failed. Every parked
			// connection goes back to its owner, and nothing parks again.
			pk.broken = true
			due = pk.allLocked(due)
			stop = true
		}
		if stop {
			pk.f = nil
		} else {
			pk.setDeadlineLocked(pk.next)
		}
		pk.mu.Unlock()
		if len(due) > 0 {
			n := 0
			for _, d := range due {
				if d.limited {
					limited = append(limited, d)
				} else {
					due[n] = d
					n++
				}
			}
			if len(limited) > 0 {
				pk.wakeLimited(limited)
				clear(limited)
				limited = limited[:0]
			}
			wakeAll(due[:n])
			clear(due)
			due = due[:0]
		}
		if stop {
			f.Close()
			return
		}
	}
}

// readyLocked disarms the Entries of evs and appends their Wakers to due.
func (pk *Parker) readyLocked(evs []unix.EpollEvent, due []woken) []woken {
	for _, ev := range evs {
		slot := ev.Fd
		if slot < 1 || int(slot) > len(pk.slots) {
			continue
		}
		e := pk.slots[slot-1]
		if e == nil || e.gen != ev.Pad || !e.armed {
			continue // an event for an Entry released or unparked since
		}
		e.armed = false // the one-shot registration is disabled now
		due = append(due, woken{w: e.w, limited: e.limited})
	}
	return due
}

// expireLocked disarms the armed Entries whose deadline has passed,
// appends their Wakers to due, and finds the next deadline.
func (pk *Parker) expireLocked(now int64, due []woken) []woken {
	next := int64(0)
	for _, e := range pk.slots {
		if e == nil || !e.armed || e.deadline == 0 {
			continue
		}
		if e.deadline <= now {
			e.armed = false
			e.delLocked()
			due = append(due, woken{w: e.w, expired: true})
			continue
		}
		if next == 0 || e.by < next {
			next = e.by
		}
	}
	pk.next = next
	return due
}

// allLocked disarms every armed Entry and appends its Waker to due.
func (pk *Parker) allLocked(due []woken) []woken {
	for _, e := range pk.slots {
		if e != nil && e.armed {
			e.armed = false
			e.inSet = false
			due = append(due, woken{w: e.w})
		}
	}
	return due
}
