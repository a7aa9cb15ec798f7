// Package park waits for many idle connections at once without a
// goroutine each.
//
// A goroutine blocked reading an idle connection holds its stack (2–8
// KiB) for as long as the connection stays idle; a proxy holding
// thousands of idle keep-alive connections and tunnels spends most of its
// memory on such waits. A Parker keeps the idle connections instead: each
// is registered, one-shot, in an epoll set of its own, which is itself a
// file in the Go runtime's poller, so that one goroutine waits for all of
// them like any reader. When a parked connection becomes readable (or
// hangs up, or fails) its owner's Waker runs on a new goroutine, which
// then owns the connection again; when its deadline passes first, the
// Waker is told that instead. The Parker's goroutine runs only while some
// connection is registered with it.
//
// The seam is small on purpose: an owner gives an Entry the
// syscall.RawConn of its socket (a *net.TCPConn's SyscallConn, or that of
// any connection that is, byte for byte, a socket) and a Waker, then calls
// Park when it would block reading and nothing is buffered. Park reports
// false when the connection cannot be parked (not Linux, or the Parker
// failed): the owner then waits as it would have, on its own goroutine.
// Unpark takes a parked connection back (Shutdown, a tunnel closed from
// elsewhere); Release, before or after the connection is closed, forgets
// it.
//
// Only Linux parks (epoll through golang.org/x/sys/unix); elsewhere Park
// always reports false and nothing else changes.
package park

// A Waker is the owner of a parked connection. Wake runs, on a goroutine
// of its own, once for each Park that reported true and was not undone by
// a successful Unpark: with expired false when the connection became
// readable, hung up or failed (a read will not block), with expired true
// when the deadline given to Park passed first. Either way the Entry is no
// longer parked and the owner has the connection back.
type Waker interface {
	Wake(expired bool)
}
