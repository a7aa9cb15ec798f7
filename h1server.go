package fwdproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// The client side of Serve. On small requests net/http's server costs a
// proxy about as much as the forwarding itself: a goroutine and a read per
// request that watch for clients going away, deadline and buffer juggling,
// and a response machinery built for handlers that may do anything. Serve
// therefore runs its own HTTP/1.1 loop on each accepted connection, on the
// connection's goroutine, for the requests a forward proxy mostly sees:
// bodyless absolute-form requests and CONNECT. They are parsed by
// fastRequest (h1parse.go) when they have the common shape, by
// http.ReadRequest otherwise, and handled by ServeHTTP exactly as under
// net/http, through a ResponseWriter of the loop's own (srvResponse).
//
// Connections that are not plain TCP (a TLS listener of the caller's, say)
// go to an http.Server configured as before as they are accepted, for its
// TLS handshake and HTTP/2. On a TCP connection, the first request the loop
// does not take — one with a body, Expect, Upgrade or HTTP2-Settings, an
// origin-form request, HTTP/2, a header block over 4 KiB or
// WithMaxHeaderBytes, anything http.ReadRequest or the Host checks reject —
// hands the connection, with every byte read so far, to that server, which
// serves it from then on. So every
// answer to malformed input (400, 431, 501 …) is net/http's, and the loop
// only ever serves requests that net/http would have accepted.
//
// What the loop does differently, on purpose:
//   - a client that goes away is noticed only once a request has run for
//     defaultClientWatchDelay (net/http watches every request from its start);
//   - no Content-Type is sniffed: a proxy passes the upstream's header on as
//     it came (net/http would add one to a response that has none).

const (
	// defaultClientWatchDelay is how long a request runs before its client
	// connection is watched for a disconnect, which cancels the request's
	// context. Almost all requests are answered before; those that are not
	// (long polls, slow upstreams) get the watch net/http gives every
	// request from its start. It is long enough that requests slowed by a
	// queue of a thousand others do not start a watch each, which would cost
	// a goroutine, a read and two deadlines apiece just when the proxy is
	// busiest.
	defaultClientWatchDelay = time.Second

	// bufferBeforeChunking is how much of a response body of unknown length
	// is held back, as net/http does: if the handler ends within it, the
	// response gets a Content-Length instead of chunked framing.
	bufferBeforeChunking = 2048
)

// h1server is one Serve call: its listener, the connections its loop
// serves, and the http.Server that takes the connections handed off.
type h1server struct {
	p   *Proxy
	ln  net.Listener
	srv *http.Server
	hl  *handoffListener

	closing atomic.Bool
	// Refusals are logged at most once a second each (h1refuse.go).
	overLimitLog, nonHTTPLog logLimiter
	mu                       sync.Mutex
	conns                    map[*srvConn]struct{}
	wg                       sync.WaitGroup // one per connection goroutine
}

// Connection states of the loop (srvConn.state).
const (
	connIdle   int32 = iota // waiting for a request: Shutdown may close it
	connActive              // reading or serving a request
	connGone                // closed, hijacked or handed off
)

// srvConn is a client connection served by the loop.
type srvConn struct {
	s      *h1server
	c      net.Conn
	tcp    *net.TCPConn // c (the loop serves TCP connections only)
	br     *bufio.Reader
	state  atomic.Int32
	remote string
	// ctx holds the values requests see (server, local address). It is
	// never cancelled, so that a request's own WithCancel
	// registers nothing with it; shutdown cancels requests through wcancel.
	ctx context.Context

	// The read deadline last set by setReadTimeout, valid until something
	// else sets one (the client watch, Hijack).
	dlValid   bool
	dlSet     time.Time
	dlTimeout time.Duration

	// The client watch (armWatch, watchClient, disarmWatch).
	wmu     sync.Mutex
	wtimer  *time.Timer
	wstate  int // watchOff, watchArmed, watchRunning
	wcancel context.CancelFunc
	wdone   chan struct{}
}

const (
	watchOff = iota
	watchArmed
	watchRunning
)

