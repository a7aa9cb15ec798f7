package fwdproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// The HTTP/1.1 fast path. A bodyless request to a plain-http upstream is
// sent by the handler goroutine itself on a connection from the proxy's own
// pool (pool.go): the request is written straight into a pooled bufio.Writer
// (one write system call), the response is parsed from a pooled bufio.Reader
// (by fastResponse when it has the common shape, by http.ReadResponse
// otherwise), and a body framed by Content-Length is handed to the
// client connection's ReadFrom as an io.LimitedReader over the upstream
// *net.TCPConn, so on Linux the kernel splices it. There is no per-connection
// goroutine and no hand-off between goroutines, and an idle connection holds
// no buffers.
//
// Everything else goes through the shared http.Transport, unchanged: https
// upstreams, requests with a body, Upgrade and Expect requests, and proxying
// through an environment proxy.

// max1xxResponses bounds the informational responses skipped before the
// final one, as http.Transport does.
const max1xxResponses = 5

const (
	// h1ReadBufferSize holds a typical response header and the start of
	// the body; longer header lines are read in pieces, and bodies past
	// the buffer are spliced or copied in 32 KiB buffers. It is small
	// because a request holds its buffer while it waits for the upstream,
	// which with a thousand requests waiting adds up.
	h1ReadBufferSize  = 2 << 10
	h1WriteBufferSize = 4 << 10
)

var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1ReadBufferSize) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1WriteBufferSize) }}
)

var errTooMany1xx = errors.New("too many 1xx informational responses")

// livenessCheckAfter is the idle time past which a pooled connection is
// checked (pconn.alive, one system call) before a replayable request is
// sent on it. Upstreams close idle connections after seconds, not
// microseconds, so a connection back in use within this time is very likely
// open; if it is not, the request is replayed on a new one (h1RoundTrip).
// Requests that cannot be replayed, and connections that served a bodyless
// response, are always checked.
const livenessCheckAfter = 500 * time.Millisecond

// upstreamRoundTrip sends out upstream and returns the response: on the
// HTTP/1.1 fast path when out qualifies, through the shared transport
// otherwise.
func (p *Proxy) upstreamRoundTrip(out *http.Request) (resp *http.Response, err error) {
	if key, ok := p.fastPath(out); ok {
		resp, err = p.h1RoundTrip(out, key)
	} else {
		noDefaultUserAgent(out)
		resp, err = p.transport.RoundTrip(out)
	}
	if err != nil {
		if over, h2 := responseHeadTooLarge(err); over || h2 {
			target := out.URL.Host
			limit := strconv.Itoa(p.cfg.maxResponseHeader) + " bytes (the WithMaxResponseHeaderBytes limit)"
			reason := "upstream " + target + " sent a response header over " + limit
			if h2 {
				reason = "upstream " + target + " broke the HTTP/2 protocol, or sent a response header over " + limit
			}
			err = newError(ErrUpstream, target, reason, err)
		}
	}
	return resp, err
}

// responseHeadTooLarge reports whether err is a response head over
// WithMaxResponseHeaderBytes (over): the own client's error, or one of
// http.Transport's, which has no error value for it, so its messages are
// matched (TestResponseHeaderLimit checks them). Over HTTP/2 a head that
// passes the limit by more than a frame ends the connection with a
// PROTOCOL_ERROR that tells nothing more; h2 reports such an error.
func responseHeadTooLarge(err error) (over, h2 bool) {
	if errors.Is(err, errResponseHeadTooLarge) {
		return true, false
	}
	s := err.Error()
	if strings.Contains(s, "server response headers exceeded") || // HTTP/1
		strings.Contains(s, "response header list larger than advertised limit") { // HTTP/2, within a frame
		return true, false
	}
	return false, strings.Contains(s, "connection error: PROTOCOL_ERROR")
}

// noDefaultUserAgent keeps http.Transport from adding its own User-Agent
// ("Go-http-client/1.1") to a request that has none: a proxy passes what
// came. Its HTTP/1 and HTTP/2 writers both send no User-Agent for a key
// present with no value. (The fast path's writeRequest adds none anyway.)
func noDefaultUserAgent(out *http.Request) {
	if _, ok := out.Header["User-Agent"]; ok {
		return
	}
	if out.Header == nil {
		out.Header = make(http.Header, 1)
	}
	out.Header["User-Agent"] = nil
}

