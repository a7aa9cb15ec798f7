//go:build linux

package park

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCPU makes the limiter see the machine's processors all busy, or all
// idle, from the next reading on.
func fakeCPU(t *testing.T, busy bool) {
	t.Helper()
	var idle, total uint64
	var mu sync.Mutex
	old := cpuTimes
	cpuTimes = func(*cpuLoad) (uint64, uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		total += 100
		if !busy {
			idle += 100
		}
		return idle, total, true
	}
	t.Cleanup(func() { cpuTimes = old })
}

// enter counts one more Wake running, and keeps the most seen at once.
func enter(running, most *atomic.Int32) {
	n := running.Add(1)
	for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
	}
}

// gauge is a Waker that counts the Wakes running at once: each holds for
// hold, or until release is closed when hold is 0.
type gauge struct {
	running, most, woken atomic.Int32
	hold                 time.Duration
	release              chan struct{}
	started              chan struct{}
}

func (g *gauge) Wake(expired bool) {
	enter(&g.running, &g.most)
	g.woken.Add(1)
	if g.started != nil {
		g.started <- struct{}{}
	}
	if g.hold > 0 {
		time.Sleep(g.hold)
	} else {
		<-g.release
	}
	g.running.Add(-1)
}

// TestLimit makes 12 parked connections readable at once under a limit of
// 3, with every processor busy: all are served, never more than 3 at once.
// Without the limit, all 12 would run together.
func TestLimit(t *testing.T) {
	for _, limit := range []int{3, 0} {
		fakeCPU(t, true)
		pk := New()
		pk.SetLimit(limit)
		ps := pairs(t, 12)
		g := &gauge{hold: 30 * time.Millisecond}
		es := make([]Entry, len(ps))
		for i, p := range ps {
			es[i].InitLimited(pk, rawConn(t, p.srv), g)
			if !es[i].Park(time.Time{}, 0) {
				t.Fatal("Park failed")
			}
		}
		for _, p := range ps {
			if _, err := p.cli.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
		}
		for end := time.Now().Add(10 * time.Second); g.woken.Load() < int32(len(ps)) || g.running.Load() > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("limit %d: %d of %d woken", limit, g.woken.Load(), len(ps))
			}
		}
		switch most := g.most.Load(); {
		case limit > 0 && most > int32(limit):
			t.Errorf("limit %d: %d Wakes ran at once", limit, most)
		case limit == 0 && most < 4:
			t.Errorf("no limit: at most %d Wakes ran at once; the test cannot tell a limit", most)
		}
		for i := range es {
			es[i].Release()
		}
		stopped(t, pk)
	}
}

