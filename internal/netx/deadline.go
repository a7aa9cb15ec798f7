package netx

import (
	"errors"
	"net"
	"time"
)

// PastDeadline is a deadline in the past: setting it aborts pending I/O at
// once (net/http calls it aLongTimeAgo).
func PastDeadline() time.Time { return time.Unix(1, 0) }

// IsTimeout reports whether err is, or wraps, a net.Error that timed out:
// a deadline passed.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
