//go:build linux

package park

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// A Parker may bound how many of its connections are served at once
// (SetLimit): the Wakes of Entries made with InitLimited then run on a
// limited number of goroutines, which take the connections that became
// readable in turn, while the others wait unread in their sockets, in the
// order they became readable, with nothing of theirs in memory but their
// Entry and its owner. A thousand busy keep-alive clients then cost a
// thousand parked connections and about the limit's worth of goroutines,
// read buffers, requests and upstream connections, instead of a thousand of
// each. With the processors busy, the requests past the limit would only
// have waited for a processor instead, each holding its goroutine and
// buffers meanwhile; the proxy serves as many a second.
//
// No processor is to spare when the machine's CPU time was nearly all
// used (/proc/stat) or this process used nine tenths of its processors
// (GOMAXPROCS, which follows a container's quota) or more, over the last
// tenth of a second. The limit set is a floor: while Wakes wait for a
// goroutine and processors are to spare (a limit too low for requests that
// wait on their upstreams), the limit in force grows by a quarter every
// tenth of a second, up to sixteen times the floor; while none is, it
// shrinks by a tenth, down to the floor, and it goes back to the floor once
// nothing has waited for a second.
//
// A served connection that blocks for long (a long poll, a slow upstream)
// must not hold the others back, so a goroutine whose Wake has run for
// longer than stuckAfter does not count against the limit; while no
// processor is to spare, more requests at once cannot be served sooner,
// and a Wake counts until it has run for stuckAfterBusy. While connections
// wait for a goroutine, the Parker looks again every stuckAfter. A
// goroutine that finishes a Wake while more run than the limit allows (it
// stood in for a stuck one that has returned) stops.
const (
	stuckAfter     = 20 * time.Millisecond
	stuckAfterBusy = 250 * time.Millisecond
	// busyIdle is the share of the machine's CPU time (idle and iowait,
	// in /proc/stat) under which no processor counts as spare. At 0.05,
	// a loaded 2-processor machine (wrk, an origin and the proxy) showed
	// 5–12 % idle in scheduling gaps, and the limit grew to no use: the
	// peak memory of 1,000 busy connections went from 33 to 48 MiB for
	// the same requests a second (docs/benchmarks.md, "Issue 16").
	busyIdle = 0.15
)

// limiter is the state of a Parker's limited Wakes.
type limiter struct {
	mu      sync.Mutex
	max     int       // the limit set; 0 none
	cur     int       // the limit in force: from max up to maxGrowth times it
	q       wakeQueue // Wakes waiting for a goroutine
	active  int       // goroutines running limited Wakes
	pending int       // of them, those started that have not taken a Wake yet
	since   []int64   // per goroutine (by index): when its Wake began, ns since the Parker's epoch; 0 none
	free    []int     // indexes of since not in use
	timer   *time.Timer
	timed   bool          // the timer is set
	busy    bool          // no processor to spare, as the last CPU reading said (stuckAfterBusy)
	waited  time.Duration // when Wakes last had to wait (since the Parker's epoch)
	cpu     cpuLoad       // read by the timer's goroutine only (lookAgain), outside mu
}

// SetLimit bounds the limited Wakes (InitLimited) running at once to n,
// not counting those that have run for long (stuckAfter); 0 (as a Parker
// starts) is no bound.
func (pk *Parker) SetLimit(n int) {
	l := &pk.lim
	l.mu.Lock()
	l.max = max(n, 0)
	l.cur = l.max
	l.busy = true // until the first reading says otherwise
	pk.spawnLocked()
	l.mu.Unlock()
}

