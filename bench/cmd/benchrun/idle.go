package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// The idle scenarios hold n tunnels or keep-alive connections open through
// a fresh proxy and measure what they cost it while idle. loadgen opens
// them and is driven phase by phase over its stdin (cmd/loadgen/idle.go):
//
//  1. warm-up: 50 connections opened, used and closed; then the proxy's
//     VmRSS "before" is read once its CPU time has stood still (settled),
//     and again after a forced collection (forced, below);
//  2. open: n connections, 64 at a time; setup rate, refusals, errors, and
//     the proxy's CPU time for it;
//  3. the proxy's VmRSS, descriptors and threads "with" them, settled, then
//     forced;
//  4. check: every connection used once more: 8 bytes echoed through each
//     tunnel by the origin's sink, a second GET on each connection;
//  5. close.
//
// Settled: read once the proxy's CPU time (process tree, clock ticks) has
// not moved for settleQuiet, at least settleMin after the phase and at most
// settleMax. Forced: for a Go target (freesOnSignal) after SIGUSR1, which
// runs debug.FreeOSMemory (a collection, then the freed pages returned to
// the system), and settling again; for the others a second settled reading.
// The settled figure is what the system sees; the forced one is closer to
// what the connections keep alive, without the garbage a Go heap carries
// until its next collection.
const (
	settleMin, settleQuiet, settleMax = time.Second, time.Second, 15 * time.Second
	idleWarm                          = 50
	idleParallel                      = 64
)

// idleReport is one phase's JSON line from loadgen (cmd/loadgen/idle.go).
type idleReport struct {
	Phase   string  `json:"phase"`
	N       int     `json:"n"`
	OK      int     `json:"ok"`
	Refused int     `json:"refused"`
	Errors  int     `json:"errors"`
	Closed  int     `json:"closed"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error"`
}

// idleFigures are one idle run's measurements.
type idleFigures struct {
	N, Opened, Refused, Errors, Closed int
	SetupSeconds, SetupRate            float64 // the open phase; connections opened a second
	SetupCPUms                         float64 // proxy CPU milliseconds per 1000 connections opened
	// Proxy VmRSS in bytes: before and with the connections; settled and forced.
	RSSBefore, RSSWith, RSSBeforeForced, RSSWithForced int64
	KiB, KiBForced                                     float64 // VmRSS growth per connection opened
	FDsPer                                             float64 // descriptors per connection opened
	Threads                                            int64   // proxy threads with the connections open
	Checked, CheckOK                                   int
	Unsettled                                          bool // a reading was taken at settleMax with the CPU still moving
	FirstError, CheckError                             string
}

