package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/park"
	"github.com/fwdproxy/fwdproxy/internal/throttle"
)

// The client side of the proxy's Serve. On small requests net/http's server
// costs a proxy about as much as the forwarding itself: a goroutine and a
// read per request that watch for clients going away, deadline and buffer
// juggling, and a response machinery built for handlers that may do
// anything. Serve therefore runs this loop on each accepted connection, on
// the connection's goroutine, for the requests a forward proxy mostly sees:
// bodyless absolute-form requests and CONNECT. They are parsed by
// fastRequest (parse.go) when they have the common shape, by
// http.ReadRequest otherwise, and handled by the Handler's ServeHTTP exactly
// as under net/http, through a ResponseWriter of the loop's own
// (srvResponse, response.go).
//
// Connections that are not plain TCP (a TLS listener of the caller's, say)
// go to the hand-off http.Server as they are accepted (a TCPCarrier, a
// PROXY protocol connection, counts as TCP), for its TLS handshake
// and HTTP/2. On a TCP connection, the first request the loop does not take
// — one with a body, Expect, Upgrade or HTTP2-Settings, an origin-form
// request, HTTP/2, a header block over 4 KiB or MaxHeaderBytes, anything
// http.ReadRequest or the Host checks reject — hands the connection, with
// every byte read so far, to that server, which serves it from then on. So
// every answer to malformed input (400, 431, 501 …) is net/http's, and the
// loop only ever serves requests that net/http would have accepted.
//
// What the loop does differently, on purpose:
//   - a client that goes away is noticed only once a request has run for
//     ClientWatchDelay (net/http watches every request from its start);
//   - no Content-Type is sniffed: a proxy passes the upstream's header on as
//     it came (net/http would add one to a response that has none).

// DefaultClientWatchDelay is the usual ServerSettings.ClientWatchDelay: how
// long a request runs before its client connection is watched for a
// disconnect, which cancels the request's context. Almost all requests are
// answered before; those that are not (long polls, slow upstreams) get the
// watch net/http gives every request from its start. It is long enough that
// requests slowed by a queue of a thousand others do not start a watch each,
// which would cost a goroutine, a read and two deadlines apiece just when
// the proxy is busiest.
const DefaultClientWatchDelay = time.Second

// ServerSettings are a Server's timeouts and limits. The Server reads them
// through ServerConfig.Settings once per accepted connection and once per
// request, and keeps no copy: a new value takes effect with the next
// connection or request.
type ServerSettings struct {
	// ReadHeaderTimeout bounds the wait for a connection's first request
	// header block, from the accept, and for every later one from its
	// first byte.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection (at most an eighth more for one parked:
	// ServerConfig.Parker).
	IdleTimeout time.Duration
	// MaxHeaderBytes is the largest header block the loop reads itself
	// (at most its 4 KiB buffer); larger ones go to the hand-off server,
	// which enforces its own MaxHeaderBytes.
	MaxHeaderBytes int
	// ClientWatchDelay is how long a request runs before its client is
	// watched for a disconnect (DefaultClientWatchDelay).
	ClientWatchDelay time.Duration
	// MaxConns bounds the client connections open at once (counted in
	// ServerConfig.Conns); a TCP connection accepted past it is answered
	// 503 with OverLimitReason and closed, before anything is read.
	MaxConns int
	// OverLimitReason is the body of that 503, one line of text.
	OverLimitReason string
	// SOCKS, when not nil, takes the connections whose first byte is a
	// SOCKS5 version (5), instead of the refusal the loop answers them
	// with: it is called on the connection's goroutine with the
	// connection, the bytes read of it first, and serves it to its end. The
	// connection stays counted in ServerConfig.Conns, for SOCKS to take out
	// once it closes or becomes a tunnel. SOCKS4 is refused either way.
	SOCKS func(c net.Conn)
	// HandOff, when not nil, is the http.Server that takes the
	// connections handed off from now on, instead of ServerConfig.HandOff
	// (so that a new value of its own timeouts and limits can apply). The
	// connections already handed off stay with the server they went to.
	// The Server serves each one it hands connections to on a listener of
	// its own, until Serve returns.
	HandOff *http.Server
}

