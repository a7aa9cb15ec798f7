package throttle

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLines(t *testing.T) {
	var l Lines
	t0 := time.Unix(1_000_000, 0)
	for _, step := range []struct {
		at       time.Duration
		ok       bool
		wantHeld int64
	}{
		{0, true, 0},                      // the first line goes through
		{10 * time.Millisecond, false, 0}, // held back
		{500 * time.Millisecond, false, 0},
		{Every - time.Nanosecond, false, 0},
		{Every, true, 3}, // a second later: through, saying three were held back
		{Every + time.Millisecond, false, 0},
		{5 * Every, true, 1},
		{7 * Every, true, 0},
	} {
		held, ok := l.Allow(t0.Add(step.at))
		if ok != step.ok || held != step.wantHeld {
			t.Errorf("at %v: Allow = %d, %v; want %d, %v", step.at, held, ok, step.wantHeld, step.ok)
		}
	}
}

// TestLinesConcurrent: of many callers at one instant exactly one line goes
// through, and the next line counts every other one.
func TestLinesConcurrent(t *testing.T) {
	var l Lines
	now := time.Unix(2_000_000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	through := 0
	for range 64 {
		wg.Go(func() {
			if _, ok := l.Allow(now); ok {
				mu.Lock()
				through++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if through != 1 {
		t.Fatalf("%d lines through at one instant, want 1", through)
	}
	if held, ok := l.Allow(now.Add(Every)); !ok || held != 63 {
		t.Errorf("next second: Allow = %d, %v; want 63, true", held, ok)
	}
}

func TestLinesAllocs(t *testing.T) {
	var l Lines
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { l.Allow(now) }); n != 0 {
		t.Errorf("Allow allocates %v times", n)
	}
}
