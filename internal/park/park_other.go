//go:build !linux

package park

import (
	"syscall"
	"time"
)

// Parker parks nothing where there is no epoll: Park reports false, and
// owners wait on goroutines of their own as before.
type Parker struct{}

// New returns a Parker.
func New() *Parker { return &Parker{} }

// Entry is one connection's registration with a Parker.
type Entry struct{}

// Init sets the Parker, the socket and the owner of e.
func (e *Entry) Init(pk *Parker, rc syscall.RawConn, w Waker) {}

// Park reports false: nothing is parked here.
func (e *Entry) Park(deadline time.Time, slack time.Duration) bool { return false }

// Unpark reports false: nothing was parked.
func (e *Entry) Unpark() bool { return false }

// Release does nothing.
func (e *Entry) Release() {}

// SetLimit does nothing: nothing is parked here.
func (pk *Parker) SetLimit(n int) {}

// Limit returns 0: nothing is limited here.
func (pk *Parker) Limit() int { return 0 }

// InitLimited is Init.
func (e *Entry) InitLimited(pk *Parker, rc syscall.RawConn, w Waker) {}
