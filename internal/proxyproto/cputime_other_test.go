//go:build !unix

package proxyproto

// cpuTime is not measured here.
func cpuTime() int64 { return 0 }
