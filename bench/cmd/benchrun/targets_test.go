package main

import (
	"slices"
	"strconv"
	"testing"
)

func TestFwdproxyLimitArgs(t *testing.T) {
	byName := func(name string) scenario {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		if i < 0 {
			t.Fatalf("no scenario %s", name)
		}
		return scenarios[i]
	}
	for _, tc := range []struct {
		scenario         string
		fdLimit          uint64
		tunnels, conns   int // 0, 0: no flags
		lowered, covered bool
	}{
		{scenario: "small-c50", fdLimit: 20000},
		{scenario: "tunnels-idle-1000", fdLimit: 20000, tunnels: 1100, conns: fwdproxyMaxConns},
		{scenario: "tunnels-idle-9000", fdLimit: 20000, tunnels: 9100, conns: 356},
		{scenario: "conns-idle-1000", fdLimit: 20000, tunnels: fwdproxyMaxTunnels, conns: 1100},
		{scenario: "conns-idle-9000", fdLimit: 20000, tunnels: 356, conns: 9100},
		{scenario: "tunnels-idle-9000", fdLimit: 0, tunnels: 9100, conns: fwdproxyMaxConns}, // unknown limit: nothing lowered
		{scenario: "tunnels-idle-9000", fdLimit: 4096, tunnels: 9100, conns: 16},            // far too low: the floor
	} {
		args := fwdproxyLimitArgs(byName(tc.scenario), tc.fdLimit)
		if tc.tunnels == 0 {
			if args != nil {
				t.Errorf("%s: %q, want no flags", tc.scenario, args)
			}
			continue
		}
		want := []string{"-max-tunnels", strconv.Itoa(tc.tunnels), "-max-conns", strconv.Itoa(tc.conns)}
		if !slices.Equal(args, want) {
			t.Errorf("%s, limit %d: %q, want %q", tc.scenario, tc.fdLimit, args, want)
		}
		// What the example server checks (examples/fwdproxy/fdlimit.go):
		// within the limit, it lowers nothing.
		if need := 2*tc.conns + 2*tc.tunnels + fwdproxyFDOther; tc.fdLimit >= 20000 && uint64(need) > tc.fdLimit {
			t.Errorf("%s: the budget %d exceeds the limit %d", tc.scenario, need, tc.fdLimit)
		}
	}
}