func newH1Server(p *Proxy, ln net.Listener, srv *http.Server) *h1server {
	return &h1server{
		p:     p,
		ln:    ln,
		srv:   srv,
		hl:    newHandoffListener(ln.Addr()),
		conns: make(map[*srvConn]struct{}),
	}
}

// acceptLoop accepts connections until the listener fails or shutdown
// closes it, backing off on errors that pass (out of file descriptors) as
// net/http does.
func (s *h1server) acceptLoop() error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if !retryableAccept(err) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.p.log.Warn("accept failed; retrying", "error", err.Error(), "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if _, ok := c.(*net.TCPConn); !ok {
			// A TLS (or other wrapped) connection from a listener of the
			// caller's keeps all of net/http's handling: its handshake,
			// HTTP/2 by ALPN, Request.TLS. net/http counts it.
			if !s.hl.handoff(c) {
				c.Close()
			}
			continue
		}
		if s.p.conns.Add(1) > int64(s.p.cfg.maxConns) {
			s.p.conns.Add(-1)
			s.refuseOverLimit(c)
			continue
		}
		sc := s.newConn(c)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			s.p.conns.Add(-1)
			continue
		}
		s.conns[sc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go sc.serve()
	}
}

// retryableAccept reports whether an Accept error may pass: a timeout, or
// a shortage of file descriptors or buffers, or a connection aborted before
// it was accepted.
func retryableAccept(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *h1server) newConn(c net.Conn) *srvConn {
	sc := &srvConn{s: s, c: c, remote: c.RemoteAddr().String()}
	sc.tcp = c.(*net.TCPConn)
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	sc.ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	return sc
}

// shutdown closes the listener and the idle connections, then waits for
// the others to finish their request (the loop closes them after it). At
// ctx's end the rest are closed and their requests cancelled.
func (s *h1server) shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.ln.Close()
	s.mu.Lock()
	for sc := range s.conns {
		if sc.state.CompareAndSwap(connIdle, connGone) {
			sc.c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sc := range s.conns {
		// Closed first: a handler that returns when its request is
		// cancelled must find nothing to write its (empty) response to.
		sc.c.Close()
		sc.wmu.Lock()
		if sc.wcancel != nil {
			sc.wcancel()
		}
		sc.wmu.Unlock()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// serve runs the loop on one connection until it closes, is hijacked (a
// tunnel), or is handed off.
func (sc *srvConn) serve() {
	s, p := sc.s, sc.s.p
	keep := false // the connection lives on: hijacked or handed off
	defer func() {
		if !keep {
			sc.state.Store(connGone)
			sc.c.Close()
			p.conns.Add(-1)
		}
		sc.releaseReader()
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
		s.wg.Done()
	}()
	for first := true; ; first = false {
		timeout := p.cfg.clientIdleTimeout
		if first {
			timeout = p.cfg.readHeaderTimeout
		}
		sc.setReadTimeout(timeout)
		sc.reader()
		b, err := sc.br.Peek(1)
		if err != nil {
			return // closed, idle too long, or closed by shutdown
		}
		if first {
			if proto, answer, ok := nonHTTP(b[0]); ok {
				sc.refuseNonHTTP(proto, answer) // TLS or SOCKS: no HTTP will come
				return
			}
		}
		if !sc.state.CompareAndSwap(connIdle, connActive) {
			return
		}
		head, err := sc.readHead(p.cfg.maxHeaderBytes, !first)
		if err != nil {
			return // timed out or closed mid-header: net/http closes quietly too
		}
		var req *http.Request
		var read []byte // what parsing consumed, for a hand-off
		if head != nil {
			buffered := sc.br.Buffered()
			if req = fastRequest(head); req != nil {
				_, _ = sc.br.Discard(len(head))
			} else if req = parseRequest(sc.br, head); req == nil {
				// The header block was all buffered, so parsing read it
				// without refilling: the bytes it consumed are intact.
				read = bytes.Clone(head[:buffered-sc.br.Buffered()])
			}
		}
		if req == nil {
			keep = sc.handoff(read)
			return
		}
		if sc.br.Buffered() == 0 {
			sc.releaseReader() // nothing pipelined: the buffer is not needed while the request is served
		}
		req.RemoteAddr = sc.remote
		again, hijacked := sc.serveRequest(req)
		if hijacked {
			keep = true
			return
		}
		if !again || !sc.state.CompareAndSwap(connActive, connIdle) || s.closing.Load() {
			return
		}
	}
}

// setReadTimeout sets the connection's read deadline d from now. Setting
// a deadline costs a timer update; on a busy keep-alive connection the one
// set less than a tenth of d (at most a second) ago is kept, so a timeout
// may come that much early.
func (sc *srvConn) setReadTimeout(d time.Duration) {
	now := time.Now()
	if sc.dlValid && sc.dlTimeout == d && now.Sub(sc.dlSet) < min(d/10, time.Second) {
		return
	}
	if d > 0 {
		_ = sc.c.SetReadDeadline(now.Add(d))
	} else {
		_ = sc.c.SetReadDeadline(time.Time{})
	}
	sc.dlValid, sc.dlSet, sc.dlTimeout = true, now, d
}

// readHead returns the request's header block, still buffered, once it is
// complete; nil (and no error) when it is larger than the reader's buffer
// or limit, which leaves the request to net/http. When the block is not
// all there and timed is set, the header timeout starts (the first
// request's idle wait is already timed by it).
func (sc *srvConn) readHead(limit int, timed bool) ([]byte, error) {
	br := sc.br
	limit = min(limit, br.Size())
	for n := br.Buffered(); ; n = br.Buffered() {
		buf, _ := br.Peek(n)
		if end := headerEnd(buf); end >= 0 {
			if end > limit {
				return nil, nil
			}
			return buf[:end], nil
		}
		if n >= limit || badRequestLine(buf) {
			return nil, nil // net/http answers (431, 400) or serves it
		}
		if timed {
			sc.setReadTimeout(sc.s.p.cfg.readHeaderTimeout)
			timed = false
		}
		if _, err := br.Peek(n + 1); err != nil {
			return nil, err
		}
	}
}

// headerEnd returns the length of the request line and header fields in b,
// up to and including the empty line that ends them, or -1 if b holds no
// empty line yet. Bare LF line ends count, as textproto accepts them.
func headerEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i
		}
	}
}

