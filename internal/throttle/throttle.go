// Package throttle keeps a flood of like events (refused connections,
// failed handshakes) from flooding the log: one line a second, which says
// how many were held back since the last.
package throttle

import (
	"sync/atomic"
	"time"
)

// Every is how often Lines lets a line through.
const Every = time.Second

// Lines lets a log line through at most once per Every, counting the lines
// it held back. Its zero value is ready; it is safe for concurrent use and
// allocates nothing.
type Lines struct {
	next       atomic.Int64 // unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

// Allow reports whether a line may be logged at now and, if so, how many
// were held back since the last one let through.
func (l *Lines) Allow(now time.Time) (held int64, ok bool) {
	t := now.UnixNano()
	next := l.next.Load()
	if t < next || !l.next.CompareAndSwap(next, t+int64(Every)) {
		l.suppressed.Add(1)
		return 0, false
	}
	return l.suppressed.Swap(0), true
}
