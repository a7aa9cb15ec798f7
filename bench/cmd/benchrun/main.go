// Command benchrun is the fwdproxy comparison benchmark: it starts the
// origin, then for every round, scenario and target a fresh proxy process,
// drives load through it with wrk or loadgen, measures the proxy from /proc,
// and prints a markdown table of medians. Run it from bench/:
//
//	go run ./cmd/benchrun -rounds 5 -duration 10s -targets all -scenarios all
//
// It only ever connects to 127.0.0.1, and stops every process it started,
// also on Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// With -pin, the proxy runs on CPU 1; the load generator and origin on CPU 0.
const proxyCPU, loadCPU = "1", "0"

type harness struct {
	benchDir, tmp, logDir string
	procs                 procs
	warmup, duration      time.Duration
	pin                   bool
	taskset, wrk          string
	programs              map[string]string // Debian-packaged proxies: name → path ("" if missing)
	fwdproxy, fwdproxyErr string            // the built example server, or why it did not build
	fwdproxyMITM          bool
	fwdproxyFront         bool     // has the front-end flags (-tls-listen, -socks-listen, -h2c)
	fwdproxyBase          string   // the example server built from -fwdproxy-base-src, or ""
	fwdproxyBaseFlags     []string // -fwdproxy-base-flags, split at spaces
	env                   []string // environment of the proxies
	loadThreads           int
	tck                   float64
	fdLimit               uint64 // the open-file limit the children inherit

	origin                                                     *proc
	originHTTP, originHTTPS, originRaw, originSink, originCert string
	// The certificate of fwdproxy's HTTPS listener, for the front-end
	// scenarios (front.go).
	proxyCert, proxyKey string

	chainHop  string // the second fwdproxy of a chain target, while its run starts
	redisAddr string // the redis-server of a redis target, while its run starts
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func run() error {
	rounds := flag.Int("rounds", 5, "rounds; each runs every scenario on every target once")
	duration := flag.Duration("duration", 10*time.Second, "measured duration of each run (wrk rounds up to whole seconds)")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured load before each measured run")
	targetList := flag.String("targets", "all", "comma-separated targets, or all: "+names(targets, func(t target) string { return t.name }))
	scenarioList := flag.String("scenarios", "all", "comma-separated scenarios, or all: "+names(scenarios, func(s scenario) string { return s.name }))
	quick := flag.Bool("quick", false, "smoke test: -rounds 1 -duration 2s -warmup 1s unless given")
	pin := flag.Bool("pin", false, "pin the proxy to CPU "+proxyCPU+" and the load generator and origin to CPU "+loadCPU+" (taskset)")
	fwdSrc := flag.String("fwdproxy-src", "..", "fwdproxy source tree whose examples/fwdproxy is built and measured")
	baseSrc := flag.String("fwdproxy-base-src", "", "a second fwdproxy source tree (e.g. the previous commit), measured as target fwdproxy-base")
	baseFlags := flag.String("fwdproxy-base-flags", "", "flags added to fwdproxy-base's, separated by spaces: \"-log-level warn -admin-listen 127.0.0.1:0\" makes it the base's fwdproxy-admin")
	out := flag.String("out", "", "directory for results.md, results.json and proxy logs (default results/<UTC time>)")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			*rounds = 1
		}
		if !set["duration"] {
			*duration = 2 * time.Second
		}
		if !set["warmup"] {
			*warmup = time.Second
		}
	}
	ts, err := pick(targets, *targetList, func(t target) string { return t.name })
	if err != nil {
		return err
	}
	if ts[0].name != "direct" { // the ratios need it
		ts = append([]target{targets[0]}, ts...)
	}
	ss, err := pick(scenarios, *scenarioList, func(s scenario) string { return s.name })
	if err != nil {
		return err
	}
	if *rounds < 1 || *duration < time.Second {
		return errors.New("need -rounds >= 1 and -duration >= 1s")
	}

	start := time.Now().UTC()
	if *out == "" {
		*out = filepath.Join("results", start.Format("20060102T150405Z"))
	}
	h := &harness{warmup: *warmup, duration: *duration, pin: *pin, logDir: filepath.Join(*out, "logs")}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer h.close()
	h.fwdproxyBaseFlags = strings.Fields(*baseFlags)
	if err := h.setup(*fwdSrc, *baseSrc); err != nil {
		return err
	}

	m := meta{
		Date: start.Format(time.RFC3339), Command: strings.Join(append([]string{"go run ./cmd/benchrun"}, os.Args[1:]...), " "),
		Machine:  fmt.Sprintf("%d CPUs, %s, Linux %s", runtime.NumCPU(), cpuModel(), kernel()),
		Fwdproxy: fwdproxyVersion(*fwdSrc), Rounds: *rounds, Duration: duration.String(), Warmup: warmup.String(),
		Pinning: "none: proxy, load generator and origin share all CPUs", LoadBefore: loadavg(),
		Skipped: map[string][]string{},
	}
	if h.pin {
		m.Pinning = fmt.Sprintf("proxy on CPU %s; load generator and origin on CPU %s (taskset)", proxyCPU, loadCPU)
	}
	for _, s := range ss {
		for _, t := range ts {
			if why := h.skip(t, s); why != "" {
				m.Skipped[s.name] = append(m.Skipped[s.name], t.name+": "+why)
			}
		}
	}

	var runs []*runResult
	for r := 1; r <= *rounds && ctx.Err() == nil; r++ {
		for _, s := range ss {
			var round []*runResult
			for i := range ts { // rotate the order each round so no target always goes first
				t := ts[(i+r-1)%len(ts)]
				if h.skip(t, s) != "" || ctx.Err() != nil {
					continue
				}
				rr := h.runOne(ctx, r, s, t)
				if ctx.Err() != nil {
					break // interrupted: this run is incomplete
				}
				fmt.Fprintf(os.Stderr, "round %d/%d %-12s %-14s %s\n", r, *rounds, s.name, t.name, rr.summary(s))
				round = append(round, rr)
			}
			setRatios(round)
			runs = append(runs, round...)
		}
	}
	m.LoadAfter = loadavg()
	m.Interrupted = ctx.Err() != nil

	var md strings.Builder
	writeReport(&md, m, ss, ts, runs)
	fmt.Print(md.String())
	js, _ := json.MarshalIndent(struct {
		Meta meta
		Runs []*runResult
	}{m, runs}, "", "  ")
	if err := errors.Join(os.WriteFile(filepath.Join(*out, "results.md"), []byte(md.String()), 0o644),
		os.WriteFile(filepath.Join(*out, "results.json"), js, 0o644)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "results and proxy logs in %s\n", *out)
	if m.Interrupted {
		return errors.New("interrupted")
	}
	return nil
}

