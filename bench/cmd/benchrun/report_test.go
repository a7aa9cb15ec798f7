package main

import (
	"strings"
	"testing"
)

func TestWriteIdleTable(t *testing.T) {
	s := scenario{name: "tunnels-idle-1000", desc: "idle tunnels", tool: "tunnels-idle", conns: 1000}
	ts := []target{{name: "direct"}, {name: "fwdproxy"}}
	fig := func(kib float64, refused, checkOK int) *idleFigures {
		return &idleFigures{N: 1000, Opened: 1000 - refused, Refused: refused, KiB: kib, KiBForced: kib - 2,
			RSSBefore: 10 << 20, RSSWith: 30 << 20, FDsPer: 2, Threads: 9, SetupRate: 5000, SetupCPUms: 100,
			Checked: 1000 - refused, CheckOK: checkOK}
	}
	runs := []*runResult{
		{Round: 1, Scenario: s.name, Target: "direct", Idle: &idleFigures{N: 1000, Opened: 1000, SetupRate: 9000, Checked: 1000, CheckOK: 1000}},
		{Round: 1, Scenario: s.name, Target: "fwdproxy", Idle: fig(20, 0, 1000)},
		{Round: 2, Scenario: s.name, Target: "fwdproxy", Idle: fig(22, 3, 990)},
		{Round: 3, Scenario: s.name, Target: "fwdproxy", Failed: "proxy exited"},
		{Round: 1, Scenario: "other", Target: "fwdproxy", Idle: fig(99, 0, 0)},
		{Round: 1, Scenario: s.name, Target: "closer", Idle: fig(0.5, 0, 0)},
	}
	ts = append(ts, target{name: "closer"})
	var b strings.Builder
	writeIdleTable(&b, meta{}, s, ts, runs)
	out := b.String()
	for _, want := range []string{
		"| target | KiB per tunnel | KiB per tunnel, forced |",
		"| direct | — | — | — | — | — | 9000 | — | 0 | 0 | 1000/1000 |",
		"| fwdproxy | 21.0 (20.0–22.0) | 19.0 (18.0–20.0) | 10 → 30 | 2.0 | 9 | 5000 | 100 | 3 | 0 | 1990/1997 |",
		"- fwdproxy: round 3 failed: proxy exited",
		"- closer: no tunnel passed the check",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}
