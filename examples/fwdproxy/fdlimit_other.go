//go:build !unix

package main

// raiseFDLimit reports an unknown limit: there is no RLIMIT_NOFILE here.
func raiseFDLimit() (soft, hard uint64) { return 0, 0 }
