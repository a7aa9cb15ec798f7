//go:build !linux

package fwdproxy

import "io"

// spliceable is false where splice(2) does not exist: copies go through
// pooled buffers and count bytes as they go.
func spliceable(dst, src io.ReadWriteCloser) bool { return false }

// tcpActivity is 0: without splice every byte is counted by the copy loop.
func tcpActivity(io.ReadWriteCloser) int64 { return 0 }
