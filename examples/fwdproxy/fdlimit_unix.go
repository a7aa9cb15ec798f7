//go:build unix

package main

import "syscall"

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit, where the
// system allows it, and returns both (0 when they cannot be read).
func raiseFDLimit() (soft, hard uint64) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0, 0
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = raised.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			rl = raised
		}
	}
	return uint64(rl.Cur), uint64(rl.Max)
}
