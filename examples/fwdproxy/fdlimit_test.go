package main

import "testing"

func TestFitLimits(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		limit                uint64
		conns, tunnels, idle int
		want                 [3]int
		lowered              bool
	}{
		{"unknown limit", 0, 4096, 1024, 1024, [3]int{4096, 1024, 1024}, false},
		{"fits", 1 << 20, 4096, 1024, 1024, [3]int{4096, 1024, 1024}, false},
		{"exactly fits", 2*4096 + 2*1024 + 1024 + fdReserve, 4096, 1024, 1024, [3]int{4096, 1024, 1024}, false},
		{"1024 descriptors", 1024, 4096, 1024, 1024, [3]int{349, 87, 87}, true},
		{"below the reserve", 10, 4096, 1024, 1024, [3]int{1, 1, 1}, true},
		// 0: as many as the descriptor limit holds, two descriptors each.
		{"automatic, 20,000 descriptors", 20000, 0, 0, 1024, [3]int{9456, 9456, 1024}, false},
		{"automatic tunnels beside connections", 20000, 356, 0, 1024, [3]int{356, 9100, 1024}, false},
		{"automatic connections beside tunnels", 20000, 0, 9100, 1024, [3]int{356, 9100, 1024}, false},
		{"automatic beside a limit that takes all", 20000, 10000, 0, 1024, [3]int{9425, 60, 965}, true},
		{"automatic, unknown limit", 0, 0, 0, 1024, [3]int{4096, 1024, 1024}, false},
		{"automatic, at least the defaults", 1 << 20, 0, 0, 1024, [3]int{523744, 523744, 1024}, false},
		{"automatic, 1024 descriptors", 1024, 0, 0, 1024, [3]int{426, 106, 106}, true},
		{"negative left to the library", 1024, -1, 1024, 1024, [3]int{-1, 1024, 1024}, false},
		{"negative beside an automatic limit", 20000, 0, -1, 1024, [3]int{9456, -1, 1024}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, tu, i, lowered := fitLimits(tc.limit, tc.conns, tc.tunnels, tc.idle)
			if [3]int{c, tu, i} != tc.want || lowered != tc.lowered {
				t.Fatalf("fitLimits = %d, %d, %d, %v; want %v, %v", c, tu, i, lowered, tc.want, tc.lowered)
			}
			shared := tc.conns == autoLimit && tc.tunnels == autoLimit
			if tc.limit > fdReserve && c > 0 && fdBudget(c, tu, i, shared) > tc.limit {
				t.Errorf("budget %d over the limit %d", fdBudget(c, tu, i, shared), tc.limit)
			}
		})
	}
}