// srvReadBufferSize is the size of a client connection's read buffer,
// which bounds the header blocks the loop takes.
const srvReadBufferSize = 4 << 10

// srvReaders are client connections' read buffers. A connection holds one
// while it waits for and reads a request, not while the request is served
// (unless the client pipelined another).
var srvReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, srvReadBufferSize) }}

// reader makes sure the connection has its read buffer.
func (sc *srvConn) reader() {
	if sc.br == nil {
		sc.br = srvReaders.Get().(*bufio.Reader)
		sc.br.Reset(sc.c)
	}
}

func (sc *srvConn) releaseReader() {
	if sc.br != nil {
		sc.br.Reset(nil)
		srvReaders.Put(sc.br)
		sc.br = nil
	}
}

// parseRequest parses the header block head, all buffered in br, from br
// and returns the request if the loop takes it: a bodyless absolute-form
// request or a CONNECT, HTTP/1.x, with a valid Host field where one is
// required (net/http's rules) and nothing that needs net/http's machinery.
// Otherwise it returns nil.
func parseRequest(br *bufio.Reader, head []byte) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil || req.ProtoMajor != 1 {
		return nil
	}
	if req.Method != http.MethodConnect && !req.URL.IsAbs() {
		return nil // origin-form: the fallback handler may want anything
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return nil
	}
	h := req.Header
	for _, k := range [...]string{"Expect", "Upgrade", "Transfer-Encoding", "Http2-Settings"} {
		if _, ok := h[k]; ok {
			return nil
		}
	}
	// http.ReadRequest drops the Host field; the checks net/http's server
	// makes of it are made on the header block.
	hosts, host, folded := hostFields(head)
	switch {
	case folded:
		return nil // obsolete line folding: net/http joins the lines, and judges the result
	case hosts > 1:
		return nil
	case hosts == 1 && !validHostHeader(host):
		return nil
	case hosts == 0 && req.ProtoMinor >= 1 && req.Method != http.MethodConnect:
		return nil
	}
	if !validRequest(req) {
		return nil
	}
	return req
}