// fastPath reports whether out takes the fast path and, if so, the
// "host:port" to dial.
func (p *Proxy) fastPath(out *http.Request) (string, bool) {
	if p.h1pool == nil || p.cfg.proxyFromEnvironment {
		return "", false
	}
	key, ok := fastPathKey(out)
	if !ok || (len(p.cfg.requestHooks) > 0 && !validRequest(out)) {
		return "", false
	}
	return key, true
}

// fastPathKey reports whether out can take the fast path and, if so, the
// "host:port" to dial. The conditions keep the fast path to requests it
// sends exactly as http.Transport would.
func fastPathKey(out *http.Request) (string, bool) {
	u := out.URL
	if u.Scheme != "http" || u.Host == "" || u.Opaque != "" || out.Method == http.MethodConnect {
		return "", false
	}
	if (out.Body != nil && out.Body != http.NoBody) || out.ContentLength != 0 ||
		len(out.TransferEncoding) > 0 || len(out.Trailer) > 0 {
		return "", false
	}
	h := out.Header
	if _, ok := h["Upgrade"]; ok {
		return "", false
	}
	if _, ok := h["Expect"]; ok {
		return "", false
	}
	host := u.Host
	if out.Host != "" && out.Host != host && !asciiHost(out.Host) {
		return "", false
	}
	if !asciiHost(host) {
		return "", false // internationalised names: the transport converts them
	}
	if u.Port() != "" {
		return host, true
	}
	return strings.TrimSuffix(host, ":") + ":80", true
}

// asciiHost reports whether h is a host[:port] with nothing the transport
// would rewrite (non-ASCII, IPv6 zone, path or space).
func asciiHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 0x80 || c <= ' ' || c == '%' || c == '/' {
			return false
		}
	}
	return true
}

// validRequest checks what a request hook may have broken and the server
// would not have let in; an invalid request is left to the transport, which
// reports it.
func validRequest(out *http.Request) bool {
	if !httpx.ValidToken(out.Method) {
		return false
	}
	for k, vv := range out.Header {
		if !httpx.ValidToken(k) {
			return false
		}
		for _, v := range vv {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return false
				}
			}
		}
	}
	return true
}

// replayable reports whether out may be sent again after a pooled
// connection turned out to be closed (net/http's rule).
func replayable(out *http.Request) bool {
	switch out.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := out.Header["Idempotency-Key"]
	_, b := out.Header["X-Idempotency-Key"]
	return a || b
}

// h1RoundTrip sends out on a pooled connection to key, or a new one. When a
// pooled connection fails before a byte of response arrives (the upstream
// closed it just as it was reused), a replayable request is sent once more
// on a fresh connection, as net/http does.
func (p *Proxy) h1RoundTrip(out *http.Request, key string) (*http.Response, error) {
	ctx := out.Context()
	fresh := false
	for {
		var pc *pconn
		if !fresh {
			// Pooled connections the upstream closed (or wrote to) while
			// they were idle are dropped here; one closed after this
			// check is caught by the retry below.
			check := !replayable(out)
			for pc = p.h1pool.get(key); pc != nil && (check || pc.suspect || pc.idled >= livenessCheckAfter) && !pc.alive(); pc = p.h1pool.get(key) {
				pc.conn.Close()
			}
		}
		if pc == nil {
			c, err := p.dial(ctx, "tcp", key)
			if err != nil {
				return nil, err
			}
			pc = newPconn(c, key)
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: pc.reused})
		} else if rs := reqStateFrom(ctx); rs != nil && rs.traceTel != nil {
			rs.gotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: pc.reused}) // roundTrip left it to us
		}
		resp, err, retry := p.h1Send(ctx, pc, out)
		if err == nil {
			return resp, nil
		}
		if !retry || fresh || ctx.Err() != nil {
			return nil, err
		}
		fresh = true
	}
}