// setup checks the tools, builds the harness programs and fwdproxy, and
// starts the origin.
func (h *harness) setup(fwdSrc, baseSrc string) error {
	b, err := os.ReadFile("go.mod")
	if err != nil || !strings.HasPrefix(string(b), "module github.com/fwdproxy/fwdproxy/bench\n") {
		return errors.New("run from the bench/ directory of fwdproxy")
	}
	h.benchDir, _ = os.Getwd()
	// Enough file descriptors for 1000 client plus 1000 upstream connections;
	// setting it explicitly makes child processes inherit it.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	h.fdLimit = lim.Cur
	if lim.Cur < 4096 {
		fmt.Fprintf(os.Stderr, "benchrun: warning: open file limit %d is low for the c=1000 scenario\n", lim.Cur)
	}
	h.loadThreads = runtime.NumCPU()
	if h.pin {
		if h.taskset = lookProgram("taskset"); h.taskset == "" {
			return errors.New("-pin needs taskset (apt-get install util-linux)")
		}
		if runtime.NumCPU() < 2 {
			return errors.New("-pin needs at least 2 CPUs")
		}
		h.loadThreads = 1
	}
	h.wrk = lookProgram("wrk")
	h.programs = map[string]string{}
	for _, t := range targets {
		if t.program != "" {
			h.programs[t.program] = lookProgram(t.program)
		}
	}
	h.tck = clockTicks()
	if h.tmp, err = os.MkdirTemp("", "benchrun-"); err != nil {
		return err
	}
	if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "benchrun: building origin, gopeer, loadgen and fwdproxy")
	build := exec.Command("go", "build", "-o", h.tmp+"/", "./cmd/origin", "./cmd/gopeer", "./cmd/loadgen")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the harness: %v\n%s", err, out)
	}
	overlay, err := writeFreeMemOverlay(h.tmp, fwdSrc, baseSrc)
	if err != nil {
		return err
	}
	build = fwdproxyBuild(fwdSrc, filepath.Join(h.tmp, "fwdproxy"), overlay)
	if out, err := build.CombinedOutput(); err != nil {
		h.fwdproxyErr = strings.TrimSpace(string(out))
		fmt.Fprintf(os.Stderr, "benchrun: fwdproxy did not build, skipping it: %s\n", out)
	} else {
		h.fwdproxy = filepath.Join(h.tmp, "fwdproxy")
		h.fwdproxyMITM = fwdproxySupportsMITM(h.fwdproxy)
		h.fwdproxyFront = fwdproxyHasFlag(h.fwdproxy, "-socks-listen")
	}
	if baseSrc != "" {
		build = fwdproxyBuild(baseSrc, filepath.Join(h.tmp, "fwdproxy-base"), overlay)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "benchrun: fwdproxy-base did not build, skipping it: %s\n", out)
		} else {
			h.fwdproxyBase = filepath.Join(h.tmp, "fwdproxy-base")
		}
	}

	if h.proxyCert, h.proxyKey, err = writeProxyCert(h.tmp); err != nil { // front.go
		return err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	h.originHTTP, h.originHTTPS, h.originRaw, h.originSink = addr(ports[0]), addr(ports[1]), addr(ports[2]), addr(ports[3])
	h.originCert = filepath.Join(h.tmp, "origin-cert.pem")
	h.origin, err = h.procs.start(h.pinned(loadCPU, []string{filepath.Join(h.tmp, "origin"),
		"-http", h.originHTTP, "-https", h.originHTTPS, "-raw", h.originRaw, "-sink", h.originSink, "-cert", h.originCert}),
		os.Environ(), filepath.Join(h.logDir, "origin.log"))
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := waitReady(h.origin, p, ""); err != nil {
			return fmt.Errorf("origin: %w", err)
		}
	}
	// The proxies trust the origin's certificate as a system root (Go and
	// OpenSSL both read SSL_CERT_FILE) and see no proxy variables.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(strings.ToUpper(k), "_PROXY") && !strings.HasPrefix(k, "FWDPROXY_") {
			h.env = append(h.env, kv)
		}
	}
	h.env = append(h.env, "SSL_CERT_FILE="+h.originCert)
	return nil
}

