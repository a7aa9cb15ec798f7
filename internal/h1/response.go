package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/netx"
	"golang.org/x/net/http/httpguts"
)

// bufferBeforeChunking is how much of a response body of unknown length
// is held back, as net/http does: if the handler ends within it, the
// response gets a Content-Length instead of chunked framing.
const bufferBeforeChunking = 2048

// HeaderAdopter is a ResponseWriter that can take a header map as its own:
// the loop's, and a wrapper around one that passes the call on. A
// relayed response's header then needs no copy.
type HeaderAdopter interface {
	// AdoptHeader makes h the response's header and reports true, unless
	// the header was asked for or the status written already. When it
	// reports true the caller gives h up.
	AdoptHeader(h http.Header) bool
}

// srvResponse is the loop's http.ResponseWriter. Like net/http's it
// buffers the header and the first bytes of the body, so that a small
// response leaves in one write; it frames the body by the handler's
// Content-Length, by a length it computes when the handler ends within
// bufferBeforeChunking bytes, or chunked (HTTP/1.1) or by closing the
// connection (HTTP/1.0). It implements http.Flusher, http.Hijacker,
// io.ReaderFrom (a Content-Length body from a *net.TCPConn is spliced on
// Linux). The loop serves bodyless requests only, so it has no use for
// http.ResponseController's deadlines or full duplex; those report
// http.ErrNotSupported.
type srvResponse struct {
	sc     *srvConn
	req    *http.Request
	header http.Header   // nil until Header or AdoptHeader
	bw     *bufio.Writer // from h1Writers once the header is sent

	status      int   // final status, once WriteHeader has run
	headerSent  bool  // the status line and header are in bw
	noBody      bool  // HEAD, 204, 304: the body is not sent
	cl          int64 // the body's length, or -1 when not known
	written     int64 // body bytes the handler wrote
	chunked     bool
	closeAfter  bool
	hijacked    bool
	pending     []byte // body held until the framing is chosen
	trailerKeys []string
}

// Header implements http.ResponseWriter.
func (w *srvResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// AdoptHeader implements HeaderAdopter: it makes h the response's header,
// if nothing has asked for the header yet (nor written the status), so
// that a relayed response's fields need not be copied from one map to
// another. The caller gives h up.
func (w *srvResponse) AdoptHeader(h http.Header) bool {
	if h == nil || w.header != nil || w.status != 0 || w.hijacked {
		return false
	}
	w.header = h
	return true
}

// WriteHeader implements http.ResponseWriter. Informational (1xx) statuses
// other than 101 are sent at once with the current header.
func (w *srvResponse) WriteHeader(code int) {
	if w.hijacked || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.sendInformational(code)
		return
	}
	w.status = code
	if v := w.header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
}

func (w *srvResponse) sendInformational(code int) {
	w.getWriter()
	w.statusLine(code)
	for k, vv := range w.header {
		writeField(w.bw, k, vv)
	}
	_, _ = w.bw.WriteString("\r\n")
	if w.bw.Flush() != nil {
		w.closeAfter = true
	}
}

func (w *srvResponse) getWriter() {
	if w.bw == nil {
		w.bw = h1Writers.Get().(*bufio.Writer)
		w.bw.Reset(w.sc.c)
	}
}

// release returns the writer to its pool.
func (w *srvResponse) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		h1Writers.Put(w.bw)
		w.bw = nil
	}
}

func (w *srvResponse) statusLine(code int) {
	bw := w.bw
	if w.req.ProtoAtLeast(1, 1) {
		_, _ = bw.WriteString("HTTP/1.1 ")
	} else {
		_, _ = bw.WriteString("HTTP/1.0 ")
	}
	var num [4]byte
	_, _ = bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	_ = bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		_, _ = bw.WriteString(text)
	} else {
		_, _ = bw.WriteString("status code ")
		_, _ = bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	}
	_, _ = bw.WriteString("\r\n")
}

