package h1

import (
	"testing"
	"time"
)

// TestLogLimiter: one line a second, with the count of those held back.
func TestLogLimiter(t *testing.T) {
	var l logLimiter
	now := time.Unix(1000, 0)
	for i, tc := range []struct {
		at   time.Duration
		ok   bool
		held int64
	}{
		{0, true, 0},
		{10 * time.Millisecond, false, 0},
		{500 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{time.Second, false, 0},
		{5 * time.Second, true, 1},
	} {
		held, ok := l.allow(now.Add(tc.at))
		if ok != tc.ok || held != tc.held {
			t.Errorf("%d at %v: allow = %d, %v; want %d, %v", i, tc.at, held, ok, tc.held, tc.ok)
		}
	}
}
