package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// Sizes of the two header versions.
const (
	v1MaxLen  = 107 // the longest v1 line, CRLF included
	v2HeadLen = 16  // signature, version and command, family, length
	peekLen   = 256 // what one peek looks at: any v1 line, a v2 header with some TLVs
)

// The v1 and v2 signatures; a v1 line starts "PROXY ".
var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// scratch holds what reading one header needs, pooled: a peek buffer and
// a reader over it for go-proxyproto's parser.
type scratch struct {
	buf [peekLen]byte
	r   bytes.Reader
	br  *bufio.Reader

	// peek's state (peek_linux.go)
	recv  func(fd uintptr) bool
	wait  bool
	n     int
	errno syscall.Errno
}

var scratchPool = sync.Pool{New: func() any {
	s := new(scratch)
	s.br = bufio.NewReaderSize(&s.r, peekLen)
	return s
}}

// errClosedEarly: the peer closed before sending a byte.
var errClosedEarly = errors.New("proxyproto: closed before sending anything")

// errNoPeek: the connection cannot be peeked at (see peek).
var errNoPeek = errors.New("proxyproto: cannot peek")

// errWouldBlock: nothing has arrived yet (see peekNow).
var errWouldBlock = errors.New("proxyproto: nothing to peek at yet")

// readHeader reads and parses the header that opens c, taking exactly its
// bytes from the socket, by deadline. It returns errClosedEarly when c
// ends before its first byte, ErrMissingHeader when c opens with something
// else, an error wrapping ErrMalformedHeader for a bad header, and the
// read's error (a timeout wraps os.ErrDeadlineExceeded) otherwise.
func readHeader(c net.Conn, deadline time.Time) (*pp.Header, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	b, err := headerBytes(c, sc)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errClosedEarly
		} else if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: the peer closed in the middle of it", ErrMalformedHeader)
		}
		return nil, err
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return parse(b, sc)
}

// parse parses one whole header with go-proxyproto, which must consume all
// of b.
func parse(b []byte, s *scratch) (*pp.Header, error) {
	s.r.Reset(b)
	s.br.Reset(&s.r)
	h, err := pp.Read(s.br)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedHeader, err)
	}
	if rest := s.br.Buffered() + s.r.Len(); rest != 0 {
		return nil, fmt.Errorf("%w: %d bytes after its end", ErrMalformedHeader, rest)
	}
	return h, nil
}

// headerNow reads and parses the header that opens c if it has arrived
// whole, without waiting; done is false when it has not (or c cannot be
// peeked at), and the header is then left for readHeader.
func headerNow(c net.Conn) (h *pp.Header, done bool, err error) {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	n, err := peekNow(c, sc)
	switch {
	case errors.Is(err, errNoPeek), errors.Is(err, errWouldBlock):
		return nil, false, nil
	case errors.Is(err, io.EOF):
		return nil, true, errClosedEarly
	case err != nil:
		return nil, true, err
	}
	size, err := headerSize(sc.buf[:n])
	if err != nil {
		return nil, true, err
	}
	if size == 0 || size > n {
		return nil, false, nil
	}
	// The header is all there: this read takes it at once.
	b := sc.buf[:size]
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, true, err
	}
	h, err = parse(b, sc)
	return h, true, err
}

// headerSize returns the size of the header that b, the first bytes of a
// connection, starts, or 0 when more bytes are needed to tell.
func headerSize(b []byte) (int, error) {
	switch sniff(b) {
	case sigNone:
		return 0, ErrMissingHeader
	case sigMore:
		return 0, nil
	}
	if b[0] == sigV1[0] {
		i := bytes.IndexByte(b, '\n')
		if i >= v1MaxLen || (i < 0 && len(b) >= v1MaxLen) {
			return 0, fmt.Errorf("%w: %w", ErrMalformedHeader, pp.ErrVersion1HeaderTooLong)
		}
		return i + 1, nil // 0 without a line end
	}
	if len(b) < v2HeadLen {
		return 0, nil
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if length > int(pp.MaxV2HeaderSize) {
		return 0, fmt.Errorf("%w: %w (%d bytes)", ErrMalformedHeader, pp.ErrInvalidLength, length)
	}
	return v2HeadLen + length, nil
}

// headerBytes returns the bytes of the header that opens c, read exactly.
// Where the connection can be peeked at (Linux), a peek finds the end of a
// v1 line or a v2 header's length, and one read takes the header; a v1
// line split over several segments, and every header elsewhere, is read by
// the length of its parts, a v1 line byte by byte.
func headerBytes(c net.Conn, sc *scratch) ([]byte, error) {
	n, err := peek(c, sc)
	switch {
	case errors.Is(err, errNoPeek):
		return readExact(c)
	case err != nil:
		return nil, err
	}
	size, err := headerSize(sc.buf[:n])
	switch {
	case err != nil:
		return nil, err
	case size == 0:
		return readExact(c)
	case size <= len(sc.buf):
		b := sc.buf[:size]
		_, err := io.ReadFull(c, b)
		return b, err
	}
	return take(c, size)
}

// take reads n bytes from c.
func take(c net.Conn, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readExact reads the header that opens c without reading past it: a v2
// header by its fixed part and then its length, a v1 line one byte at a
// time (at most 107 reads, and only where a peek did not find the line
// whole). io.EOF means c ended before its first byte.
func readExact(c net.Conn) ([]byte, error) {
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return nil, err
	}
	switch first[0] {
	case sigV1[0]:
		b := make([]byte, 1, v1MaxLen)
		b[0] = first[0]
		for len(b) < v1MaxLen {
			if _, err := io.ReadFull(c, first[:]); err != nil {
				return nil, unexpected(err)
			}
			b = append(b, first[0])
			if first[0] == '\n' {
				return b, nil
			}
			if len(b) == len(sigV1) && !bytes.Equal(b, sigV1) {
				return nil, ErrMissingHeader
			}
		}
		return nil, fmt.Errorf("%w: %w", ErrMalformedHeader, pp.ErrVersion1HeaderTooLong)
	case sigV2[0]:
		b := make([]byte, v2HeadLen)
		b[0] = first[0]
		if _, err := io.ReadFull(c, b[1:]); err != nil {
			return nil, unexpected(err)
		}
		if !bytes.Equal(b[:len(sigV2)], sigV2) {
			return nil, ErrMissingHeader
		}
		length := int(binary.BigEndian.Uint16(b[14:16]))
		if length > int(pp.MaxV2HeaderSize) {
			return nil, fmt.Errorf("%w: %w (%d bytes)", ErrMalformedHeader, pp.ErrInvalidLength, length)
		}
		b = append(b, make([]byte, length)...)
		if _, err := io.ReadFull(c, b[v2HeadLen:]); err != nil {
			return nil, unexpected(err)
		}
		return b, nil
	}
	return nil, ErrMissingHeader
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// sigState is what the first bytes of an untrusted connection say.
type sigState int

const (
	sigNone  sigState = iota // not a PROXY header
	sigMore                  // a prefix of a signature: more bytes decide
	sigFound                 // a PROXY header
)

// sniff classifies the first bytes of an untrusted connection. "PROXY "
// and the v2 signature are never the start of an HTTP request or a SOCKS
// greeting.
func sniff(b []byte) sigState {
	for _, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if n > 0 && bytes.Equal(b[:n], sig[:n]) {
			if n == len(sig) {
				return sigFound
			}
			return sigMore
		}
	}
	return sigNone
}
