package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// The HTTP/1.1 fast path. A bodyless request to a plain-http upstream is
// sent by the handler goroutine itself on a connection from the
// Transport's own pool (pool.go): the request is written straight into a
// pooled bufio.Writer (one write system call), the response is parsed from
// a pooled bufio.Reader (by fastResponse when it has the common shape, by
// http.ReadResponse otherwise), and a body framed by Content-Length is
// handed to the client connection's ReadFrom as an io.LimitedReader over
// the upstream *net.TCPConn (Body.SpliceTo), so on Linux the kernel
// splices it. There is no per-connection
// goroutine and no hand-off between goroutines, and an idle connection holds
// no buffers.
//
// Everything else goes through the proxy's shared http.Transport, unchanged:
// https upstreams, requests with a body, Upgrade and Expect requests, and
// proxying through an environment proxy. The proxy's router decides which
// (CanSend is the Transport's part of that test).

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
// open; if it is not, the request is replayed on a new one (Send).
// Requests that cannot be replayed, and connections that served a bodyless
// response, are always checked.
const livenessCheckAfter = 500 * time.Millisecond

// TransportSettings are a Transport's limits and timeouts. The Transport
// reads them through TransportConfig.Settings once per request, and its
// pool each time it takes or keeps a connection; it keeps no copy, so a new
// value takes effect with the next request.
type TransportSettings struct {
	// MaxIdleConnsPerHost and MaxIdleConns bound the idle connections
	// kept per "host:port" and in all (enforced within a second by
	// trimming, see connPool).
	MaxIdleConnsPerHost int
	MaxIdleConns        int
	// IdleConnTimeout is how long an idle connection stays in the pool.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head once the
	// request is written.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds each response head (each 1xx
	// counted on its own); past it the round trip fails with
	// ErrResponseHeadTooLarge.
	MaxResponseHeaderBytes int
}

// TransportConfig is what a Transport is built from.
type TransportConfig struct {
	// Dial opens every upstream connection, as Dial(ctx, "tcp",
	// "host:port") with the request's context.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Settings returns the settings in force: it must be cheap and safe
	// for concurrent use, and return a value nobody changes.
	Settings func() *TransportSettings
}

// Transport is an http.RoundTripper for bodyless requests to plain-http
// upstreams (CanSend), with a connection pool of its own. Its responses'
// bodies are *Body.
type Transport struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	settings func() *TransportSettings
	pool     connPool
}

// NewTransport returns a Transport configured by c.
func NewTransport(c TransportConfig) *Transport {
	t := &Transport{dial: c.Dial, settings: c.Settings}
	t.pool.init(c.Settings)
	return t
}

// ConnObserver is told which upstream connection the Transport took for a
// request (see Send): an httptrace.ClientTrace's GotConn without the
// allocation of a ClientTrace and of the request copy that carries it.
type ConnObserver interface {
	// GotConn is called with the connection taken, and whether it was
	// reused from the pool, before the request is written.
	GotConn(httptrace.GotConnInfo)
}

// ErrUnsupportedRequest is RoundTrip's error for a request the Transport
// does not send (CanSend, ValidRequest).
var ErrUnsupportedRequest = errors.New("h1: request not sendable by the HTTP/1.1 transport")

// RoundTrip implements http.RoundTripper for the requests CanSend and
// ValidRequest accept.
func (t *Transport) RoundTrip(out *http.Request) (*http.Response, error) {
	addr, ok := CanSend(out)
	if !ok || !ValidRequest(out) {
		return nil, ErrUnsupportedRequest
	}
	return t.Send(out, addr, nil)
}

// CloseIdleConnections closes the idle connections and every connection
// handed back to the pool from now on.
func (t *Transport) CloseIdleConnections() { t.pool.closeIdle() }

// IdleConns returns the number of idle connections to addr and in all.
func (t *Transport) IdleConns(addr string) (host, total int) { return t.pool.idleCount(addr) }

