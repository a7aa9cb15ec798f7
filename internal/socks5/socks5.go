// Package socks5 is the server side of SOCKS version 5 (RFC 1928) with
// username/password authentication (RFC 1929), for the proxy's SOCKS front
// end. It speaks the handshake and the reply only: Handshake reads the
// client's greeting, authenticates it and reads its request, and
// Request.Reply answers it once the caller has decided (dialed, or refused
// by policy). After a success reply the connection is a plain byte stream
// for the tunnel.
//
// Only CONNECT is served. BIND and UDP ASSOCIATE are answered "command not
// supported" (0x07): a forward proxy's clients open outbound TCP streams,
// and UDP relaying is out of scope.
package socks5

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
)

// Version is the SOCKS protocol version this package speaks; it is the
// first byte of every SOCKS5 message.
const Version = 0x05

// Authentication methods (RFC 1928 §3).
const (
	MethodNoAuth       = 0x00 // no authentication required
	MethodUserPass     = 0x02 // username/password (RFC 1929)
	MethodNoAcceptable = 0xff // no acceptable methods: the client must close
)

// Commands of a request (RFC 1928 §4).
const (
	CmdConnect      = 0x01
	CmdBind         = 0x02
	CmdUDPAssociate = 0x03
)

// Address types of a request and a reply (RFC 1928 §5).
const (
	AddrIPv4   = 0x01
	AddrDomain = 0x03
	AddrIPv6   = 0x04
)

// ReplyCode is the REP field of a reply (RFC 1928 §6).
type ReplyCode byte

// The reply codes of RFC 1928 §6. A code other than ReplySucceeded ends the
// connection.
const (
	ReplySucceeded               ReplyCode = 0x00
	ReplyGeneralFailure          ReplyCode = 0x01 // general SOCKS server failure
	ReplyNotAllowed              ReplyCode = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable      ReplyCode = 0x03
	ReplyHostUnreachable         ReplyCode = 0x04
	ReplyConnectionRefused       ReplyCode = 0x05
	ReplyTTLExpired              ReplyCode = 0x06 // used for timeouts
	ReplyCommandNotSupported     ReplyCode = 0x07
	ReplyAddressTypeNotSupported ReplyCode = 0x08
)

// String returns the RFC's name of the code, as curl and other clients show it.
func (c ReplyCode) String() string {
	switch c {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddressTypeNotSupported:
		return "address type not supported"
	}
	return "reply 0x" + strconv.FormatUint(uint64(c), 16)
}

// Errors of Handshake, to test with errors.Is. Each error Handshake returns
// wraps one of them (or an I/O error: io.EOF when the client closed before
// its greeting, io.ErrUnexpectedEOF in the middle of a message,
// os.ErrDeadlineExceeded past the deadline) and says what was wrong and
// what was answered.
var (
	// ErrNotSOCKS: the first byte is neither 5 nor 4; nothing is answered,
	// as the client speaks no SOCKS that an answer could be written in.
	ErrNotSOCKS = errors.New("socks5: not a SOCKS client")
	// ErrSOCKS4: a SOCKS4 or SOCKS4a client, answered with a SOCKS4
	// "request rejected or failed" (0x5b).
	ErrSOCKS4 = errors.New("socks5: SOCKS4 is not served, only SOCKS5")
	// ErrNoAcceptableMethod: the greeting offers no method the server
	// takes, answered 0xff.
	ErrNoAcceptableMethod = errors.New("socks5: no acceptable authentication method")
	// ErrAuthFailed: the username and password were rejected, answered
	// with the RFC 1929 failure status.
	ErrAuthFailed = errors.New("socks5: username/password rejected")
	// ErrCommandNotSupported: BIND, UDP ASSOCIATE or an unknown command,
	// answered 0x07.
	ErrCommandNotSupported = errors.New("socks5: command not supported")
	// ErrAddressTypeNotSupported: an unknown ATYP, answered 0x08.
	ErrAddressTypeNotSupported = errors.New("socks5: address type not supported")
	// ErrMalformed: a message that breaks RFC 1928 or RFC 1929, answered
	// with the failure of its stage (0xff to a greeting, the RFC 1929
	// failure status to an authentication request, 0x01 to a request).
	ErrMalformed = errors.New("socks5: malformed message")
	// ErrReplied: Request.Reply was called a second time.
	ErrReplied = errors.New("socks5: reply already sent")
)

// Protocol is what a connection's first byte announces (see Sniff).
type Protocol uint8

// The results of Sniff. The values are the SOCKS version bytes.
const (
	NotSOCKS Protocol = 0
	SOCKS4   Protocol = 4 // SOCKS4 or SOCKS4a
	SOCKS5   Protocol = 5
)

// Sniff tells a SOCKS client by the first byte it sent: 0x05 opens a SOCKS5
// greeting and 0x04 a SOCKS4 request. Neither is an HTTP token character,
// so no HTTP request (nor a TLS record, 0x16) starts with either, and a
// listener can tell SOCKS from HTTP on one byte.
func Sniff(first byte) Protocol {
	switch first {
	case 0x05:
		return SOCKS5
	case 0x04:
		return SOCKS4
	}
	return NotSOCKS
}

// ReplyFor returns the reply code for a failure to reach the target, by
// what the error wraps: a refused connection 0x05, an unreachable network
// 0x03, an unreachable host or a name that does not resolve 0x04, a
// timeout (of the dial, the DNS lookup or a deadline) 0x06; anything else,
// and a nil error, 0x01. Refusals by policy are the caller's to map, to
// ReplyNotAllowed (see ReplyForStatus).
func ReplyFor(err error) ReplyCode {
	if err == nil {
		return ReplyGeneralFailure
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return ReplyHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return ReplyTTLExpired
	case errors.As(err, &dnsErr):
		return ReplyHostUnreachable
	}
	return ReplyGeneralFailure
}

// ReplyForStatus maps a refusal the proxy would answer over HTTP with
// status to a reply code: 403 (rules, the private-address guard, the
// access hook), 407, 429 and 508 to 0x02 "not allowed by ruleset"; 504 to
// 0x06; 502 to ReplyFor(cause), which tells a refused connection, an
// unreachable host and a failed lookup apart; anything else (400, 503, …)
// to 0x01.
func ReplyForStatus(status int, cause error) ReplyCode {
	switch status {
	case http.StatusForbidden, http.StatusProxyAuthRequired, http.StatusTooManyRequests, http.StatusLoopDetected:
		return ReplyNotAllowed
	case http.StatusGatewayTimeout:
		return ReplyTTLExpired
	case http.StatusBadGateway:
		return ReplyFor(cause)
	}
	return ReplyGeneralFailure
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
