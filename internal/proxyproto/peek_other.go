//go:build !linux

package proxyproto

import "net"

// peek is not used outside Linux: headers are read by the length of their
// parts (readExact).
func peek(net.Conn, *scratch) (int, error) { return 0, errNoPeek }

// peekNow is not used outside Linux either.
func peekNow(net.Conn, *scratch) (int, error) { return 0, errNoPeek }
