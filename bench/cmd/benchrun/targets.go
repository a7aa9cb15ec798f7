package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// A target is one way of getting a request from the load generator to the
// origin: directly, or through one proxy started fresh for every run.
type target struct {
	name       string
	program    string // external program it needs ("" when built by the harness)
	intercepts bool   // can intercept TLS (the mitm scenario)
	// freesOnSignal: a Go program that collects garbage and returns the
	// freed memory to the system on SIGUSR1 (the idle scenarios' forced
	// reading): gopeer, and the example server built with the overlay.
	freesOnSignal bool
	// chain runs a second fwdproxy (-log-level warn) before the proxy, which
	// forwards through it (h.chainHop is its address while launch runs); the
	// CPU and RSS reported are both proxies', and the second's share is
	// reported beside them.
	chain bool
	// redis runs a redis-server for the proxy (h.redisAddr while launch
	// runs), and reports the Redis commands it processed per request.
	redis bool
	// launch returns the command that runs the proxy on 127.0.0.1:port with
	// dir as scratch space for scenario s (in intercept mode, with the CA
	// clients must trust; with a front end, that front end on port).
	launch func(h *harness, port int, dir string, s scenario) (argv []string, ca string, err error)
}

var targets = []target{
	{name: "direct"},
	{name: "fwdproxy", intercepts: true, freesOnSignal: true, launch: launchFwdproxy},
	{name: "fwdproxy-quiet", intercepts: true, freesOnSignal: true, launch: launchFwdproxyQuiet},
	{name: "fwdproxy-admin", intercepts: true, freesOnSignal: true, launch: launchFwdproxyAdmin},
	{name: "fwdproxy-base", freesOnSignal: true, launch: launchFwdproxyBase},
	{name: "fwdproxy-chain", freesOnSignal: true, launch: launchFwdproxyChain, chain: true},
	{name: "fwdproxy-policy", freesOnSignal: true, launch: launchFwdproxyPolicy},
	{name: "fwdproxy-quota", program: "redis-server", freesOnSignal: true, launch: launchFwdproxyQuota, redis: true},
	{name: "goproxy", intercepts: true, freesOnSignal: true, launch: launchGopeer("goproxy")},
	{name: "goproxy-tuned", intercepts: true, freesOnSignal: true, launch: launchGopeer("goproxy-tuned")},
	{name: "naive", freesOnSignal: true, launch: launchGopeer("naive")},
	{name: "tinyproxy", program: "tinyproxy", launch: launchConfigured("tinyproxy", "-d", "-c")},
	{name: "squid", program: "squid", launch: launchConfigured("squid", "-N", "-f")},
	{name: "privoxy", program: "privoxy", launch: launchConfigured("privoxy", "--no-daemon")},
}

func launchFwdproxy(h *harness, port int, _ string, s scenario) ([]string, string, error) {
	argv := append([]string{h.fwdproxy, "-allow-private"}, h.originConnectPorts()...)
	argv = append(argv, h.frontFlags(port, s)...) // front.go: -listen, or the scenario's front end on port
	argv = append(argv, fwdproxyLimitArgs(s, h.fdLimit)...)
	if !s.intercept {
		return argv, "", nil
	}
	// One CA directory for all runs: the first run creates the CA, later ones load it.
	dir := filepath.Join(h.tmp, "fwdproxy-ca")
	return append(argv, "-mitm-ca-dir", dir), filepath.Join(dir, "ca.pem"), nil
}

// launchFwdproxyQuiet runs the example server with its access log off
// (-log-level warn), as the peers are configured (squid's access_log none,
// tinyproxy and privoxy without a log file, goproxy not verbose).
func launchFwdproxyQuiet(h *harness, port int, dir string, s scenario) ([]string, string, error) {
	argv, ca, err := launchFwdproxy(h, port, dir, s)
	return append(argv, "-log-level", "warn"), ca, err
}

// launchFwdproxyChain runs the example server as fwdproxy-quiet does,
// forwarding every request and tunnel through the second fwdproxy at
// h.chainHop (-upstream): fwdproxy → fwdproxy → origin.
func launchFwdproxyChain(h *harness, port int, dir string, s scenario) ([]string, string, error) {
	argv, ca, err := launchFwdproxyQuiet(h, port, dir, s)
	return append(argv, "-upstream", "http://"+h.chainHop), ca, err
}