// hostFields counts the Host fields of a header block and returns the
// value of the last one; folded reports a continuation line (one that
// starts with a space or tab), which makes the count unreliable.
func hostFields(head []byte) (n int, value string, folded bool) {
	i := bytes.IndexByte(head, '\n') + 1 // past the request line
	for i < len(head) {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			break
		}
		line := head[i : i+j]
		i += j + 1
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			folded = true
		}
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			n++
			value = string(bytes.Trim(line[5:], " \t\r"))
		}
	}
	return n, value, folded
}

// validHostHeader is net/http's check of a Host field: characters allowed
// in a host, port, or IPv6 literal, and nothing else.
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!$&'()*+,-.:;=[]_~%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// handoff gives the connection to the http.Server with what was read of
// it: first read (what parsing consumed), then the rest of the buffer. It
// reports false if that server is closed (the connection is then closed by
// the caller).
func (sc *srvConn) handoff(read []byte) bool {
	ra := prefetched{consumed: read, br: sc.br}
	hc := &handoffTCPConn{TCPConn: sc.tcp, ra: ra}
	if !sc.state.CompareAndSwap(connActive, connGone) {
		return false
	}
	if !sc.s.hl.handoff(hc) {
		return false
	}
	sc.br = nil // the handed-off connection reads it empty
	return true
}

// serveRequest runs ServeHTTP on req. again reports whether the
// connection may serve another request; hijacked that the handler took it.
func (sc *srvConn) serveRequest(req *http.Request) (again, hijacked bool) {
	ctx, cancel := context.WithCancel(sc.ctx)
	defer cancel()
	req = req.WithContext(ctx)
	w := &srvResponse{sc: sc, req: req, cl: -1}
	watch := req.Method != http.MethodConnect
	if watch {
		sc.armWatch(cancel)
	}
	ok := sc.runHandler(w, req)
	if watch && !w.hijacked {
		sc.disarmWatch()
	}
	if w.hijacked {
		return false, true
	}
	if !ok {
		w.release()
		return false, false
	}
	w.finish()
	return !w.closeAfter, false
}