// ServerConfig is what a Server is built from besides its listener.
type ServerConfig struct {
	// Handler serves every request the loop takes, through its ServeHTTP
	// only.
	Handler http.Handler
	// HandOff serves the connections the loop hands off, and those that
	// are not plain TCP, from a listener of the Server's (Serve runs it),
	// unless the settings in force name another (ServerSettings.HandOff).
	// Its handler, timeouts and limits should be the loop's.
	HandOff *http.Server
	// Settings returns the settings in force. It is called once per
	// connection and per request: it must be cheap and safe for concurrent
	// use, and return a value nobody changes.
	Settings func() *ServerSettings
	// Logger gets refusals (each kind at most once a second) and the
	// panics of handlers.
	Logger *slog.Logger
	// Conns counts the open client connections, with whatever counts those
	// that HandOff serves from the start (see HandedOff). The loop adds one
	// per TCP connection it accepts and takes it away when the connection
	// closes or is hijacked; a handed-off connection stays counted. A nil
	// Conns is a counter of the Server's own.
	Conns *atomic.Int64
	// Refused counts the connections refused past MaxConns (may be nil).
	Refused *atomic.Uint64
	// Parker, when not nil, holds the connections waiting for their next
	// request (after the first), with no goroutine and no read buffer
	// (internal/park; Linux only): a connection that becomes readable gets
	// a new goroutine, one idle for IdleTimeout is closed by the Parker's
	// deadline, at most an eighth of IdleTimeout late.
	Parker *park.Parker
}

// Server is one Serve call: its listener, the connections its loop serves,
// and the http.Server that takes the connections handed off.
type Server struct {
	ln       net.Listener
	handler  http.Handler
	srv      *http.Server
	settings func() *ServerSettings
	log      *slog.Logger
	open     *atomic.Int64
	refused  *atomic.Uint64
	parker   *park.Parker
	crowd    int64        // more connections in the loop than this are crowded (crowded); 0 never
	held     atomic.Int64 // connections in the loop: len(conns), read without mu

	// The listeners of the hand-off servers, one per server handed
	// connections to (handOffTo); closed by Serve's end.
	hmu     sync.Mutex
	hls     map[*http.Server]*handoffListener
	hclosed bool
	served  sync.WaitGroup // one per hand-off server's Serve

	date    dateCache
	closing atomic.Bool
	// Refusals are logged at most once a second each (refuse.go).
	overLimitLog, nonHTTPLog throttle.Lines
	mu                       sync.Mutex
	conns                    map[*srvConn]struct{}
	wg                       sync.WaitGroup // one per connection, until finish
}

// Connection states of the loop (srvConn.state).
const (
	connIdle   int32 = iota // waiting for a request: Shutdown may close it
	connActive              // reading or serving a request
	connGone                // closed, hijacked or handed off
)