// launchFwdproxyAdmin runs fwdproxy-quiet with its admin listener on (on
// a free loopback port that nothing reads): every request is recorded in
// the flow ring and counted for the dashboard, with nobody watching.
func launchFwdproxyAdmin(h *harness, port int, dir string, s scenario) ([]string, string, error) {
	argv, ca, err := launchFwdproxyQuiet(h, port, dir, s)
	return append(argv, "-admin-listen", "127.0.0.1:0"), ca, err
}

// benchPolicy is the policy of fwdproxy-policy and fwdproxy-quota: every
// quota on, none reached (the load's clients, all on 127.0.0.1, are one
// subject, a hot key). The rate, well above what one replica serves here,
// is low enough that its batches on Redis (fwdproxy.RateTaker: 100 ms of
// the rate, at most the burst, so 20,000 events) run out and are taken
// again during a run: about once every 10,000 requests.
const benchPolicy = "[{name: bench, clients: [127.0.0.0/8], rate: 200000, burst: 20000, bytes-per-day: 1024GiB, max-tunnels: 100000}]"

// launchFwdproxyPolicy runs fwdproxy-quiet with a policy whose quotas
// (rate, bytes a day, tunnels) apply to every request, kept in memory.
func launchFwdproxyPolicy(h *harness, port int, dir string, s scenario) ([]string, string, error) {
	argv, ca, err := launchFwdproxyQuiet(h, port, dir, s)
	return append(argv, "-policies", benchPolicy), ca, err
}

// launchFwdproxyQuota runs fwdproxy-policy with its quotas on the Redis at
// h.redisAddr (-redis), as replicas share them.
func launchFwdproxyQuota(h *harness, port int, dir string, s scenario) ([]string, string, error) {
	argv, ca, err := launchFwdproxyPolicy(h, port, dir, s)
	return append(argv, "-redis", "redis://"+h.redisAddr+"/0"), ca, err
}

// launchFwdproxyBase runs the example server built from -fwdproxy-base-src,
// for before/after comparisons in one run, with -fwdproxy-base-flags.
func launchFwdproxyBase(h *harness, port int, _ string, s scenario) ([]string, string, error) {
	argv := []string{h.fwdproxyBase, "-listen", addr(port), "-allow-private"}
	if fwdproxyHasFlag(h.fwdproxyBase, "-allow-port") {
		argv = append(argv, h.originConnectPorts()...)
	}
	if fwdproxyHasFlag(h.fwdproxyBase, "-max-tunnels") {
		argv = append(argv, fwdproxyLimitArgs(s, h.fdLimit)...)
	}
	return append(argv, h.fwdproxyBaseFlags...), "", nil
}

// The example server's defaults (fwdproxy.DefaultMaxConns and
// DefaultMaxTunnels), and what its descriptor budget reserves besides: the
// upstream pool's idle connections (DefaultMaxIdleConns) and 64 for
// listeners and files. It lowers both limits in proportion when
// 2×conns + 2×tunnels + idle + 64 exceeds its descriptor limit
// (examples/fwdproxy/fdlimit.go).
const (
	fwdproxyMaxConns, fwdproxyMaxTunnels = 4096, 1024
	fwdproxyFDOther                      = 1024 + 64
)

// fwdproxyLimitArgs are the -max-tunnels and -max-conns flags an idle
// scenario needs: room for the connections it holds (and 100 more, for the
// warm-up's that may still be closing),
// and the other limit lowered so that the budget fits in fdLimit, so the
// example server does not scale the one that matters down. Load scenarios
// keep the defaults.
func fwdproxyLimitArgs(s scenario, fdLimit uint64) []string {
	if !s.idle() {
		return nil
	}
	held := s.conns + 100
	other := fwdproxyMaxTunnels // conns-idle: tunnels
	if s.tool == "tunnels-idle" {
		other = fwdproxyMaxConns // a tunnel counts as a connection until its 200
	}
	if room := (int64(fdLimit) - fwdproxyFDOther - 2*int64(held)) / 2; fdLimit > 0 && room < int64(other) {
		other = max(16, int(room))
	}
	tunnels, conns := held, other
	if s.tool == "conns-idle" {
		tunnels, conns = other, held
	}
	return []string{"-max-tunnels", strconv.Itoa(tunnels), "-max-conns", strconv.Itoa(conns)}
}