func (h *harness) close() {
	h.procs.stopAll()
	if h.tmp != "" {
		os.RemoveAll(h.tmp)
	}
}

// pinned prefixes argv with taskset when pinning is on.
func (h *harness) pinned(cpu string, argv []string) []string {
	if !h.pin {
		return argv
	}
	return append([]string{h.taskset, "-c", cpu}, argv...)
}

// runOne measures scenario s on target t with a fresh proxy process.
func (h *harness) runOne(ctx context.Context, round int, s scenario, t target) *runResult {
	rr := &runResult{Round: round, Scenario: s.name, Target: t.name, Ratio: -1}
	name := fmt.Sprintf("r%d-%s-%s", round, s.name, t.name)
	proxy, ca := "", ""
	var p, hop *proc
	if t.chain {
		port, err := freePort()
		if err != nil {
			return rr.fail(err)
		}
		argv, _, err := launchFwdproxyQuiet(h, port, "", scenario{}) // the hop: plain HTTP/1.1, no interception
		if err != nil {
			return rr.fail(err)
		}
		if hop, err = h.procs.start(h.pinned(proxyCPU, argv), h.env, filepath.Join(h.logDir, name+"-hop.log")); err != nil {
			return rr.fail(err)
		}
		defer h.procs.stop(hop)
		if err := waitReady(hop, port, ""); err != nil {
			return rr.fail(err)
		}
		h.chainHop = addr(port)
		defer func() { h.chainHop = "" }()
	}
	var redisTrips func() (int64, error)
	if t.redis {
		port, err := freePort()
		if err != nil {
			return rr.fail(err)
		}
		argv := []string{h.programs["redis-server"], "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", h.tmp}
		rp, err := h.procs.start(h.pinned(loadCPU, argv), h.env, filepath.Join(h.logDir, name+"-redis.log"))
		if err != nil {
			return rr.fail(err)
		}
		defer h.procs.stop(rp)
		if err := waitReady(rp, port, ""); err != nil {
			return rr.fail(err)
		}
		h.redisAddr = addr(port)
		defer func() { h.redisAddr = "" }()
		redisTrips = func() (int64, error) { return redisRoundTrips(addr(port)) }
	}
	if t.launch != nil {
		port, err := freePort()
		if err != nil {
			return rr.fail(err)
		}
		dir := filepath.Join(h.tmp, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return rr.fail(err)
		}
		argv, caFile, err := t.launch(h, port, dir, s)
		if err != nil {
			return rr.fail(err)
		}
		if p, err = h.procs.start(h.pinned(proxyCPU, argv), h.env, filepath.Join(h.logDir, name+".log")); err != nil {
			return rr.fail(err)
		}
		defer h.procs.stop(p)
		if err := waitReady(p, port, caFile); err != nil {
			return rr.fail(err)
		}
		proxy, ca = addr(port), caFile
		if s.tool == "wrk" && s.front == "" {
			keepAlive, err := h.probeKeepAlive(proxy, s.path)
			if err != nil {
				return rr.fail(err)
			}
			if !keepAlive && !s.close {
				rr.Notes = append(rr.Notes, "no client keep-alive: closes the connection after each response (wrk reconnects and counts a read error each time)")
			}
		}
	}
	if s.idle() {
		return h.runIdle(ctx, rr, s, t, p, proxy, filepath.Join(h.logDir, name+".load"))
	}
	loadLog := filepath.Join(h.tmp, name+".load")
	if _, _, err := h.load(ctx, s, proxy, ca, h.warmup, loadLog); err != nil {
		return rr.fail(fmt.Errorf("warm-up: %w", err))
	}

	var proxyTicks, hopTicks, originTicks cpuTicks
	if p != nil {
		proxyTicks = treeTicks(p.pid())
	}
	if hop != nil {
		hopTicks = treeTicks(hop.pid())
	}
	originTicks = treeTicks(h.origin.pid())
	var cmds0 int64
	if redisTrips != nil {
		var err error
		if cmds0, err = redisTrips(); err != nil {
			return rr.fail(err)
		}
	}
	mach, t0 := machineStat(), time.Now()
	rr.LoadBefore = loadavg()
	res, genCPU, err := h.load(ctx, s, proxy, ca, h.duration, loadLog)
	wall := time.Since(t0).Seconds()
	mach2 := machineStat()
	rr.LoadAfter = loadavg()
	ours := genCPU + float64(treeTicks(h.origin.pid()).sub(originTicks).total())/h.tck
	if err != nil {
		return rr.fail(err)
	}
	if p != nil {
		if p.exited() {
			return rr.fail(fmt.Errorf("proxy exited during the run: %s", p.tail()))
		}
		used := treeTicks(p.pid()).sub(proxyTicks)
		if hop != nil {
			if hop.exited() {
				return rr.fail(fmt.Errorf("the second proxy exited during the run: %s", hop.tail()))
			}
			hopUsed := treeTicks(hop.pid()).sub(hopTicks)
			hopCPU := float64(hopUsed.total()) / h.tck
			rr.HopCPU = perUnit(s, res, hopCPU)
			rr.FirstCPU = perUnit(s, res, float64(used.total())/h.tck)
			used.user += hopUsed.user
			used.sys += hopUsed.sys
		}
		cpu := float64(used.total()) / h.tck
		ours += cpu
		if used.total() > 0 {
			rr.KernelPct = 100 * float64(used.sys) / float64(used.total())
		}
		if s.bytes {
			rr.CPU = cpu / (float64(res.Bytes) / (1 << 30))
		} else {
			rr.CPU = cpu / float64(res.Requests) * 1e4
		}
		rr.RSSMiB = float64(treeHWM(p.pid())) / (1 << 20)
		rr.FileMiB = float64(treeStatus(p.pid(), "RssFile")) / (1 << 20)
		if hop != nil {
			rr.RSSMiB += float64(treeHWM(hop.pid())) / (1 << 20)
			rr.FileMiB += float64(treeStatus(hop.pid(), "RssFile")) / (1 << 20)
		}
	}
	if dt := mach2.total - mach.total; dt > 0 {
		rr.IdlePct = 100 * float64(dt-(mach2.busy-mach.busy)) / float64(dt)
	}
	rr.OthersCPU = max(0, (float64(mach2.busy-mach.busy)/h.tck-ours)/wall)
	if s.bytes {
		rr.Throughput = float64(res.Bytes) / res.Seconds / (1 << 20)
	} else {
		rr.Throughput = float64(res.Requests) / res.Seconds
	}
	rr.P50ms, rr.P99ms = float64(res.P50us)/1e3, float64(res.P99us)/1e3
	rr.Errors = res.StatusErrors + res.SocketErrors
	if redisTrips != nil && res.Requests > 0 {
		cmds, err := redisTrips()
		if err != nil {
			return rr.fail(err)
		}
		rr.RedisPerRequest = float64(cmds-cmds0) / float64(res.Requests)
	}
	if res.Error != "" {
		rr.Notes = append(rr.Notes, "first error: "+res.Error)
	}
	return rr
}

