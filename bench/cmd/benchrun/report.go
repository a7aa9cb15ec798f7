package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// runResult is one measured run of one scenario on one target.
type runResult struct {
	Round                 int
	Scenario, Target      string
	Throughput            float64 // req/s, or MiB/s in byte scenarios
	Ratio                 float64 // Throughput over direct's in the same round; 0 when unknown
	P50ms, P99ms          float64
	CPU                   float64 // proxy CPU seconds per 10k requests, or per GiB in byte scenarios
	FirstCPU, HopCPU      float64 // a chain target's: CPU of the first and of the second proxy, in CPU's unit
	RedisPerRequest       float64 // a redis target's: Redis round trips (scripts run) per request
	KernelPct             float64 // the share of the proxy's CPU time spent in the kernel
	RSSMiB                float64 // proxy peak RSS (VmHWM, summed over its process tree)
	Errors                int64   // non-2xx/3xx responses plus socket errors
	IdlePct               float64 // machine CPU idle during the run
	OthersCPU             float64 // CPU used by processes the harness did not start, in cores
	LoadBefore, LoadAfter float64
	Notes                 []string
	Failed                string
}

type meta struct {
	Date, Command, Machine, Fwdproxy string
	Rounds                           int
	Duration, Warmup, Pinning        string
	LoadBefore, LoadAfter            float64
	Skipped                          map[string][]string // scenario → "target: reason"
	Interrupted                      bool
}

func (r *runResult) fail(err error) *runResult {
	r.Failed = err.Error()
	return r
}

func (r *runResult) summary(s scenario) string {
	if r.Failed != "" {
		return "FAILED: " + r.Failed
	}
	unit, cpuUnit := "req/s", "s/10k"
	if s.bytes {
		unit, cpuUnit = "MiB/s", "s/GiB"
	}
	return fmt.Sprintf("%8.0f %s  p99 %7.2f ms  cpu %.2f %s (kernel %.0f %%)  rss %.0f MiB  errors %d  others' cpu %.2f",
		r.Throughput, unit, r.P99ms, r.CPU, cpuUnit, r.KernelPct, r.RSSMiB, r.Errors, r.OthersCPU)
}

// setRatios divides each run's throughput by direct's in the same round.
func setRatios(round []*runResult) {
	i := slices.IndexFunc(round, func(r *runResult) bool { return r.Target == "direct" && r.Failed == "" })
	if i < 0 || round[i].Throughput <= 0 {
		return
	}
	for _, r := range round {
		if r.Failed == "" {
			r.Ratio = r.Throughput / round[i].Throughput
		}
	}
}

// spread formats the median of vs, with the min–max range when it differs.
func spread(vs []float64, format string) string {
	if len(vs) == 0 {
		return "—"
	}
	vs = slices.Sorted(slices.Values(vs))
	s := fmt.Sprintf(format, median(vs))
	if lo, hi := fmt.Sprintf(format, vs[0]), fmt.Sprintf(format, vs[len(vs)-1]); lo != hi {
		s += " (" + lo + "–" + hi + ")"
	}
	return s
}