// CanSend reports whether a Transport sends out exactly as http.Transport
// would and, if so, the "host:port" it dials for it: a bodyless request to
// a plain-http URL with an ASCII host, without Upgrade or Expect. It does
// not check the request's fields (ValidRequest).
func CanSend(out *http.Request) (addr string, ok bool) {
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

// Send sends out, a request CanSend accepted with addr, on a pooled
// connection to addr or a new one, and returns the response. When a pooled
// connection fails before a byte of response arrives (the upstream closed
// it just as it was reused), a replayable request is sent once more on a
// fresh connection, as net/http does.
//
// The connection taken is reported to the GotConn of out's
// httptrace.ClientTrace, if it has one, or else to obs (when not nil),
// which costs no allocation.
func (t *Transport) Send(out *http.Request, addr string, obs ConnObserver) (*http.Response, error) {
	return t.roundTrip(out, addr, nil, obs)
}

// Via is an HTTP proxy that SendVia sends requests through: each goes in
// absolute-form ("GET http://host/path HTTP/1.1") on a connection to the
// proxy, with the proxy's credentials, and the connections are pooled under
// Key like those to an upstream host.
type Via struct {
	// Key names the connections to this proxy in the pool. It must differ
	// from every "host:port" that Send dials (a prefix no host has, such
	// as "via ", does) and from every other Via's.
	Key string
	// Authorization is the Proxy-Authorization value sent with every
	// request, or "" for none. It is a secret: never log it.
	Authorization string
	// Dial connects to the proxy (with TLS for an https:// proxy).
	Dial func(ctx context.Context) (net.Conn, error)
}

// SendVia sends out, a request CanSend accepted, through the HTTP proxy
// via, as Send sends it to the upstream host: pooled connections, the one
// replay of a replayable request on a fresh connection, the same settings.
// Failures after the first byte of a response head arrived are
// *ResponseStartedError values, for both Send and SendVia.
func (t *Transport) SendVia(out *http.Request, via *Via, obs ConnObserver) (*http.Response, error) {
	return t.roundTrip(out, via.Key, via, obs)
}

// ResponseStartedError is a failure after a byte of the response head
// arrived: the upstream has read the request and begun to answer it, so a
// request that is not idempotent must not be sent again elsewhere. Its
// message is its cause's.
type ResponseStartedError struct{ Err error }

func (e *ResponseStartedError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *ResponseStartedError) Unwrap() error { return e.Err }

// roundTrip is Send and SendVia: to the pool key addr, through via when it
// is not nil.
func (t *Transport) roundTrip(out *http.Request, addr string, via *Via, obs ConnObserver) (*http.Response, error) {
	ctx := out.Context()
	st := t.settings()
	fresh := false
	for {
		var pc *pconn
		if !fresh {
			// Pooled connections the upstream closed (or wrote to) while
			// they were idle are dropped here; one closed after this
			// check is caught by the retry below.
			check := !replayable(out)
			for pc = t.pool.get(addr); pc != nil && (check || pc.suspect || pc.idled >= livenessCheckAfter) && !pc.alive(); pc = t.pool.get(addr) {
				pc.conn.Close()
			}
		}
		if pc == nil {
			var c net.Conn
			var err error
			if via != nil {
				c, err = via.Dial(ctx)
			} else {
				c, err = t.dial(ctx, "tcp", addr)
			}
			if err != nil {
				return nil, err
			}
			pc = newPconn(c, addr)
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: pc.reused})
		} else if obs != nil {
			obs.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: pc.reused}) // no client trace: no allocation
		}
		resp, err, retry := t.send(ctx, pc, out, via, st)
		if err == nil {
			return resp, nil
		}
		if !retry || fresh || ctx.Err() != nil {
			return nil, err
		}
		fresh = true
	}
}

// send writes out on pc and reads the response header. On error pc is
// closed, and retry reports whether the failure is a stale pooled
// connection that a replayable request may be retried after.
func (t *Transport) send(ctx context.Context, pc *pconn, out *http.Request, via *Via, st *TransportSettings) (resp *http.Response, err error, retry bool) {
	stop := context.AfterFunc(ctx, pc.cancelFunc)
	fail := func(err error, stale bool) (*http.Response, error, bool) {
		stop()
		pc.conn.Close()
		if stale && pc.reused && ctx.Err() == nil && !netx.IsTimeout(err) && replayable(out) {
			return nil, err, true
		}
		if !stale {
			err = &ResponseStartedError{Err: err}
		}
		return nil, err, false
	}
	if err := writeRequest(pc, out, via); err != nil {
		return fail(err, true)
	}
	pc.setReadDeadline(time.Now().Add(st.ResponseHeaderTimeout))
	br := h1Readers.Get().(*bufio.Reader)
	pc.headLeft = int64(st.MaxResponseHeaderBytes)
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
			} // else Body reads the Content-Length body itself (rc nil)
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
		pc.headLeft = int64(st.MaxResponseHeaderBytes) // each head has the limit, as in http.Transport
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
			t.pool.put(pc)
		} else {
			pc.conn.Close()
		}
		return resp, nil, false
	}
	b := &Body{pool: &t.pool, pc: pc, br: br, rc: resp.Body, ctx: ctx, stop: stop, keep: keep, remain: -1}
	if len(resp.TransferEncoding) == 0 && resp.ContentLength > 0 {
		b.remain = resp.ContentLength
	}
	resp.Body = b
	return resp, nil, false
}

// writeRequest writes the request line and header of the bodyless request
// out to pc in one write, as http.Transport would write them (Host first,
// Content-Length: 0 for POST, PUT and PATCH only), except that a request
// without a User-Agent goes without one (a proxy passes what came; the
// proxy makes http.Transport send none either).
func writeRequest(pc *pconn, out *http.Request, via *Via) error {
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
	if via != nil {
		// Absolute-form to a proxy (RFC 9112 §3.2.2); CanSend admits
		// plain-http URLs only.
		bw.WriteString("http://")
		bw.WriteString(out.URL.Host)
	}
	bw.WriteString(out.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	if via != nil && via.Authorization != "" {
		bw.WriteString("\r\nProxy-Authorization: ")
		bw.WriteString(via.Authorization)
	}
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
		case "Proxy-Authorization":
			if via != nil && via.Authorization != "" {
				continue // the proxy's, written above
			}
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
