package proxyproto

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// peek copies the bytes waiting on c into s.buf without taking them from
// the socket (recv with MSG_PEEK), waiting, up to c's read deadline, until
// there is at least one. It returns io.EOF when the peer closed without
// sending anything, and errNoPeek when c has no file descriptor.
func peek(c net.Conn, s *scratch) (int, error) { return s.peek(c, true) }

// peekNow is peek without the wait: it returns errWouldBlock when nothing
// has arrived.
func peekNow(c net.Conn, s *scratch) (int, error) { return s.peek(c, false) }

func (s *scratch) peek(c net.Conn, wait bool) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errNoPeek
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, errNoPeek
	}
	s.wait = wait
	if s.recv == nil {
		s.recv = s.recvPeek // bound once per pooled scratch, not per call
	}
	if err := rc.Read(s.recv); err != nil {
		return 0, err
	}
	switch {
	case s.errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case s.errno != 0:
		return 0, os.NewSyscallError("recvfrom", s.errno)
	case s.n == 0:
		return 0, io.EOF
	}
	return s.n, nil
}

// recvPeek is the syscall.RawConn.Read callback of peek: one recvfrom with
// MSG_PEEK into s.buf (no source address asked for). Without wait it
// returns on EAGAIN too; with it, the runtime waits for the socket to be
// readable and calls it again.
func (s *scratch) recvPeek(fd uintptr) bool {
	for {
		r, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)),
			uintptr(syscall.MSG_PEEK|syscall.MSG_DONTWAIT), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		s.n, s.errno = int(r), e
		if e != 0 {
			s.n = 0
		}
		return !s.wait || e != syscall.EAGAIN
	}
}