// runHandler calls ServeHTTP and reports whether it returned normally. A
// panic other than http.ErrAbortHandler is logged with its stack, as
// net/http does; either way the connection is then closed.
func (sc *srvConn) runHandler(w *srvResponse, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				sc.s.p.log.Error("panic serving request", "client", sc.remote, "panic", v, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	sc.s.p.ServeHTTP(w, req)
	return true
}

// armWatch starts the client watch for the request cancelled by cancel:
// after defaultClientWatchDelay a goroutine reads from the connection, and a
// disconnect (EOF or an error) cancels the request.
func (sc *srvConn) armWatch(cancel context.CancelFunc) {
	sc.wmu.Lock()
	sc.wstate, sc.wcancel = watchArmed, cancel
	sc.wmu.Unlock()
	if sc.wtimer == nil {
		sc.wtimer = time.AfterFunc(sc.s.p.cfg.clientWatchDelay, sc.watchClient)
	} else {
		sc.wtimer.Reset(sc.s.p.cfg.clientWatchDelay)
	}
}

func (sc *srvConn) watchClient() {
	sc.wmu.Lock()
	if sc.wstate != watchArmed {
		sc.wmu.Unlock()
		return
	}
	sc.wstate = watchRunning
	done := make(chan struct{})
	sc.wdone = done
	cancel := sc.wcancel
	// Under the lock, so that disarmWatch's deadline comes after this one.
	_ = sc.c.SetReadDeadline(time.Time{})
	sc.wmu.Unlock()
	defer close(done)
	// A bodyless request leaves the reader alone while it is served, so
	// the watch may peek: bytes that arrive (a pipelined request) stay
	// buffered for the loop.
	sc.reader()
	if _, err := sc.br.Peek(1); err != nil && !isTimeout(err) {
		cancel()
	}
}

// disarmWatch stops the client watch and, if it is reading, interrupts
// the read and waits for it to end.
func (sc *srvConn) disarmWatch() {
	sc.wtimer.Stop()
	sc.wmu.Lock()
	running := sc.wstate == watchRunning
	sc.wstate, sc.wcancel = watchOff, nil
	done := sc.wdone
	sc.wdone = nil
	if running {
		_ = sc.c.SetReadDeadline(aLongTimeAgo)
	}
	sc.wmu.Unlock()
	if running {
		<-done
		sc.dlValid = false
	}
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
	header http.Header   // nil until Header or adoptHeader
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

// adoptHeader makes h the response's header, if nothing has asked for
// the header yet (nor written the status), so that a relayed response's
// fields need not be copied from one map to another. The caller gives h
// up.
func (w *srvResponse) adoptHeader(h http.Header) bool {
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
// a token (a hook may set anything) is left out, as net/http leaves it.
func writeField(bw *bufio.Writer, k string, vv []string) {
	if !httpx.ValidToken(k) {
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
		_, _ = bw.WriteString(httpDate(time.Now()))
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

// writerOnly hides ReadFrom, so that io.Copy through it does not recurse.
type writerOnly struct{ io.Writer }

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
		buf := getBuffer()
		defer putBuffer(buf)
		return io.CopyBuffer(writerOnly{w}, src, buf[:])
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
	if w.hijacked {
		return nil, nil, http.ErrHijacked
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
			return nil, nil, err
		}
	}
	w.release()
	w.hijacked = true
	sc.state.Store(connGone)
	sc.s.p.conns.Add(-1)
	_ = sc.c.SetDeadline(time.Time{})
	sc.dlValid = false
	sc.reader()
	br := sc.br
	sc.br = nil
	return sc.c, bufio.NewReadWriter(br, bufio.NewWriter(sc.c)), nil
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

// httpDate returns now in the format of the Date field, formatted once a
// second.
func httpDate(now time.Time) string {
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &cachedDate{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]

// handoffListener feeds the connections the loop hands off to the
// http.Server.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) handoff(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefetched holds the bytes the loop read before it handed a connection
// off; reads take them first: those parsing consumed, then the rest of the
// buffer (which goes back to its pool once empty).
type prefetched struct {
	consumed []byte
	br       *bufio.Reader
}

func (ra *prefetched) read(c net.Conn, p []byte) (int, error) {
	if len(ra.consumed) > 0 {
		n := copy(p, ra.consumed)
		ra.consumed = ra.consumed[n:]
		return n, nil
	}
	if ra.br != nil {
		if ra.br.Buffered() > 0 {
			return ra.br.Read(p)
		}
		ra.br.Reset(nil)
		srvReaders.Put(ra.br)
		ra.br = nil
	}
	return c.Read(p)
}

// writeTo writes the bytes read ahead to w.
func (ra *prefetched) writeTo(w io.Writer) (int64, error) {
	var n int64
	if len(ra.consumed) > 0 {
		m, err := w.Write(ra.consumed)
		n += int64(m)
		ra.consumed = ra.consumed[m:]
		if err != nil {
			return n, err
		}
	}
	if ra.br == nil || ra.br.Buffered() == 0 {
		return n, nil
	}
	m, err := ra.br.WriteTo(writerOnly{w})
	return n + m, err
}

// handoffTCPConn is a handed-off TCP connection: it keeps *net.TCPConn's
// methods (CloseWrite, ReadFrom …) and reads the bytes read ahead first.
type handoffTCPConn struct {
	*net.TCPConn
	ra prefetched
}

func (c *handoffTCPConn) Read(p []byte) (int, error) { return c.ra.read(c.TCPConn, p) }

// WriteTo implements io.WriterTo: first what was read ahead, then the rest
// of the connection.
func (c *handoffTCPConn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.ra.writeTo(w)
	if err != nil {
		return n, err
	}
	m, err := c.TCPConn.WriteTo(w)
	return n + m, err
}
