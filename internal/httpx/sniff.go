package httpx

// Protocol is what the first bytes of a connection look like (see Sniff).
type Protocol int

// The results of Sniff.
const (
	SniffMore  Protocol = iota // too few bytes to tell
	SniffTLS                   // a TLS handshake record
	SniffHTTP1                 // an HTTP/1.x request line
	SniffOther                 // anything else
)

// Sniff classifies the first bytes a client sent on a connection. A TLS
// handshake record starts with content type 22 and major version 3 (RFC
// 8446 §5.1; ClientHellos carry 3.1 for compatibility). An HTTP/1.x request
// line (RFC 9112 §3) is a token method, one SP, a request target without
// spaces or control characters, one SP, "HTTP/1." and a digit, then CRLF or
// a bare LF, all within limit bytes. Sniff answers SniffOther as soon as a
// byte rules both out, so that a client of another protocol is not kept
// waiting for bytes it will never send; SniffMore means that b is a prefix
// of one of them.
func Sniff(b []byte, limit int) Protocol {
	if len(b) == 0 {
		return SniffMore
	}
	if b[0] == 0x16 {
		switch {
		case len(b) < 2:
			return SniffMore
		case b[1] == 3:
			return SniffTLS
		}
		return SniffOther
	}
	const version = "HTTP/1."
	i := 0
	for i < len(b) && TokenByte(b[i]) {
		i++
	}
	if i == len(b) {
		return more(b, limit)
	}
	if i == 0 || b[i] != ' ' {
		return SniffOther
	}
	i++ // the method's SP
	start := i
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	if i == len(b) {
		return more(b, limit)
	}
	if i == start || b[i] != ' ' {
		return SniffOther
	}
	i++ // the target's SP
	rest := b[i:]
	for j := 0; j < len(rest); j++ {
		c := rest[j]
		switch {
		case j < len(version):
			if c != version[j] {
				return SniffOther
			}
		case j == len(version):
			if c < '0' || c > '9' {
				return SniffOther
			}
		case j == len(version)+1:
			if c == '\n' {
				return SniffHTTP1
			}
			if c != '\r' {
				return SniffOther
			}
		default: // after CR
			if c == '\n' {
				return SniffHTTP1
			}
			return SniffOther
		}
	}
	return more(b, limit)
}

func more(b []byte, limit int) Protocol {
	if len(b) >= limit {
		return SniffOther
	}
	return SniffMore
}