// runIdle runs an idle scenario against the proxy p at address proxy (nil
// and "" for direct, which measures loadgen and the sink alone).
func (h *harness) runIdle(ctx context.Context, rr *runResult, s scenario, t target, p *proc, proxy, logFile string) *runResult {
	fig := &idleFigures{N: s.conns}
	rr.Idle = fig
	argv := []string{filepath.Join(h.tmp, "loadgen"), "-mode", s.tool, "-n", strconv.Itoa(s.conns),
		"-warm", strconv.Itoa(idleWarm), "-parallel", strconv.Itoa(idleParallel), "-proxy", proxy}
	if s.tool == "tunnels-idle" {
		argv = append(argv, "-target", h.originSink)
	} else {
		argv = append(argv, "-url", "http://"+h.originHTTP+s.path)
	}
	lg, in, out, err := h.procs.startPiped(h.pinned(loadCPU, argv), os.Environ(), logFile)
	if err != nil {
		return rr.fail(err)
	}
	defer h.procs.stop(lg)
	defer in.Close()
	defer out.Close()
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	next := func(phase string) (idleReport, error) {
		var rep idleReport
		select {
		case b, ok := <-lines:
			if !ok {
				return rep, fmt.Errorf("loadgen ended before %s: %s", phase, lg.tail())
			}
			if err := json.Unmarshal(b, &rep); err != nil || rep.Phase != phase {
				return rep, fmt.Errorf("loadgen: want phase %s, got %q", phase, b)
			}
			return rep, nil
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(5 * time.Minute):
			return rep, fmt.Errorf("loadgen: no %s report after 5 minutes", phase)
		}
	}
	send := func(cmd string) error {
		_, err := in.WriteString(cmd + "\n")
		return err
	}
	settle := func() {
		if p != nil && !h.settle(ctx, p) {
			fig.Unsettled = true
		}
	}
	force := func() {
		if p != nil && t.freesOnSignal {
			_ = syscall.Kill(p.pid(), syscall.SIGUSR1)
		}
		settle()
	}

	if _, err := next("warm"); err != nil {
		return rr.fail(err)
	}
	var fd0 int64
	if p != nil {
		settle()
		fig.RSSBefore, fd0 = treeRSS(p.pid()), treeFDs(p.pid())
		force()
		fig.RSSBeforeForced = treeRSS(p.pid())
	}

	var proxyTicks, originTicks cpuTicks
	if p != nil {
		proxyTicks = treeTicks(p.pid())
	}
	originTicks = treeTicks(h.origin.pid())
	mach, t0 := machineStat(), time.Now()
	rr.LoadBefore = loadavg()
	if err := send("open"); err != nil {
		return rr.fail(err)
	}
	open, err := next("open")
	if err != nil {
		return rr.fail(err)
	}
	fig.Opened, fig.Refused, fig.Errors, fig.Closed = open.OK, open.Refused, open.Errors, open.Closed
	fig.SetupSeconds, fig.FirstError = open.Seconds, open.Error
	if open.Seconds > 0 {
		fig.SetupRate = float64(open.OK) / open.Seconds
	}
	if p != nil {
		used := float64(treeTicks(p.pid()).sub(proxyTicks).total()) / h.tck
		if open.OK > 0 {
			fig.SetupCPUms = used * 1e3 / float64(open.OK) * 1000
		}
		settle()
		fig.RSSWith, fig.Threads = treeRSS(p.pid()), treeThreads(p.pid())
		fd1 := treeFDs(p.pid())
		force()
		fig.RSSWithForced = treeRSS(p.pid())
		if n := float64(open.OK); n > 0 {
			fig.KiB = float64(fig.RSSWith-fig.RSSBefore) / 1024 / n
			fig.KiBForced = float64(fig.RSSWithForced-fig.RSSBeforeForced) / 1024 / n
			fig.FDsPer = float64(fd1-fd0) / n
		}
		rr.RSSMiB = float64(treeHWM(p.pid())) / (1 << 20)
	}

	if err := send("check"); err != nil {
		return rr.fail(err)
	}
	check, err := next("check")
	if err != nil {
		return rr.fail(err)
	}
	fig.Checked, fig.CheckOK, fig.CheckError = check.N, check.OK, check.Error
	_ = send("close")
	select {
	case <-lg.done:
	case <-time.After(time.Minute):
		return rr.fail(errors.New("loadgen did not exit after close"))
	}
	wall := time.Since(t0).Seconds()
	mach2 := machineStat()
	rr.LoadAfter = loadavg()
	if p != nil && p.exited() {
		return rr.fail(fmt.Errorf("proxy exited during the run: %s", p.tail()))
	}
	var ours float64
	if st := lg.cmd.ProcessState; st != nil {
		ours += (st.UserTime() + st.SystemTime()).Seconds()
	}
	ours += float64(treeTicks(h.origin.pid()).sub(originTicks).total()) / h.tck
	if p != nil {
		ours += float64(treeTicks(p.pid()).sub(proxyTicks).total()) / h.tck
	}
	if dt := mach2.total - mach.total; dt > 0 {
		rr.IdlePct = 100 * float64(dt-(mach2.busy-mach.busy)) / float64(dt)
	}
	rr.OthersCPU = max(0, (float64(mach2.busy-mach.busy)/h.tck-ours)/wall)
	rr.Errors = int64(fig.Refused + fig.Errors + (check.N - check.OK))
	return rr
}

// settle waits until the proxy's CPU time has not moved for settleQuiet
// (checked every 100 ms), at least settleMin and at most settleMax; it
// reports whether the CPU settled.
func (h *harness) settle(ctx context.Context, p *proc) bool {
	start := time.Now()
	last, since := treeTicks(p.pid()).total(), start
	for {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
		now := time.Now()
		if cur := treeTicks(p.pid()).total(); cur != last {
			last, since = cur, now
		}
		if now.Sub(since) >= settleQuiet && now.Sub(start) >= settleMin {
			return true
		}
		if now.Sub(start) >= settleMax {
			return false
		}
	}
}