var newlinesToSpace = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// writeField writes a header field's values, each on its own line, with
// CR and LF turned into spaces as net/http does. A field whose name is not
// a token (a hook may set anything) is left out, as net/http leaves it
// (httpguts.ValidHeaderFieldName is its check).
func writeField(bw *bufio.Writer, k string, vv []string) {
	if !httpguts.ValidHeaderFieldName(k) {
		return
	}
	for _, v := range vv {
		if strings.ContainsAny(v, "\r\n") {
			v = newlinesToSpace.Replace(v)
		}
		_, _ = bw.WriteString(k)
		_, _ = bw.WriteString(": ")
		_, _ = bw.WriteString(strings.TrimSpace(v))
		_, _ = bw.WriteString("\r\n")
	}
}

// sendHeader chooses the framing and writes the status line and header to
// the buffer; done reports that the handler has returned, so the held body
// is all of it.
func (w *srvResponse) sendHeader(done bool) {
	w.headerSent = true
	h, req := w.header, w.req
	code := w.status
	w.noBody = req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	trailers := false
	if tv := h["Trailer"]; len(tv) > 0 {
		httpx.Tokens(tv, func(tok string) bool {
			w.trailerKeys = append(w.trailerKeys, http.CanonicalHeaderKey(tok))
			return true
		})
		trailers = true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			break
		}
	}
	computed := false
	switch {
	case w.noBody, w.cl >= 0:
	case done && !trailers:
		w.cl, computed = int64(len(w.pending)), true
	case req.ProtoAtLeast(1, 1):
		w.chunked = true
	default:
		w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
	}
	if req.Close || w.sc.s.closing.Load() || httpx.HasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	keepAlive10 := !req.ProtoAtLeast(1, 1) && !w.closeAfter

	w.getWriter()
	bw := w.bw
	w.statusLine(code)
	for k, vv := range h {
		switch {
		case k == "Transfer-Encoding", strings.HasPrefix(k, http.TrailerPrefix):
			continue
		case k == "Connection" && (w.closeAfter || keepAlive10):
			continue
		case k == "Trailer" && !w.chunked:
			continue
		case k == "Content-Length" && (w.cl < 0 || computed):
			continue // not a length the body is framed by: the handler's was invalid
		}
		writeField(bw, k, vv)
	}
	if _, ok := h["Date"]; !ok {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.WriteString(w.sc.s.date.format(time.Now()))
		_, _ = bw.WriteString("\r\n")
	}
	if computed {
		var num [20]byte
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(num[:0], w.cl, 10))
		_, _ = bw.WriteString("\r\n")
	}
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter && req.ProtoAtLeast(1, 1):
		_, _ = bw.WriteString("Connection: close\r\n")
	case keepAlive10:
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		w.writeBody(w.pending)
		w.pending = nil
	}
}

// writeBody writes body bytes in the chosen framing.
func (w *srvResponse) writeBody(p []byte) (int, error) {
	if w.chunked {
		var num [16]byte
		_, _ = w.bw.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
		_, _ = w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(p)
	if err == nil && w.chunked {
		_, err = w.bw.WriteString("\r\n")
	}
	if err != nil {
		w.closeAfter = true
	}
	return n, err
}

// Write implements http.ResponseWriter.
func (w *srvResponse) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.status == http.StatusNoContent || w.status == http.StatusNotModified {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.headerSent {
		if w.cl < 0 && len(w.pending)+len(p) <= bufferBeforeChunking {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.sendHeader(false)
	}
	if len(p) == 0 {
		return 0, nil
	}
	return w.writeBody(p)
}

// ReadFrom implements io.ReaderFrom. A body with a known length is
// written after the header by the connection's own ReadFrom, which on Linux
// splices from a *net.TCPConn (or an io.LimitedReader over one).
func (w *srvResponse) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.hijacked || w.cl < 0 || w.req.Method == http.MethodHead ||
		w.status == http.StatusNoContent || w.status == http.StatusNotModified ||
		w.sc.tcp == nil || !spliceSource(src) {
		buf := netx.GetBuffer()
		defer netx.PutBuffer(buf)
		return io.CopyBuffer(netx.WriterOnly{Writer: w}, src, buf[:])
	}
	if !w.headerSent {
		w.sendHeader(false)
	}
	if err := w.bw.Flush(); err != nil {
		w.closeAfter = true
		return 0, err
	}
	left := w.cl - w.written
	if lr, ok := src.(*io.LimitedReader); !ok || lr.N > left {
		src = &io.LimitedReader{R: src, N: left}
	}
	n, err := w.sc.tcp.ReadFrom(src)
	w.written += n
	if err != nil {
		w.closeAfter = true
	}
	return n, err
}

// spliceSource reports whether the kernel can move src's bytes to a TCP
// connection: src is a *net.TCPConn, or an io.LimitedReader over one.
func spliceSource(src io.Reader) bool {
	if lr, ok := src.(*io.LimitedReader); ok {
		src = lr.R
	}
	_, ok := src.(*net.TCPConn)
	return ok
}

// Flush implements http.Flusher.
func (w *srvResponse) Flush() { _ = w.FlushError() }

// FlushError sends what is buffered; http.ResponseController calls it.
func (w *srvResponse) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(false)
	}
	if err := w.bw.Flush(); err != nil {
		w.closeAfter = true
		return err
	}
	return nil
}