// Limit returns the bound set by SetLimit (0 for none).
func (pk *Parker) Limit() int {
	l := &pk.lim
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

// InitLimited is Init for an Entry whose Wakes count against the Parker's
// limit (SetLimit); only the Wakes of readable connections do: one whose
// deadline passed is told at once.
func (e *Entry) InitLimited(pk *Parker, rc syscall.RawConn, w Waker) {
	e.Init(pk, rc, w)
	e.limited = true
}

// wakeLimited queues the limited Wakes due and starts the goroutines the
// limit allows; running goroutines take the rest as they finish.
func (pk *Parker) wakeLimited(due []woken) {
	l := &pk.lim
	l.mu.Lock()
	l.q.push(due)
	pk.spawnLocked()
	l.mu.Unlock()
}

// spawnLocked starts goroutines for the queued Wakes that no goroutine is
// on its way to take, as many as the limit allows, and sets the timer to
// look again when some are left waiting.
func (pk *Parker) spawnLocked() {
	l := &pk.lim
	waiting := l.q.len() - l.pending
	if waiting <= 0 {
		return
	}
	allowed := waiting
	if l.max > 0 {
		if allowed = l.cur - l.active; allowed < waiting {
			allowed += l.stuckLocked(time.Since(pk.epoch))
		}
	}
	for ; waiting > 0 && allowed > 0; waiting, allowed = waiting-1, allowed-1 {
		i := len(l.since)
		if n := len(l.free); n > 0 {
			i, l.free = l.free[n-1], l.free[:n-1]
		} else {
			l.since = append(l.since, 0)
		}
		l.active++
		l.pending++
		go pk.runLimited(i)
	}
	if waiting <= 0 {
		return
	}
	l.waited = time.Since(pk.epoch)
	if !l.timed {
		if l.timer == nil {
			l.timer = time.AfterFunc(stuckAfter, pk.lookAgain)
		} else {
			l.timer.Reset(stuckAfter)
		}
		l.timed = true
	}
}

// maxGrowth bounds the limit in force, as a multiple of the limit set.
const maxGrowth = 16

// adaptLocked takes a CPU reading (cpuLoad.sample): whether there is no
// processor to spare, and, when the reading ends an interval, moves the
// limit in force: down by a tenth towards the limit set when there is
// none, else up by a quarter towards maxGrowth times it (adaptLocked runs
// only while Wakes wait).
func (l *limiter) adaptLocked(busy, fresh bool) {
	l.busy = busy
	switch {
	case !fresh:
	case busy:
		l.cur = max(l.max, l.cur-max(1, l.cur/10))
	default:
		l.cur = min(maxGrowth*l.max, l.cur+l.cur/4+1)
	}
}

// stuckLocked counts the goroutines whose Wake began more than stuckAfter
// (stuckAfterBusy while busy) before now.
func (l *limiter) stuckLocked(now time.Duration) int {
	after := int64(stuckAfter)
	if l.busy {
		after = int64(stuckAfterBusy)
	}
	n := 0
	for _, t := range l.since {
		if t != 0 && int64(now)-t > after {
			n++
		}
	}
	return n
}

// overLocked reports whether more goroutines run limited Wakes than the
// limit in force and the stuck ones allow: one that has finished a Wake
// then stops, and leaves the queue to the others.
func (l *limiter) overLocked(now time.Duration) bool {
	return l.max > 0 && l.active > l.cur && l.active-l.stuckLocked(now) > l.cur
}

// lookAgain is the timer's: Wakes have waited for stuckAfter. It reads
// the CPU counters first, outside mu (the timer is set again only once
// lookAgain has cleared timed, so two never read at once).
func (pk *Parker) lookAgain() {
	l := &pk.lim
	busy, fresh := l.cpu.sample(time.Since(pk.epoch))
	l.mu.Lock()
	l.timed = false
	l.adaptLocked(busy, fresh)
	pk.spawnLocked()
	l.mu.Unlock()
}

// runLimited is a goroutine of the limited Wakes, with index i in since: it
// runs the queued Wakes one after another until none is left, or until it
// is one past the limit (goroutines started in place of stuck ones whose
// Wakes have since returned).
func (pk *Parker) runLimited(i int) {
	l := &pk.lim
	l.mu.Lock()
	l.pending--
	for l.q.len() > 0 {
		now := time.Since(pk.epoch)
		if l.overLocked(now) {
			break
		}
		d := l.q.pop()
		l.since[i] = max(int64(now), 1)
		l.mu.Unlock()
		d.w.Wake(d.expired)
		l.mu.Lock()
		l.since[i] = 0
	}
	l.free = append(l.free, i)
	l.active--
	if l.q.len() == 0 {
		if l.cur > l.max && time.Since(pk.epoch)-l.waited > cpuStale {
			l.cur = l.max // nothing has waited for a while: the next burst starts from the limit set
		}
	} else {
		pk.spawnLocked() // left to the others: the timer looks again
	}
	l.mu.Unlock()
}

// cpuLoad tells whether a processor was to spare lately, from the
// machine's CPU time (/proc/stat) and this process's (getrusage), read at
// most every cpuEvery.
type cpuLoad struct {
	at          time.Duration // when last read (since the Parker's epoch); 0 never
	idle, total uint64        // the machine's counters then
	self        time.Duration // this process's CPU time then
	isBusy      bool          // the verdict on the interval that ended then
	buf         []byte
}

// cpuEvery is the shortest interval between two readings of /proc/stat
// (its counters move every 10 ms); a reading older than cpuStale says
// nothing of now.
const cpuEvery, cpuStale = 100 * time.Millisecond, time.Second

// sample returns the verdict on the last interval of at least cpuEvery:
// busy when no processor was to spare — the idle share of the machine's
// CPU time under busyIdle, or this process using nine tenths of its
// processors (GOMAXPROCS, which follows a container's CPU quota) or more;
// fresh when the interval ended now. Until there is such an interval (the
// first call, or the first after cpuStale) it says busy: a burst's first
// tenth of a second is served within the limit set. Unreadable, it says
// not busy and never fresh (the limit then holds a Wake back for
// stuckAfter only, and does not grow).
func (c *cpuLoad) sample(now time.Duration) (busy, fresh bool) {
	if c.at != 0 && now-c.at < cpuEvery {
		return c.isBusy, false
	}
	idle, total, ok := cpuTimes(c)
	self, ok2 := selfCPU()
	if !ok || !ok2 {
		c.at, c.isBusy = now, false
		return false, false
	}
	if c.at == 0 || now-c.at > cpuStale || total <= c.total {
		c.isBusy = true
	} else {
		machineIdle := float64(max(int64(idle)-int64(c.idle), 0)) / float64(total-c.total)
		procIdle := 1 - float64(self-c.self)/(float64(now-c.at)*float64(runtime.GOMAXPROCS(0)))
		c.isBusy, fresh = machineIdle < busyIdle || procIdle < 0.10, true
	}
	c.at, c.idle, c.total, c.self = now, idle, total, self
	return c.isBusy, fresh
}

// selfCPU is how sample reads this process's CPU time (tests replace it).
var selfCPU = func() (time.Duration, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// cpuTimes is how sample reads the machine's CPU times (tests replace it).
var cpuTimes = (*cpuLoad).read

// read returns the idle (idle and iowait) and total CPU time of the
// machine's first line of /proc/stat, in clock ticks.
func (c *cpuLoad) read() (idle, total uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	if c.buf == nil {
		c.buf = make([]byte, 512)
	}
	n, _ := f.Read(c.buf)
	line, _, _ := bytes.Cut(c.buf[:n], []byte{'\n'})
	fields := bytes.Fields(line)
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return 0, 0, false
	}
	for i, f := range fields[1:] {
		if i >= 8 {
			break // guest and guest_nice: counted in user and nice already
		}
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total, true
}