// NewServer returns a Server that serves ln as cfg says.
func NewServer(ln net.Listener, cfg ServerConfig) *Server {
	s := &Server{
		ln:       ln,
		handler:  cfg.Handler,
		srv:      cfg.HandOff,
		settings: cfg.Settings,
		log:      cfg.Logger,
		open:     cfg.Conns,
		refused:  cfg.Refused,
		parker:   cfg.Parker,
		hls:      make(map[*http.Server]*handoffListener),
		conns:    make(map[*srvConn]struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.parker != nil {
		s.crowd = int64(s.parker.Limit())
	}
	if s.open == nil {
		s.open = new(atomic.Int64)
	}
	if s.refused == nil {
		s.refused = new(atomic.Uint64)
	}
	return s
}

// Serve runs the hand-off server and accepts connections until Shutdown,
// when it returns http.ErrServerClosed, or until the listener fails, when
// it returns that error (the connections still open are then left to
// Shutdown). Either way the hand-off servers have stopped accepting when
// it returns.
func (s *Server) Serve() error {
	s.handOffTo(s.settings()) // its server runs from the start, as it always did
	err := s.acceptLoop()
	s.hmu.Lock()
	s.hclosed = true
	for _, l := range s.hls {
		l.Close()
	}
	s.hmu.Unlock()
	s.served.Wait()
	return err
}

// handOffTo returns the listener of the hand-off server that st names
// (ServerSettings.HandOff, else ServerConfig.HandOff), starting that
// server on it the first time; nil once Serve is ending.
func (s *Server) handOffTo(st *ServerSettings) *handoffListener {
	srv := s.srv
	if st.HandOff != nil {
		srv = st.HandOff
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if l := s.hls[srv]; l != nil || s.hclosed {
		return l
	}
	l := newHandoffListener(s.ln.Addr())
	s.hls[srv] = l
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		_ = srv.Serve(l)
	}()
	return l
}

// acceptLoop accepts connections until the listener fails or shutdown
// closes it, backing off on errors that pass (out of file descriptors) as
// net/http does.
func (s *Server) acceptLoop() error {
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
			s.log.Warn("accept failed; retrying", "error", err.Error(), "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		tcp := tcpConnOf(c)
		if tcp == nil {
			// A TLS (or other wrapped) connection from a listener of the
			// caller's keeps all of net/http's handling: its handshake,
			// HTTP/2 by ALPN, Request.TLS. net/http counts it.
			if l := s.handOffTo(s.settings()); l == nil || !l.handoff(c) {
				c.Close()
			}
			continue
		}
		if st := s.settings(); s.open.Add(1) > int64(st.MaxConns) {
			s.open.Add(-1)
			s.refuseOverLimit(c, st)
			continue
		}
		sc := s.newConn(c, tcp)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			s.open.Add(-1)
			continue
		}
		s.conns[sc] = struct{}{}
		s.held.Add(1)
		s.wg.Add(1)
		s.mu.Unlock()
		if s.crowded() && sc.parkFirst(s.settings()) {
			continue // served once readable, in turn (park.Parker.SetLimit)
		}
		go sc.serve()
	}
}

// crowded reports whether the loop holds more connections than its
// Parker serves at once, at least (park.Parker.SetLimit); connections
// net/http serves (handed off, TLS) do not count. A crowded Server parks a
// connection as soon as it waits for a request, its first one included,
// instead of keeping its goroutine and read buffer for a while: the
// connections then take their turns on the Parker's goroutines, and a
// thousand busy clients cost about as much memory as the limit's worth.
func (s *Server) crowded() bool {
	return s.crowd > 0 && s.held.Load() > s.crowd
}

// RetryableAccept reports whether an Accept error may pass (see
// retryableAccept), for the accept loops of other front ends.
func RetryableAccept(err error) bool { return retryableAccept(err) }

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

// TCPCarrier is a connection that carries a TCP connection and is read
// through it, such as a PROXY protocol connection (internal/proxyproto),
// whose first bytes were a header: the loop serves it, reading it as it
// is and writing, splicing and half-closing the TCP connection itself.
type TCPCarrier interface {
	net.Conn
	TCPConn() *net.TCPConn
}

// tcpConnOf returns the TCP connection c is or carries, or nil.
func tcpConnOf(c net.Conn) *net.TCPConn {
	switch v := c.(type) {
	case *net.TCPConn:
		return v
	case TCPCarrier:
		return v.TCPConn()
	}
	return nil
}

func (s *Server) newConn(c net.Conn, tcp *net.TCPConn) *srvConn {
	sc := &srvConn{s: s, c: c, tcp: tcp, remote: c.RemoteAddr().String()}
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	sc.ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	if s.parker != nil {
		if rc, err := tcp.SyscallConn(); err == nil {
			sc.entry.InitLimited(s.parker, rc, sc)
			sc.parkable = true
		}
	}
	return sc
}

// Shutdown closes the listener and the idle connections, then waits for
// the others to finish their request (the loop closes them after it). At
// ctx's end the rest are closed and their requests cancelled, and Shutdown
// returns ctx's error once their goroutines have ended. It leaves the
// hand-off server, and the connections it serves, to the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.ln.Close()
	var parked []*srvConn
	s.mu.Lock()
	for sc := range s.conns {
		if sc.state.CompareAndSwap(connIdle, connGone) {
			sc.c.Close()
			if sc.entry.Unpark() {
				parked = append(parked, sc) // no goroutine will finish it
			}
		}
	}
	s.mu.Unlock()
	for _, sc := range parked {
		sc.finish(false)
	}
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

// LoopConns returns the number of client connections the loop holds now:
// open ones not handed off, hijacked or closed.
func (s *Server) LoopConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