// h1Send writes out on pc and reads the response header. On error pc is
// closed, and retry reports whether the failure is a stale pooled
// connection that a replayable request may be retried after.
func (p *Proxy) h1Send(ctx context.Context, pc *pconn, out *http.Request) (resp *http.Response, err error, retry bool) {
	stop := context.AfterFunc(ctx, pc.cancelFunc)
	fail := func(err error, stale bool) (*http.Response, error, bool) {
		stop()
		pc.conn.Close()
		if stale && pc.reused && ctx.Err() == nil && !isTimeout(err) && replayable(out) {
			return nil, err, true
		}
		return nil, err, false
	}
	if err := writeRequest(pc, out); err != nil {
		return fail(err, true)
	}
	pc.setReadDeadline(time.Now().Add(p.cfg.responseHeaderTimeout))
	br := h1Readers.Get().(*bufio.Reader)
	pc.headLeft = int64(p.cfg.maxResponseHeader)
	br.Reset(pc)
	release := func() {
		br.Reset(nil)
		h1Readers.Put(br)
	}
	if _, err := br.Peek(1); err != nil {
		release()
		return fail(err, true)
	}
	for n1xx := 0; ; n1xx++ {
		buf, _ := br.Peek(br.Buffered())
		if r, n := fastResponse(buf, out.Method); r != nil {
			_, _ = br.Discard(n)
			r.Request = out
			if r.ContentLength == 0 {
				r.Body = http.NoBody
			} // else h1Body reads the Content-Length body itself (rc nil)
			resp = r
			break
		}
		resp, err = http.ReadResponse(br, out)
		if err != nil {
			release()
			return fail(err, false)
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// Upgrade requests take the transport; a 101 here is unasked for.
			release()
			return fail(errors.New("unexpected 101 Switching Protocols"), false)
		}
		if n1xx >= max1xxResponses {
			release()
			return fail(errTooMany1xx, false)
		}
		pc.headLeft = int64(p.cfg.maxResponseHeader) // each head has the limit, as in http.Transport
	}
	pc.headLeft = -1 // the body is not limited
	if resp.Body != http.NoBody && (resp.ContentLength < 0 || resp.ContentLength > int64(br.Buffered())) {
		// More of the body is to be read: the header timeout ends here. (A
		// body that is all buffered needs no read, and the next use of the
		// connection sets a new deadline.)
		pc.setReadDeadline(time.Time{})
	}
	keep := !resp.Close && !out.Close && !httpx.HasToken(out.Header["Connection"], "close")
	pc.suspect = out.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified
	if resp.Body == http.NoBody {
		// HEAD, 204, 304, Content-Length: 0: the exchange is over.
		stopped := stop()
		reuse := stopped && keep && br.Buffered() == 0
		release()
		if reuse {
			p.h1pool.put(pc)
		} else {
			pc.conn.Close()
		}
		return resp, nil, false
	}
	b := &h1Body{pool: p.h1pool, pc: pc, br: br, rc: resp.Body, ctx: ctx, stop: stop, keep: keep, remain: -1}
	if len(resp.TransferEncoding) == 0 && resp.ContentLength > 0 {
		b.remain = resp.ContentLength
	}
	resp.Body = b
	return resp, nil, false
}

// writeRequest writes the request line and header of the bodyless request
// out to pc in one write, as http.Transport would write them (Host first,
// Content-Length: 0 for POST, PUT and PATCH only), except that a request
// without a User-Agent goes without one, as noDefaultUserAgent makes the
// transport send it.
func writeRequest(pc *pconn, out *http.Request) error {
	bw := h1Writers.Get().(*bufio.Writer)
	bw.Reset(pc.conn)
	defer func() {
		bw.Reset(nil)
		h1Writers.Put(bw)
	}()
	host := out.Host
	if host == "" {
		host = out.URL.Host
	}
	method := out.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(out.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	h := out.Header
	ua := ""
	if v := h["User-Agent"]; len(v) > 0 {
		ua = textproto.TrimString(v[0])
	}
	if ua != "" {
		bw.WriteString("\r\nUser-Agent: ")
		bw.WriteString(ua)
	}
	if out.Close && !httpx.HasToken(h["Connection"], "close") {
		bw.WriteString("\r\nConnection: close")
	}
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("\r\nContent-Length: 0")
	}
	for k, vv := range h {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			bw.WriteString("\r\n")
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
		}
	}
	bw.WriteString("\r\n\r\n")
	return bw.Flush()
}

