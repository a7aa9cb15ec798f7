package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK), the unit of the CPU
// times in /proc/PID/stat and /proc/stat.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}

// cpuTicks is CPU time in clock ticks, split into time in user space and
// time in the kernel (system calls, and the network stack's work done on
// the process's behalf).
type cpuTicks struct{ user, sys int64 }

func (t cpuTicks) total() int64 { return t.user + t.sys }

func (t cpuTicks) sub(u cpuTicks) cpuTicks { return cpuTicks{t.user - u.user, t.sys - u.sys} }

// procStat returns a process's parent pid and its CPU ticks: utime and
// stime, plus cutime and cstime of children it has reaped.
func procStat(pid int) (ppid int, t cpuTicks, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, cpuTicks{}, false
	}
	return parseStat(b)
}

// parseStat parses the contents of /proc/PID/stat (see proc(5)).
func parseStat(b []byte) (ppid int, t cpuTicks, ok bool) {
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, cpuTicks{}, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, cpuTicks{}, false
	}
	var n [4]int64 // fields 14-17: utime stime cutime cstime
	for j := range n {
		var err error
		if n[j], err = strconv.ParseInt(f[11+j], 10, 64); err != nil {
			return 0, cpuTicks{}, false
		}
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, cpuTicks{}, false
	}
	return ppid, cpuTicks{user: n[0] + n[2], sys: n[1] + n[3]}, true
}

// tree returns pid and all its descendants, for multi-process proxies.
func tree(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeTicks sums the CPU ticks of pid and its descendants.
func treeTicks(pid int) cpuTicks {
	var sum cpuTicks
	for _, p := range tree(pid) {
		if _, t, ok := procStat(p); ok {
			sum.user += t.user
			sum.sys += t.sys
		}
	}
	return sum
}

// treeHWM sums the peak resident set size (VmHWM) of pid and its
// descendants, in bytes. Pages shared between processes count once per
// process, so for a multi-process proxy this is an upper bound.
func treeHWM(pid int) int64 { return treeStatus(pid, "VmHWM") }

// treeRSS sums the resident set size (VmRSS) of pid and its descendants, in
// bytes (an upper bound for a multi-process proxy, as treeHWM).
func treeRSS(pid int) int64 { return treeStatus(pid, "VmRSS") }

// treeThreads sums the threads of pid and its descendants.
func treeThreads(pid int) int64 { return treeStatus(pid, "Threads") }

// treeStatus sums a field of /proc/PID/status over pid and its descendants.
func treeStatus(pid int, key string) int64 {
	var sum int64
	for _, p := range tree(pid) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			continue
		}
		if v, ok := statusField(b, key); ok {
			sum += v
		}
	}
	return sum
}

// statusField returns a field of /proc/PID/status (see proc(5)): sizes
// ("VmRSS:    1234 kB") in bytes, counts ("Threads:  8") as they are.
func statusField(b []byte, key string) (int64, bool) {
	for line := range strings.SplitSeq(string(b), "\n") {
		v, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		kb := strings.HasSuffix(v, " kB")
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err != nil {
			return 0, false
		}
		if kb {
			n <<= 10
		}
		return n, true
	}
	return 0, false
}

// treeFDs counts the open file descriptors of pid and its descendants.
func treeFDs(pid int) int64 {
	var sum int64
	for _, p := range tree(pid) {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/fd")
		if err == nil {
			sum += int64(len(ents))
		}
	}
	return sum
}

// machine is a snapshot of the whole machine's CPU counters (ticks, all CPUs).
type machine struct{ busy, total int64 }

func machineStat() machine {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machine{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var m machine
	for i := 1; i < len(f) && i <= 8; i++ {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		m.total += n
		if i != 4 && i != 5 { // idle, iowait
			m.busy += n
		}
	}
	return m
}

// loadavg returns the 1-minute load average.
func loadavg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// cpuModel returns the first "model name" in /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// kernel returns the running kernel's release.
func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// redisRoundTrips asks the Redis at addr how many reads from its clients
// it has processed (INFO stats: total_reads_processed): a request, or a
// pipeline of them, each read once (a large pipeline may take more, and the
// harness's own INFO counts too: it errs high). The commands Redis counts
// would not do: each script counts the commands it calls, and a pipeline
// as many commands as it holds.
func redisRoundTrips(addr string) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("INFO stats\r\n")); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n') // $<length>
	if err != nil || !strings.HasPrefix(head, "$") {
		return 0, fmt.Errorf("redis INFO: %q %v", head, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return 0, fmt.Errorf("redis INFO: %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_reads_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis INFO: no total_reads_processed")
}
