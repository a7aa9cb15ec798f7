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
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, tu, i, lowered := fitLimits(tc.limit, tc.conns, tc.tunnels, tc.idle)
			if [3]int{c, tu, i} != tc.want || lowered != tc.lowered {
				t.Fatalf("fitLimits = %d, %d, %d, %v; want %v, %v", c, tu, i, lowered, tc.want, tc.lowered)
			}
			if tc.limit > fdReserve && fdBudget(c, tu, i) > tc.limit {
				t.Errorf("budget %d over the limit %d", fdBudget(c, tu, i), tc.limit)
			}
		})
	}
}