// h1Body is the body of a fast-path response. It hands the connection back
// to the pool when the body has been read to its end on a keep-alive
// connection with nothing unexpected behind it, and closes it in every
// other case (body left unread, error, cancellation, Connection: close).
type h1Body struct {
	pool   *connPool
	pc     *pconn // nil once handed back or closed
	br     *bufio.Reader
	rc     io.ReadCloser // the body as http.ReadResponse framed it; nil when fastResponse did
	ctx    context.Context
	stop   func() bool // stops the cancellation watch; false if it fired
	keep   bool        // the exchange allows keep-alive
	remain int64       // Content-Length bytes left for a splice, or -1
	eof    bool
	closed bool
	err    error      // why the exchange ended early, once it has
	watch  *idleWatch // the body idle timeout's, once watchIdle started it
}

// Read implements io.Reader.
func (b *h1Body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.pc == nil {
		// The exchange ended early and the reader went back to its pool.
		return 0, b.err
	}
	var n int
	var err error
	if b.rc != nil {
		n, err = b.rc.Read(p)
		if b.remain > 0 {
			b.remain -= int64(n)
		}
	} else {
		n, err = b.readFixed(p)
	}
	switch {
	case err == io.EOF:
		b.eof = true
		b.finish(true)
	case err != nil:
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		b.err = err
		b.finish(false)
	}
	return n, err
}

// readFixed reads a Content-Length body that fastResponse framed (rc nil)
// as net/http's body would: io.EOF with the last byte, and
// io.ErrUnexpectedEOF if the connection ends before it.
func (b *h1Body) readFixed(p []byte) (int, error) {
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	switch {
	case b.remain == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close implements io.Closer. A body not read to its end closes the
// connection: draining it could take any time.
func (b *h1Body) Close() error {
	if !b.closed {
		b.closed = true
		b.finish(false)
	}
	return nil
}

// finish ends the exchange: the connection goes back to the pool when done
// is set and nothing forbids reuse, and is closed otherwise.
func (b *h1Body) finish(done bool) {
	pc := b.pc
	if pc == nil {
		return
	}
	b.pc = nil
	b.watch.stop() // before the connection can be reused: no deadline from it after
	reuse := b.stop() && done && b.keep && b.br.Buffered() == 0
	b.br.Reset(nil)
	h1Readers.Put(b.br)
	b.br = nil
	if reuse {
		b.pool.put(pc)
	} else {
		pc.conn.Close()
	}
}

// spliceTo copies the rest of a Content-Length body to w when w can read
// from a reader (the server's response writer, whose ReadFrom hands an
// io.LimitedReader over a *net.TCPConn to the client connection's
// ReadFrom, which splices on Linux): first the body bytes already
// buffered, then the rest straight from the socket. ok is false, and nothing
// is done, when the body cannot be copied this way.
func (b *h1Body) spliceTo(w io.Writer) (written int64, readErr, writeErr error, ok bool) {
	rf, isRF := w.(io.ReaderFrom)
	if !isRF || b.pc == nil || b.pc.tcp == nil || b.remain <= 0 || b.closed || b.eof {
		return 0, nil, nil, false
	}
	if k := int64(b.br.Buffered()); k > 0 {
		buf, _ := b.br.Peek(int(min(k, b.remain)))
		m, err := w.Write(buf)
		_, _ = b.br.Discard(m)
		written += int64(m)
		b.remain -= int64(m)
		if err != nil {
			b.err = err
			b.finish(false)
			return written, nil, err, true
		}
	}
	if b.remain > 0 {
		// Header and buffered bytes go out in one write now; without it
		// ReadFrom would first copy 512 bytes through user space (its
		// sniffing step) before it splices.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		lr := &io.LimitedReader{R: b.pc.tcp, N: b.remain}
		n, err := rf.ReadFrom(lr)
		written += n
		b.remain = lr.N
		if err != nil {
			b.err = err
			b.finish(false)
			if b.ctx.Err() != nil {
				return written, nil, b.ctx.Err(), true
			}
			// Either side may have failed; treating it as the upstream's
			// aborts the client connection, which is right in both cases.
			return written, err, nil, true
		}
		if b.remain > 0 {
			b.err = io.ErrUnexpectedEOF
			b.finish(false)
			return written, io.ErrUnexpectedEOF, nil, true
		}
	}
	b.eof = true
	b.finish(true)
	return written, nil, nil, true
}