// Hijack implements http.Hijacker: the connection, with what the loop has
// read ahead, belongs to the caller from now on.
func (w *srvResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if err := w.takeConn(); err != nil {
		return nil, nil, err
	}
	sc := w.sc
	sc.reader()
	br := sc.br
	sc.br = nil
	return sc.c, bufio.NewReadWriter(br, bufio.NewWriter(sc.c)), nil
}

// ConnHijacker is implemented by the loop's ResponseWriter. HijackConn is
// Hijack for a handler that wants the connection alone (a CONNECT's
// tunnel): it returns the connection and a copy of the bytes the loop had
// read ahead of it (nil for none), and no bufio pair; the loop's read
// buffer goes back to its pool. Hijack's reader and writer would be 8 KiB
// of garbage for every tunnel.
type ConnHijacker interface {
	HijackConn() (net.Conn, []byte, error)
}

// HijackConn implements ConnHijacker.
func (w *srvResponse) HijackConn() (net.Conn, []byte, error) {
	if err := w.takeConn(); err != nil {
		return nil, nil, err
	}
	sc := w.sc
	var ahead []byte
	if sc.br != nil && sc.br.Buffered() > 0 {
		b, _ := sc.br.Peek(sc.br.Buffered())
		ahead = bytes.Clone(b)
	}
	sc.releaseReader()
	return sc.c, ahead, nil
}

// takeConn is what Hijack and HijackConn share: the response so far is
// sent, and the loop lets go of the connection, its deadlines cleared.
func (w *srvResponse) takeConn() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	sc := w.sc
	if w.req.Method != http.MethodConnect {
		sc.disarmWatch()
	}
	if w.status != 0 && !w.headerSent {
		w.sendHeader(false)
	}
	if w.headerSent {
		if err := w.bw.Flush(); err != nil {
			w.release()
			return err
		}
	}
	w.release()
	w.hijacked = true
	sc.state.Store(connGone)
	sc.s.open.Add(-1)
	sc.entry.Release() // the new owner may park it in a set of its own
	_ = sc.c.SetDeadline(time.Time{})
	sc.dlValid = false
	return nil
}

// finish completes the response after the handler returned: the header if
// it is still held, the last chunk and trailers, then one flush.
func (w *srvResponse) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(true)
	}
	if w.chunked {
		bw := w.bw
		_, _ = bw.WriteString("0\r\n")
		for _, k := range w.trailerKeys {
			if vv := w.header[k]; len(vv) > 0 {
				writeField(bw, k, vv)
			}
		}
		for k, vv := range w.header {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				writeField(bw, k[len(http.TrailerPrefix):], vv)
			}
		}
		_, _ = bw.WriteString("\r\n")
	}
	if !w.noBody && w.cl >= 0 && w.written != w.cl {
		w.closeAfter = true // a short body: only closing tells the client
	}
	if w.bw.Flush() != nil {
		w.closeAfter = true
	}
	w.release()
}
