package main

import "testing"

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		ppid       int
		want       cpuTicks
		ok         bool
	}{
		{"plain", "4817 (fwdproxy) S 4800 4817 4800 0 -1 4194560 1 0 0 0 391 393 7 5 20 0 8 0 1 0 0", 4800, cpuTicks{391 + 7, 393 + 5}, true},
		{"name with spaces and parentheses", "12 (a b) (c)) R 1 12 1 0 -1 0 0 0 0 0 10 20 30 40 20 0 1 0 1 0 0", 1, cpuTicks{40, 60}, true},
		{"truncated", "12 (x) R 1 12 1 0 -1 0 0 0 0 0 10 20", 0, cpuTicks{}, false},
		{"not a number", "12 (x) R 1 12 1 0 -1 0 0 0 0 0 10 x 30 40 20", 0, cpuTicks{}, false},
		{"no name", "12 x R 1", 0, cpuTicks{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ppid, got, ok := parseStat([]byte(tc.stat))
			if ppid != tc.ppid || got != tc.want || ok != tc.ok {
				t.Errorf("parseStat = %d, %+v, %v; want %d, %+v, %v", ppid, got, ok, tc.ppid, tc.want, tc.ok)
			}
		})
	}
}

func TestStatusField(t *testing.T) {
	status := []byte("Name:\tfwdproxy\nUmask:\t0022\nState:\tS (sleeping)\nVmHWM:\t   35120 kB\nVmRSS:\t   34004 kB\nThreads:\t12\nSigQ:\t0/96369\n")
	for _, tc := range []struct {
		key  string
		want int64
		ok   bool
	}{
		{"VmRSS", 34004 << 10, true},
		{"VmHWM", 35120 << 10, true},
		{"Threads", 12, true},
		{"VmSwap", 0, false},
		{"SigQ", 0, false}, // not a number
		{"Vm", 0, false},   // a prefix of a key is not the key
	} {
		got, ok := statusField(status, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("statusField(%s) = %d, %v; want %d, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}