// perUnit is cpu seconds per 10k requests, or per GiB in byte scenarios.
func perUnit(s scenario, res loadResult, cpu float64) float64 {
	if s.bytes {
		return cpu / (float64(res.Bytes) / (1 << 30))
	}
	return cpu / float64(res.Requests) * 1e4
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// fwdproxyBuild returns the command that builds the example server of the
// fwdproxy tree src into out. A tree whose examples/ is a module of its own
// (with a replace to the library beside it) is built from there; an older
// one, whose examples were packages of the library's module, from its root.
// Both with GOWORK=off: each tree is built on its own go.mod files wherever
// it was unpacked, never through a go.work found above it.
func fwdproxyBuild(src, out, overlay string) *exec.Cmd {
	build := exec.Command("go", "build", "-overlay", overlay, "-o", out, "./examples/fwdproxy")
	build.Dir = src
	if _, err := os.Stat(filepath.Join(src, "examples", "go.mod")); err == nil {
		build = exec.Command("go", "build", "-overlay", overlay, "-o", out, "./fwdproxy")
		build.Dir = filepath.Join(src, "examples")
	}
	build.Env = append(os.Environ(), "GOWORK=off")
	return build
}

// fwdproxyVersion describes the fwdproxy source that was measured.
func fwdproxyVersion(src string) string {
	rev, err := exec.Command("git", "-C", src, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown revision"
	}
	v := strings.TrimSpace(string(rev))
	if st, _ := exec.Command("git", "-C", src, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
		v += " with uncommitted changes"
	}
	return v
}

// pick selects the named items ("all" for every one), in the given list's order.
func pick[T any](all []T, list string, name func(T) string) ([]T, error) {
	if list == "all" {
		return all, nil
	}
	want := strings.Split(list, ",")
	var out []T
	for _, x := range all {
		if i := slices.Index(want, name(x)); i >= 0 {
			out = append(out, x)
			want = slices.Delete(want, i, i+1)
		}
	}
	if len(want) > 0 {
		return nil, fmt.Errorf("unknown %q; choose from %s", want, names(all, name))
	}
	return out, nil
}

func names[T any](all []T, name func(T) string) string {
	var s []string
	for _, x := range all {
		s = append(s, name(x))
	}
	return strings.Join(s, ",")
}