// TestLimitStuck: a Wake that blocks (a long poll) holds its goroutine,
// but not the others back: with the limit taken by blocked Wakes, another
// connection is still served, whether the processors are busy (after
// stuckAfterBusy) or idle (after stuckAfter). A connection whose deadline
// passes is told at once, outside the limit.
func TestLimitStuck(t *testing.T) {
	for _, busy := range []bool{false, true} {
		fakeCPU(t, busy)
		pk := New()
		pk.SetLimit(2)
		ps := pairs(t, 4)
		blocked := &gauge{release: make(chan struct{}), started: make(chan struct{}, 2)}
		quick := newRecorder()
		es := make([]Entry, len(ps))
		for i, p := range ps {
			var w Waker = blocked
			if i >= 2 {
				w = quick
			}
			es[i].InitLimited(pk, rawConn(t, p.srv), w)
			deadline := time.Time{}
			if i == 3 {
				deadline = time.Now().Add(50 * time.Millisecond) // never readable: expires
			}
			if !es[i].Park(deadline, 0) {
				t.Fatal("Park failed")
			}
		}
		for _, p := range ps[:2] {
			if _, err := p.cli.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
		}
		<-blocked.started
		<-blocked.started // the limit is taken
		expired, ok := waitWake(t, quick, 5*time.Second)
		if !ok || !expired {
			t.Fatalf("busy %v: the deadline was not told past a full limit (woken %v, expired %v)", busy, ok, expired)
		}
		pk.lim.mu.Lock()
		active := pk.lim.active
		pk.lim.mu.Unlock()
		if active != 2 {
			t.Errorf("busy %v: the expired Wake ran as a limited one (%d limited goroutines, want the 2 blocked)", busy, active)
		}
		if _, err := ps[2].cli.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		if expired, ok := waitWake(t, quick, 10*time.Second); !ok || expired {
			t.Fatalf("busy %v: a readable connection was not served past Wakes that block (woken %v)", busy, ok)
		}
		close(blocked.release)
		for i := range es {
			es[i].Release()
		}
		stopped(t, pk)
		for blocked.running.Load() > 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestLimitAdapts: the limit in force grows while the machine and this
// process leave processors idle with Wakes waiting (requests that wait on
// their upstreams), up to 16 times the limit set; and shrinks back to the
// limit set, never below, while the machine is busy or this process uses
// its processors (a container's quota), more requests at once serving
// none sooner.
func TestLimitAdapts(t *testing.T) {
	var machineBusy bool
	var self time.Duration
	var selfRate float64 // of GOMAXPROCS processors, per interval
	var idle, total uint64
	oldTimes, oldSelf := cpuTimes, selfCPU
	t.Cleanup(func() { cpuTimes, selfCPU = oldTimes, oldSelf })
	cpuTimes = func(*cpuLoad) (uint64, uint64, bool) {
		total += 100
		if !machineBusy {
			idle += 50
		}
		return idle, total, true
	}
	selfCPU = func() (time.Duration, bool) { return self, true }
	l := &limiter{max: 8, cur: 8}
	now := time.Duration(0)
	step := func() int { // what lookAgain does, a reading every cpuEvery
		now += cpuEvery
		self += time.Duration(selfRate * float64(cpuEvery) * float64(runtime.GOMAXPROCS(0)))
		busy, fresh := l.cpu.sample(now)
		l.adaptLocked(busy, fresh)
		return l.cur
	}
	step() // the first reading: no interval yet, counted busy
	if l.cur != 8 || !l.busy {
		t.Fatalf("the first reading: limit %d, busy %v; want 8, true", l.cur, l.busy)
	}
	prev := 8
	for range 30 {
		if cur := step(); cur < prev {
			t.Fatalf("idle processors: the limit shrank from %d to %d", prev, cur)
		} else {
			prev = cur
		}
	}
	if prev != 8*maxGrowth || l.busy {
		t.Errorf("idle processors: the limit grew to %d (busy %v), want %d", prev, l.busy, 8*maxGrowth)
	}
	for _, c := range []struct {
		name        string
		machineBusy bool
		selfRate    float64
	}{
		{"busy process, idle machine", false, 0.95},
		{"busy machine", true, 0},
	} {
		machineBusy, selfRate, l.cur = c.machineBusy, c.selfRate, 8*maxGrowth
		prev := l.cur
		for range 60 {
			if cur := step(); cur > prev {
				t.Fatalf("%s: the limit grew from %d to %d", c.name, prev, cur)
			} else {
				prev = cur
			}
		}
		if l.cur != 8 || !l.busy {
			t.Errorf("%s: the limit is %d (busy %v), want the 8 set", c.name, l.cur, l.busy)
		}
	}
}

// churner is a connection that keeps its Waker busy: each Wake reads what
// came, holds for a millisecond and parks the connection again, while the
// test keeps writing to it.
type churner struct {
	e                    Entry
	srv                  *net.TCPConn
	stop                 *atomic.Bool
	running, most, woken *atomic.Int32
}

func (c *churner) Wake(expired bool) {
	enter(c.running, c.most)
	c.woken.Add(1)
	buf := make([]byte, 64)
	_, _ = c.srv.Read(buf)
	time.Sleep(time.Millisecond)
	c.running.Add(-1)
	if !c.stop.Load() {
		c.e.Park(time.Time{}, 0)
	}
}

// TestLimitAfterStuck: goroutines started in place of stuck Wakes stop once
// those return, though the queue never empties (clients that send their
// next request as soon as they are answered): the limit holds again.
func TestLimitAfterStuck(t *testing.T) {
	fakeCPU(t, true) // no growth; a Wake is stuck after stuckAfterBusy
	pk := New()
	pk.SetLimit(2)
	ps := pairs(t, 14)
	blocked := &gauge{release: make(chan struct{}), started: make(chan struct{}, 2)}
	var stop atomic.Bool
	var running, most, woken atomic.Int32
	chs := make([]*churner, 12)
	var blockers [2]Entry
	for i := range blockers {
		blockers[i].InitLimited(pk, rawConn(t, ps[i].srv), blocked)
		blockers[i].Park(time.Time{}, 0)
		if _, err := ps[i].cli.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	<-blocked.started
	<-blocked.started // the limit is taken by Wakes that block
	for i := range chs {
		p := ps[2+i]
		chs[i] = &churner{srv: p.srv, stop: &stop, running: &running, most: &most, woken: &woken}
		chs[i].e.InitLimited(pk, rawConn(t, p.srv), chs[i])
		chs[i].e.Park(time.Time{}, 0)
	}
	var writers sync.WaitGroup
	done := make(chan struct{})
	for i := range chs {
		cli := ps[2+i].cli
		writers.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(2 * time.Millisecond):
					if _, err := cli.Write([]byte{1}); err != nil {
						return
					}
				}
			}
		})
	}
	// Past stuckAfterBusy, goroutines stand in for the blocked Wakes.
	for end := time.Now().Add(10 * time.Second); woken.Load() < 50; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the churning connections were not served past the blocked Wakes (%d wakes)", woken.Load())
		}
	}
	close(blocked.release)
	for blocked.running.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the goroutines past the limit finish their Wakes
	most.Store(0)
	from := woken.Load()
	time.Sleep(400 * time.Millisecond)
	if woken.Load()-from < 20 {
		t.Errorf("only %d Wakes in 400 ms after the blocked ones returned", woken.Load()-from)
	}
	if m := most.Load(); m > 2 {
		t.Errorf("%d Wakes ran at once after the blocked ones returned, past the limit of 2", m)
	}
	close(done)
	writers.Wait()
	stop.Store(true)
	for running.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // Wakes queued when stop was set run and end
	for i := range blockers {
		blockers[i].Release()
	}
	for _, c := range chs {
		c.e.Release()
	}
	stopped(t, pk)
}
