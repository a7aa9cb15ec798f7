package h1

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// What the loop refuses before it reads a request: connections past
// MaxConns (refuseOverLimit, at accept), clients that speak TLS or SOCKS
// to the plain HTTP listener (refuseNonHTTP, on the first byte), and a
// request line without an HTTP version (badRequestLine, which readHead hands
// to net/http for its 400). Each is answered at once instead of after the
// header timeout, so that none holds a descriptor for long.

// overLimitResponse is written, without reading anything, to a connection
// accepted past MaxConns: a 503 with reason as its body.
func overLimitResponse(reason string) []byte {
	return []byte("HTTP/1.1 503 Service Unavailable\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(reason)+1) + "\r\n" +
		"\r\n" +
		reason + "\n")
}

// refusedWriteTimeout bounds the write of a refusal. A new connection's
// send buffer is empty, so the write does not block in practice; the bound
// keeps the accept loop from waiting on a client that is not reading.
const refusedWriteTimeout = 100 * time.Millisecond

// refuseOverLimit answers a connection accepted past MaxConns with 503
// and closes it, on the accept loop: it reads nothing, so a client that
// sends nothing holds no descriptor and no goroutine. The refusal is counted
// (ServerConfig.Refused) and logged at most once a second.
func (s *Server) refuseOverLimit(c net.Conn, st *ServerSettings) {
	_ = c.SetWriteDeadline(time.Now().Add(refusedWriteTimeout))
	_, _ = c.Write(overLimitResponse(st.OverLimitReason))
	c.Close()
	s.refused.Add(1)
	if n, ok := s.overLimitLog.Allow(time.Now()); ok {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "connection refused: too many client connections",
			slog.String("client", c.RemoteAddr().String()),
			slog.Int("max_conns", st.MaxConns),
			slog.Int64("refused_since_last_line", n))
	}
}

// TLS and SOCKS first bytes. None is an HTTP token character, so no HTTP
// request starts with one.
const (
	tlsHandshakeRecord = 0x16 // TLS record type handshake: a ClientHello
	socks5Version      = 0x05
	socks4Version      = 0x04
)

// tlsAlertHandshakeFailure is a fatal handshake_failure alert (RFC 5246
// §7.2) in a TLS 1.0 record, which clients of every TLS version read: the
// client learns at once that no handshake will happen here.
var tlsAlertHandshakeFailure = []byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28}

// socks5NoMethods is a SOCKS5 method selection of "no acceptable methods"
// (RFC 1928 §3), a clean refusal to a SOCKS5 client.
var socks5NoMethods = []byte{0x05, 0xff}

// socks4Rejected is a SOCKS4 reply "request rejected or failed".
var socks4Rejected = []byte{0x00, 0x5b, 0, 0, 0, 0, 0, 0}

// nonHTTP names the protocol a connection's first byte announces, and the
// answer that refuses it; ok is false for anything else.
func nonHTTP(b byte) (proto string, answer []byte, ok bool) {
	switch b {
	case tlsHandshakeRecord:
		return "TLS", tlsAlertHandshakeFailure, true
	case socks5Version:
		return "SOCKS5", socks5NoMethods, true
	case socks4Version:
		return "SOCKS4", socks4Rejected, true
	}
	return "", nil, false
}

// lingerAfterRefusal bounds how long a refused connection is read (and the
// bytes dropped) after its answer and a half-close, so that the close does
// not reset the connection before the client has read the answer.
const lingerAfterRefusal = 500 * time.Millisecond

// refuseNonHTTP answers a client that opened with TLS or SOCKS, before any
// HTTP, with a refusal in its own protocol, and logs what it tried (at most
// once a second). The caller closes the connection.
func (sc *srvConn) refuseNonHTTP(proto string, answer []byte) {
	s := sc.s
	if n, ok := s.nonHTTPLog.Allow(time.Now()); ok {
		hint := "this is a plain HTTP proxy: use an http:// proxy URL"
		if proto != "TLS" {
			hint = "this is an HTTP proxy, not a SOCKS proxy: use an http:// proxy URL"
		}
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "client spoke "+proto+" to the HTTP listener; closed",
			slog.String("client", sc.remote), slog.String("hint", hint),
			slog.Int64("refused_since_last_line", n))
	}
	_ = sc.c.SetDeadline(time.Now().Add(lingerAfterRefusal))
	if _, err := sc.c.Write(answer); err != nil {
		return
	}
	// Read what else the client sent until it closes (it does on reading
	// the answer), so that closing does not reset the connection over an
	// answer still unread.
	if sc.tcp.CloseWrite() == nil {
		sc.reader()
		_, _ = sc.br.Discard(sc.br.Buffered())
		var buf [512]byte
		for {
			if _, err := sc.c.Read(buf[:]); err != nil {
				break
			}
		}
	}
	sc.dlValid = false
}

// badRequestLine reports whether buf, the start of a request whose header
// block is not complete, holds a whole request line that net/http's parser
// rejects: one without three parts, or whose version is not HTTP/x.y (an
// HTTP/0.9 "GET /"). readHead then hands the connection to net/http at
// once, which answers 400, instead of waiting for an empty line that an
// HTTP/0.9 client never sends.
func badRequestLine(buf []byte) bool {
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return false
	}
	line := bytes.TrimSuffix(buf[:i], []byte("\r"))
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return true
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		return true
	}
	_, _, ok := http.ParseHTTPVersion(string(rest[sp2+1:]))
	return !ok
}
