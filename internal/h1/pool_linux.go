package h1

import "golang.org/x/sys/unix"

// alive reports whether an idle pooled connection can carry a request: the
// upstream has neither closed it nor sent anything unasked. It peeks at the
// socket without blocking (one recvfrom), the check net/http's per-connection
// read loop makes continuously.
func (pc *pconn) alive() bool {
	if pc.tcp == nil {
		return true
	}
	raw, err := pc.tcp.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = rerr == unix.EAGAIN || rerr == unix.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}