// median of sorted values.
func median(vs []float64) float64 {
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func writeReport(w io.Writer, m meta, ss []scenario, ts []target, runs []*runResult) {
	// A target skipped in every scenario gets no column (its notes say why).
	ts = slices.DeleteFunc(slices.Clone(ts), func(t target) bool {
		return t.name != "direct" && !slices.ContainsFunc(runs, func(r *runResult) bool { return r.Target == t.name })
	})
	var others, idle []float64
	for _, r := range runs {
		if r.Failed == "" {
			others = append(others, r.OthersCPU)
			idle = append(idle, r.IdlePct)
		}
	}
	fmt.Fprintf(w, "## fwdproxy comparison benchmark\n\n")
	fmt.Fprintf(w, "- date: %s; command: `%s`\n", m.Date, m.Command)
	fmt.Fprintf(w, "- machine: %s\n- fwdproxy: %s\n", m.Machine, m.Fwdproxy)
	fmt.Fprintf(w, "- %d round(s), interleaved, a fresh proxy process per run; %s measured after %s of warm-up; medians with (min–max)\n", m.Rounds, m.Duration, m.Warmup)
	fmt.Fprintf(w, "- CPU pinning: %s\n", m.Pinning)
	fmt.Fprintf(w, "- how busy the machine was: load average %.2f before, %.2f after; CPU used by processes outside the harness during runs: %s cores; machine idle during runs: %s %%\n",
		m.LoadBefore, m.LoadAfter, spread(others, "%.2f"), spread(idle, "%.0f"))
	if m.Interrupted {
		fmt.Fprintf(w, "- **interrupted**: the figures cover only the runs that finished\n")
	}

	fmt.Fprintf(w, "\n### Throughput × direct (median)\n\n| scenario |")
	for _, t := range ts[1:] {
		fmt.Fprintf(w, " %s |", t.name)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(ts)-1))
	for _, s := range ss {
		fmt.Fprintf(w, "| %s |", s.name)
		for _, t := range ts[1:] {
			fmt.Fprintf(w, " %s |", spread(collect(runs, s, t, func(r *runResult) float64 { return r.Ratio }), "%.2f"))
		}
		fmt.Fprintln(w)
	}

	for _, s := range ss {
		unit, cpuUnit := "req/s", "CPU s/10k req"
		if s.bytes {
			unit, cpuUnit = "MiB/s", "CPU s/GiB"
		}
		fmt.Fprintf(w, "\n### %s: %s\n\n", s.name, s.desc)
		fmt.Fprintf(w, "| target | %s | × direct | p50 ms | p99 ms | %s | kernel %% of CPU | peak RSS MiB | errors (all rounds) | others' CPU (cores) |\n", unit, cpuUnit)
		fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|\n")
		var notes []string
		for _, t := range ts {
			var ok []*runResult
			var errs int64
			for _, r := range runs {
				if r.Scenario != s.name || r.Target != t.name {
					continue
				}
				for _, n := range r.Notes {
					notes = appendOnce(notes, t.name+": "+n)
				}
				if r.Failed != "" {
					notes = append(notes, fmt.Sprintf("%s: round %d failed: %s", t.name, r.Round, r.Failed))
					continue
				}
				ok = append(ok, r)
				errs += r.Errors
			}
			if len(ok) == 0 {
				continue
			}
			get := func(f func(*runResult) float64) []float64 { return collect(ok, s, t, f) }
			lat := func(f func(*runResult) float64) string {
				if s.tool == "tunnel" {
					return "—"
				}
				return spread(get(f), "%.2f")
			}
			proxyOnly := func(f func(*runResult) float64, format string) string {
				if t.name == "direct" {
					return "—"
				}
				return spread(get(f), format)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", t.name,
				spread(get(func(r *runResult) float64 { return r.Throughput }), "%.0f"),
				proxyOnly(func(r *runResult) float64 { return r.Ratio }, "%.2f"),
				lat(func(r *runResult) float64 { return r.P50ms }),
				lat(func(r *runResult) float64 { return r.P99ms }),
				proxyOnly(func(r *runResult) float64 { return r.CPU }, "%.2f"),
				proxyOnly(func(r *runResult) float64 { return r.KernelPct }, "%.0f"),
				proxyOnly(func(r *runResult) float64 { return r.RSSMiB }, "%.0f"),
				errs, spread(get(func(r *runResult) float64 { return r.OthersCPU }), "%.2f"))
		}
		for _, t := range ts {
			if per := collect(runs, s, t, func(r *runResult) float64 { return r.RedisPerRequest }); t.redis && len(per) > 0 {
				notes = append(notes, fmt.Sprintf("%s: Redis round trips per request %s (reads Redis processed, INFO stats: rate limits are taken in batches of 100 ms of the rate, byte counts go in batches)",
					t.name, spread(per, "%.3f")))
			}
		}
		for _, t := range ts {
			if !t.chain {
				continue
			}
			first, hop := collect(runs, s, t, func(r *runResult) float64 { return r.FirstCPU }), collect(runs, s, t, func(r *runResult) float64 { return r.HopCPU })
			if len(first) > 0 {
				notes = append(notes, fmt.Sprintf("%s: its %s is both proxies': the first (which forwards through the second) %s, the second %s",
					t.name, cpuUnit, spread(first, "%.2f"), spread(hop, "%.2f")))
			}
		}
		for _, n := range m.Skipped[s.name] {
			notes = append(notes, "skipped "+n)
		}
		if len(notes) > 0 {
			fmt.Fprintln(w)
		}
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// collect returns f of each successful run of s on t that has a value
// (a ratio is -1 when direct failed in that round).
func collect(runs []*runResult, s scenario, t target, f func(*runResult) float64) []float64 {
	var vs []float64
	for _, r := range runs {
		if r.Scenario == s.name && r.Target == t.name && r.Failed == "" && f(r) >= 0 {
			vs = append(vs, f(r))
		}
	}
	return vs
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
