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
	FileMiB               float64 // of the proxy's RSS at the run's end, the pages mapped from files (RssFile: its program and libraries, clean and shared with the page cache)
	Errors                int64   // non-2xx/3xx responses plus socket errors
	IdlePct               float64 // machine CPU idle during the run
	OthersCPU             float64 // CPU used by processes the harness did not start, in cores
	LoadBefore, LoadAfter float64
	Notes                 []string
	Failed                string
	Idle                  *idleFigures `json:",omitempty"` // idle scenarios only
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
	if f := r.Idle; f != nil {
		return fmt.Sprintf("%6.2f KiB/%s (forced %.2f)  %.0f fds  setup %.0f/s (cpu %.0f ms/1k)  refused %d  errors %d  check %d/%d  threads %d  others' cpu %.2f",
			f.KiB, s.unit(), f.KiBForced, f.FDsPer, f.SetupRate, f.SetupCPUms, f.Refused, f.Errors, f.CheckOK, f.Checked, f.Threads, r.OthersCPU)
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

	load := slices.DeleteFunc(slices.Clone(ss), scenario.idle)
	idleSs := slices.DeleteFunc(slices.Clone(ss), func(s scenario) bool { return !s.idle() })
	if len(load) > 0 {
		fmt.Fprintf(w, "\n### Throughput × direct (median)\n\n| scenario |")
		for _, t := range ts[1:] {
			fmt.Fprintf(w, " %s |", t.name)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(ts)-1))
		for _, s := range load {
			fmt.Fprintf(w, "| %s |", s.name)
			for _, t := range ts[1:] {
				fmt.Fprintf(w, " %s |", spread(collect(runs, s, t, func(r *runResult) float64 { return r.Ratio }), "%.2f"))
			}
			fmt.Fprintln(w)
		}
	}
	if len(idleSs) > 0 {
		fmt.Fprintf(w, "\n### KiB of proxy VmRSS per idle tunnel or connection, settled (median)\n\n| scenario |")
		for _, t := range ts[1:] {
			fmt.Fprintf(w, " %s |", t.name)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(ts)-1))
		for _, s := range idleSs {
			fmt.Fprintf(w, "| %s |", s.name)
			for _, t := range ts[1:] {
				fmt.Fprintf(w, " %s |", spread(collect(runs, s, t, idleGet(func(f *idleFigures) float64 { return f.KiB })), "%.1f"))
			}
			fmt.Fprintln(w)
		}
	}

	for _, s := range ss {
		if s.idle() {
			writeIdleTable(w, m, s, ts, runs)
			continue
		}
		unit, cpuUnit := "req/s", "CPU s/10k req"
		if s.bytes {
			unit, cpuUnit = "MiB/s", "CPU s/GiB"
		}
		fmt.Fprintf(w, "\n### %s: %s\n\n", s.name, s.desc)
		fmt.Fprintf(w, "| target | %s | × direct | p50 ms | p99 ms | %s | kernel %% of CPU | peak RSS MiB | of it, file-backed MiB | errors (all rounds) | others' CPU (cores) |\n", unit, cpuUnit)
		fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
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
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", t.name,
				spread(get(func(r *runResult) float64 { return r.Throughput }), "%.0f"),
				proxyOnly(func(r *runResult) float64 { return r.Ratio }, "%.2f"),
				lat(func(r *runResult) float64 { return r.P50ms }),
				lat(func(r *runResult) float64 { return r.P99ms }),
				proxyOnly(func(r *runResult) float64 { return r.CPU }, "%.2f"),
				proxyOnly(func(r *runResult) float64 { return r.KernelPct }, "%.0f"),
				proxyOnly(func(r *runResult) float64 { return r.RSSMiB }, "%.0f"),
				proxyOnly(func(r *runResult) float64 { return r.FileMiB }, "%.0f"),
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

// idleGet reads an idle figure of a run; -1 (no value) for a run without
// them.
func idleGet(f func(*idleFigures) float64) func(*runResult) float64 {
	return func(r *runResult) float64 {
		if r.Idle == nil {
			return -1
		}
		return f(r.Idle)
	}
}

// writeIdleTable writes the table of an idle scenario: memory, descriptors
// and threads per held connection, setup rate and CPU, refusals, errors and
// the check, one row per target.
func writeIdleTable(w io.Writer, m meta, s scenario, ts []target, runs []*runResult) {
	u := s.unit()
	fmt.Fprintf(w, "\n### %s: %s\n\n", s.name, s.desc)
	fmt.Fprintf(w, "| target | KiB per %s | KiB per %s, forced | VmRSS before → with, MiB | fds per %s | threads | setup %ss/s | setup CPU ms per 1k | refused (all rounds) | errors (all rounds) | check ok (all rounds) | others' CPU (cores) |\n", u, u, u, u)
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var notes []string
	for _, t := range ts {
		var ok []*runResult
		var refused, errs, checked, checkOK, closed int
		unsettled := false
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
			f := r.Idle
			ok = append(ok, r)
			refused += f.Refused
			errs += f.Errors
			checked += f.Checked
			checkOK += f.CheckOK
			closed += f.Closed
			unsettled = unsettled || f.Unsettled
			if f.FirstError != "" {
				notes = appendOnce(notes, t.name+": first error opening: "+f.FirstError)
			}
			if f.CheckError != "" {
				notes = appendOnce(notes, t.name+": first error in the check: "+f.CheckError)
			}
		}
		if len(ok) == 0 {
			continue
		}
		if closed > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d of the connections were answered with Connection: close (all rounds)", t.name, closed))
		}
		if checked > 0 && checkOK == 0 {
			notes = append(notes, fmt.Sprintf("%s: no %s passed the check: the proxy closed them or they stopped working, so its memory figures are not per held %s", t.name, u, u))
		}
		if unsettled {
			notes = append(notes, fmt.Sprintf("%s: its CPU time was still moving after %s when a reading was taken", t.name, settleMax))
		}
		get := func(f func(*idleFigures) float64, format string) string {
			if t.name == "direct" {
				return "—"
			}
			return spread(collect(ok, s, t, idleGet(f)), format)
		}
		rss := "—"
		if t.name != "direct" {
			rss = spread(collect(ok, s, t, idleGet(func(f *idleFigures) float64 { return float64(f.RSSBefore) / (1 << 20) })), "%.0f") +
				" → " + spread(collect(ok, s, t, idleGet(func(f *idleFigures) float64 { return float64(f.RSSWith) / (1 << 20) })), "%.0f")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d/%d | %s |\n", t.name,
			get(func(f *idleFigures) float64 { return f.KiB }, "%.1f"),
			get(func(f *idleFigures) float64 { return f.KiBForced }, "%.1f"),
			rss,
			get(func(f *idleFigures) float64 { return f.FDsPer }, "%.1f"),
			get(func(f *idleFigures) float64 { return float64(f.Threads) }, "%.0f"),
			spread(collect(ok, s, t, idleGet(func(f *idleFigures) float64 { return f.SetupRate })), "%.0f"),
			get(func(f *idleFigures) float64 { return f.SetupCPUms }, "%.0f"),
			refused, errs, checkOK, checked,
			spread(collect(ok, s, t, func(r *runResult) float64 { return r.OthersCPU }), "%.2f"))
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
