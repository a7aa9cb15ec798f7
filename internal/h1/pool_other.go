//go:build !linux

package h1

// alive reports whether an idle pooled connection can carry a request. Off
// Linux it cannot tell without blocking; a stale connection is then found
// on use (and a replayable request retried).
func (pc *pconn) alive() bool { return true }