// originConnectPorts are the -allow-port flags that open CONNECT to the
// origin's HTTPS, raw TCP and echo sink ports (fwdproxy allows only 443 by
// default).
func (h *harness) originConnectPorts() []string {
	var args []string
	for _, a := range []string{h.originHTTPS, h.originRaw, h.originSink} {
		if _, port, err := net.SplitHostPort(a); err == nil {
			args = append(args, "-allow-port", port)
		}
	}
	return args
}

func launchGopeer(kind string) func(*harness, int, string, scenario) ([]string, string, error) {
	return func(h *harness, port int, dir string, s scenario) ([]string, string, error) {
		argv := []string{filepath.Join(h.tmp, "gopeer"), "-kind", kind, "-listen", addr(port)}
		if !s.intercept {
			return argv, "", nil
		}
		ca := filepath.Join(dir, "goproxy-ca.pem")
		return append(argv, "-mitm-ca", ca), ca, nil
	}
}

// launchConfigured runs a Debian-packaged proxy with its configuration from
// bench/config/NAME.* rendered into dir; the config file comes last in argv.
func launchConfigured(name string, args ...string) func(*harness, int, string, scenario) ([]string, string, error) {
	return func(h *harness, port int, dir string, _ scenario) ([]string, string, error) {
		files, err := filepath.Glob(filepath.Join(h.benchDir, "config", name+".*"))
		if err != nil || len(files) == 0 {
			return nil, "", fmt.Errorf("no configuration bench/config/%s.*", name)
		}
		data := struct {
			Port int
			Dir  string
		}{port, dir}
		for _, f := range files {
			t, err := template.ParseFiles(f)
			if err != nil {
				return nil, "", err
			}
			var b bytes.Buffer
			if err := t.Execute(&b, data); err != nil {
				return nil, "", err
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b.Bytes(), 0o644); err != nil {
				return nil, "", err
			}
		}
		argv := append([]string{h.programs[name]}, args...)
		return append(argv, filepath.Join(dir, name+".conf")), "", nil
	}
}

// lookProgram finds an installed program, also in the sbin directories
// that are not always on a non-root PATH.
func lookProgram(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// skip says why target t cannot run scenario s, or "" when it can.
func (h *harness) skip(t target, s scenario) string {
	switch {
	case s.tool == "wrk" && h.wrk == "":
		return "wrk is not installed (apt-get install wrk)"
	case t.program != "" && h.programs[t.program] == "":
		return fmt.Sprintf("%s is not installed (apt-get install %s)", t.program, t.program)
	case isFwdproxy(t) && h.fwdproxy == "":
		return "fwdproxy did not build: " + h.fwdproxyErr
	case t.name == "fwdproxy-base" && h.fwdproxyBase == "":
		return "no -fwdproxy-base-src given, or it did not build"
	case t.chain && !fwdproxyHasFlag(h.fwdproxy, "-upstream "):
		return "this fwdproxy build has no -upstream flag yet"
	case (t.redis || t.name == "fwdproxy-policy") && !fwdproxyHasFlag(h.fwdproxy, "-policies"):
		return "this fwdproxy build has no -policies or -redis flag yet"
	case s.intercept && !t.intercepts && t.name != "direct":
		return "cannot intercept TLS"
	case s.intercept && isFwdproxy(t) && !h.fwdproxyMITM:
		return "this fwdproxy build has no -mitm-ca-dir flag yet"
	case s.front != "" && t.name != "direct" && !isFwdproxy(t):
		return "no " + frontName(s.front) + " front end configured here (fwdproxy only)"
	case s.front != "" && isFwdproxy(t) && !h.fwdproxyFront:
		return "this fwdproxy build has no -tls-listen, -socks-listen or -h2c flag yet"
	}
	return ""
}

// isFwdproxy reports whether t runs the example server built from -fwdproxy-src.
func isFwdproxy(t target) bool {
	switch t.name {
	case "fwdproxy", "fwdproxy-quiet", "fwdproxy-chain", "fwdproxy-admin", "fwdproxy-policy", "fwdproxy-quota":
		return true
	}
	return false
}

// fwdproxySupportsMITM reports whether the example server's -h output
// lists the interception flag.
func fwdproxySupportsMITM(bin string) bool { return fwdproxyHasFlag(bin, "-mitm-ca-dir") }

// fwdproxyHasFlag reports whether the example server bin lists flag in its
// -h output (older builds lack some).
func fwdproxyHasFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return strings.Contains(string(out), flag)
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
