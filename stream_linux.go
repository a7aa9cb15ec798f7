package fwdproxy

import (
	"io"

	"golang.org/x/sys/unix"
)

// spliceable reports whether src can be copied to dst with splice(2): both
// must be TCP connections, or netx.Conns over TCP connections, which pass
// the bytes they read ahead on first and then hand over.
func spliceable(dst, src io.ReadWriteCloser) bool {
	return tcpOf(dst) != nil && tcpOf(src) != nil
}

// tcpActivity returns the kernel's count of bytes received and acknowledged
// on a TCP connection (0 for anything else). It grows while a splice moves
// bytes, which user space cannot otherwise see.
func tcpActivity(c io.ReadWriteCloser) int64 {
	tc := tcpOf(c)
	if tc == nil {
		return 0
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var n int64
	_ = raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int64(info.Bytes_received + info.Bytes_acked)
		}
	})
	return n
}
