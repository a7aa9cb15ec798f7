// Package proxyproto accepts HAProxy's PROXY protocol (v1 text and v2
// binary, https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt) on a
// listener, from trusted peers only, over the parser of
// github.com/pires/go-proxyproto.
//
// The policy is the one smokescreen and Squid use: a connection from a
// trusted range (a load balancer) must open with a header, and the client
// address the header carries becomes the connection's RemoteAddr; a
// connection from anywhere else is served as it is, with its own address,
// and is closed if it opens with a header, which only a client forging its
// address would send. Requiring the header from trusted peers, rather than
// using it when present, means that a trusted peer can never pass a
// connection off as its own by leaving the header out, and that the header
// is read with no guessing: the listener waits for it, up to the timeout.
//
// A trusted peer's header is read before Accept returns the connection, so
// its RemoteAddr is final from the start. Accept runs in the caller's
// goroutine: an untrusted peer's connection is returned at once, and a
// trusted peer's header is taken at once when it has arrived whole, as it
// usually has (one peek and one read, Linux only). Otherwise the header is
// awaited in a goroutine of its own, so a silent or slow peer never holds
// up the connections behind it; when it is read, Accept is woken through
// the inner listener's deadline. At most Config.MaxPending headers are
// awaited at once. The header is read exactly: no byte past it is taken
// from the socket, so the connection's *net.TCPConn (Conn.TCPConn) carries
// the client's stream from its first byte and can be spliced.
//
// A malformed header, a missing one or one from an untrusted peer closes
// the connection with a log line naming the peer (at most one line a
// second; the others are counted in the next line and in Stats).
package proxyproto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pp "github.com/pires/go-proxyproto"

	"github.com/fwdproxy/fwdproxy/internal/throttle"
)

// Defaults of Config.
const (
	DefaultHeaderTimeout = 5 * time.Second
	DefaultMaxPending    = 1024
)

// Config configures a Listener.
type Config struct {
	// Trusted lists the peers that must send a header: the load balancers
	// in front of the listener. Connections from other addresses are
	// served with their own address, and closed if they send a header.
	// IPv4-mapped IPv6 peers are matched as IPv4.
	Trusted []netip.Prefix
	// Trust, when not nil, is asked instead of Trusted whether the peer at
	// ip (IPv4-mapped addresses given as IPv4) must send a header. It is
	// called once per accepted connection, so it can follow a
	// configuration that changes while the listener runs; it must be safe
	// for concurrent use.
	Trust func(ip netip.Addr) bool
	// HeaderTimeout bounds the wait for a trusted peer's header, counted
	// from the accept; 0 means DefaultHeaderTimeout. A load balancer sends
	// the header with its first packet.
	HeaderTimeout time.Duration
	// MaxPending bounds the trusted connections whose header is awaited at
	// once; past it a new trusted connection is closed at once. 0 means
	// DefaultMaxPending.
	MaxPending int
	// Logger gets a Warn line for each refused connection (rate-limited);
	// nil means slog.Default().
	Logger *slog.Logger
	// Refused, when not nil, is called once for each connection refused
	// with a Warn line (the lines held back included; not a trusted peer
	// that closes before sending a byte), on the goroutine that refused it.
	Refused func()
}

// Why a connection was refused, as logged (the error attribute) and, for
// ErrUntrustedHeader, returned by the refused Conn's Read. Malformed-header
// errors also wrap go-proxyproto's own error.
var (
	// ErrUntrustedHeader: a peer outside Config.Trusted opened with a
	// PROXY header.
	ErrUntrustedHeader = errors.New("proxyproto: PROXY header from an untrusted peer")
	// ErrMissingHeader: a trusted peer opened with something else.
	ErrMissingHeader = errors.New("proxyproto: trusted peer sent no PROXY header")
	// ErrMalformedHeader: a trusted peer's header does not parse, or
	// carries a transport other than TCP.
	ErrMalformedHeader = errors.New("proxyproto: malformed PROXY header")
)

// Stats counts what a Listener did with the connections it accepted.
type Stats struct {
	Proxied uint64 // trusted, with a header whose client address is used
	Local   uint64 // trusted, with a LOCAL (v2) or UNKNOWN (v1) header: the peer's own address is used
	Direct  uint64 // untrusted, passed on with their own address

	RefusedUntrusted uint64 // untrusted, opened with a header: closed
	RefusedMissing   uint64 // trusted, no header (other bytes, or closed before sending any)
	RefusedMalformed uint64 // trusted, malformed or unsupported header
	RefusedTimeout   uint64 // trusted, no whole header within HeaderTimeout
	RefusedPending   uint64 // trusted, past MaxPending headers awaited
}

type stats struct {
	proxied, local, direct                                 atomic.Uint64
	untrusted, missing, malformed, timeout, refusedPending atomic.Uint64
}

// Listener wraps a TCP listener and returns *Conn values. Wrap it with
// TLS, not the other way round: the header comes before the TLS handshake.
// Its methods are safe for concurrent use.
type Listener struct {
	ln         deadlineListener
	trusted    []netip.Prefix
	trust      func(netip.Addr) bool
	timeout    time.Duration
	maxPending int
	log        *slog.Logger
	onRefused  func() // Config.Refused; nil: none

	ready     chan *Conn // trusted connections whose header a goroutine read
	closeOnce sync.Once
	wg        sync.WaitGroup // the header readers

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{} // trusted connections awaiting a goroutine's read, or in ready

	logLimit throttle.Lines
	stats    stats
}

// deadlineListener is a listener whose Accept can be interrupted by a
// deadline, as *net.TCPListener's can.
type deadlineListener interface {
	net.Listener
	SetDeadline(time.Time) error
}

// NewListener wraps ln, which must have a SetDeadline method (as
// *net.TCPListener has): Accept is woken through it. It fails on an
// invalid prefix or negative limits.
func NewListener(ln net.Listener, cfg Config) (*Listener, error) {
	dl, ok := ln.(deadlineListener)
	if !ok {
		return nil, fmt.Errorf("proxyproto: a %T has no SetDeadline to wake Accept with", ln)
	}
	l := &Listener{
		ln:         dl,
		trust:      cfg.Trust,
		timeout:    cfg.HeaderTimeout,
		maxPending: cfg.MaxPending,
		log:        cfg.Logger,
		onRefused:  cfg.Refused,
		pending:    make(map[net.Conn]struct{}),
	}
	if l.timeout < 0 || l.maxPending < 0 {
		return nil, errors.New("proxyproto: negative HeaderTimeout or MaxPending")
	}
	if l.timeout == 0 {
		l.timeout = DefaultHeaderTimeout
	}
	if l.maxPending == 0 {
		l.maxPending = DefaultMaxPending
	}
	// Every connection in ready is in pending, so sends never block.
	l.ready = make(chan *Conn, l.maxPending)
	if l.log == nil {
		l.log = slog.Default()
	}
	for _, p := range cfg.Trusted {
		if !p.IsValid() {
			return nil, fmt.Errorf("proxyproto: invalid trusted prefix %v", p)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		l.trusted = append(l.trusted, p.Masked())
	}
	return l, nil
}

// Accept returns the next connection: a trusted peer's once its header has
// been read, an untrusted peer's at once. Errors of the inner listener are
// passed on; after Close they wrap net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		select {
		case c := <-l.ready:
			if c, ok := l.take(c); ok {
				return c, nil
			}
			continue
		default:
		}
		c, err := l.ln.Accept()
		if err != nil {
			if isTimeout(err) && !l.isClosed() {
				// Woken: a goroutine has put a connection in ready (see
				// wake). Only this type sets the inner listener's deadline.
				_ = l.ln.SetDeadline(time.Time{})
				continue
			}
			return nil, err
		}
		if pc := l.accept(c); pc != nil {
			return pc, nil
		}
	}
}

// take hands over a connection from ready, unless the listener is closed.
func (l *Listener) take(c *Conn) (*Conn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.raw.Close()
		return nil, false
	}
	delete(l.pending, c.raw)
	return c, true
}

// wake interrupts Accept, waiting in the inner listener, to take what a
// goroutine put in ready. Accept clears the deadline before it looks in
// ready, so a wake is never lost: either that look sees the connection,
// or the deadline set here stops the next wait at once.
func (l *Listener) wake() { _ = l.ln.SetDeadline(time.Now()) }

// accept decides on a newly accepted connection: it returns it when it is
// ready for the caller, or nil when it was refused or its header is left
// for a goroutine to await.
func (l *Listener) accept(c net.Conn) *Conn {
	if !l.trusts(c.RemoteAddr()) {
		l.stats.direct.Add(1)
		return newConn(c, c.RemoteAddr(), nil, l)
	}
	if h, done, err := headerNow(c); done {
		return l.ready1(c, h, err)
	}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		c.Close()
		return nil
	case len(l.pending) >= l.maxPending:
		l.mu.Unlock()
		l.stats.refusedPending.Add(1)
		l.refused(c, "too many PROXY protocol headers awaited; closed", slog.Int("max_pending", l.maxPending))
		return nil
	}
	l.pending[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go l.handshake(c)
	return nil
}

// ready1 turns a trusted connection and the outcome of its header read
// into the Conn to return, or refuses it (and returns nil).
func (l *Listener) ready1(c net.Conn, h *pp.Header, err error) *Conn {
	var remote net.Addr
	if err == nil {
		remote, err = remoteFromHeader(h, c.RemoteAddr())
	}
	if err != nil {
		l.refuseHeader(c, err)
		return nil
	}
	if h.Command.IsLocal() {
		l.stats.local.Add(1)
	} else {
		l.stats.proxied.Add(1)
	}
	return newConn(c, remote, h, nil)
}

// Close closes the inner listener and the connections whose header is
// still awaited (or read but not yet returned by Accept), and returns once
// the listener's goroutines have ended. Connections returned by Accept are
// the caller's.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		err = l.ln.Close()
		l.wg.Wait()
	})
	return err
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats {
	s := &l.stats
	return Stats{
		Proxied: s.proxied.Load(), Local: s.local.Load(), Direct: s.direct.Load(),
		RefusedUntrusted: s.untrusted.Load(), RefusedMissing: s.missing.Load(),
		RefusedMalformed: s.malformed.Load(), RefusedTimeout: s.timeout.Load(),
		RefusedPending: s.refusedPending.Load(),
	}
}

// trusts reports whether the peer at addr must send a header.
func (l *Listener) trusts(addr net.Addr) bool {
	if len(l.trusted) == 0 && l.trust == nil {
		return false
	}
	ip, ok := addrIP(addr)
	if !ok {
		return false
	}
	if l.trust != nil {
		return l.trust(ip)
	}
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func addrIP(addr net.Addr) (netip.Addr, bool) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ip.Unmap(), ok
}

// handshake awaits a trusted peer's header, up to the timeout, and puts
// its connection in ready for Accept, or refuses it.
func (l *Listener) handshake(c net.Conn) {
	defer l.wg.Done()
	h, err := readHeader(c, time.Now().Add(l.timeout))
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.Close()
		return
	}
	if err != nil {
		delete(l.pending, c)
	}
	l.mu.Unlock()
	if err != nil {
		l.refuseHeader(c, err)
		return
	}
	pc := l.ready1(c, h, nil)
	if pc == nil {
		l.mu.Lock()
		delete(l.pending, c)
		l.mu.Unlock()
		return
	}
	l.ready <- pc
	l.wake()
}

// remoteFromHeader returns the client address a header carries: its source
// for PROXY over TCP, the peer's own address for LOCAL (v2) and UNKNOWN
// (v1), as the specification requires. Other transports (UDP, unix) do not
// describe a TCP client and are refused.
func remoteFromHeader(h *pp.Header, peer net.Addr) (net.Addr, error) {
	if h.Command.IsLocal() {
		return peer, nil
	}
	switch h.TransportProtocol {
	case pp.TCPv4, pp.TCPv6:
		src, ok := h.SourceAddr.(*net.TCPAddr)
		if !ok {
			return nil, fmt.Errorf("%w: no TCP source address", ErrMalformedHeader)
		}
		ap := src.AddrPort()
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), nil
	}
	return nil, fmt.Errorf("%w: transport %s is not TCP", ErrMalformedHeader, transportName(h.TransportProtocol))
}

func transportName(t pp.AddressFamilyAndProtocol) string {
	switch t {
	case pp.UDPv4:
		return "UDP over IPv4"
	case pp.UDPv6:
		return "UDP over IPv6"
	case pp.UnixStream:
		return "unix stream"
	case pp.UnixDatagram:
		return "unix datagram"
	case pp.UNSPEC:
		return "unspecified"
	}
	return fmt.Sprintf("0x%02x", byte(t))
}

// refuseHeader closes a trusted connection whose header failed, counts it
// and logs it.
func (l *Listener) refuseHeader(c net.Conn, err error) {
	level := slog.LevelWarn
	msg := "malformed PROXY protocol header; closed"
	switch {
	case errors.Is(err, errClosedEarly):
		// Closed before sending a byte: a TCP health check, typically.
		l.stats.missing.Add(1)
		level, msg = slog.LevelDebug, "trusted peer closed before its PROXY protocol header"
	case errors.Is(err, ErrMissingHeader):
		l.stats.missing.Add(1)
		msg = "trusted peer sent no PROXY protocol header (it must); closed"
	case isTimeout(err):
		l.stats.timeout.Add(1)
		msg = "no PROXY protocol header within " + l.timeout.String() + " from a trusted peer; closed"
	default:
		l.stats.malformed.Add(1)
	}
	c.Close()
	if level == slog.LevelDebug {
		l.log.LogAttrs(context.Background(), level, msg, slog.String("peer", c.RemoteAddr().String()))
		return
	}
	l.logRefusal(msg, c.RemoteAddr(), slog.String("error", err.Error()))
}

// refused closes c and logs why.
func (l *Listener) refused(c net.Conn, msg string, attrs ...slog.Attr) {
	c.Close()
	l.logRefusal(msg, c.RemoteAddr(), attrs...)
}

// logRefusal logs a refused connection, at most once a second.
func (l *Listener) logRefusal(msg string, peer net.Addr, attrs ...slog.Attr) {
	if l.onRefused != nil {
		l.onRefused()
	}
	n, ok := l.logLimit.Allow(time.Now())
	if !ok {
		return
	}
	attrs = append([]slog.Attr{slog.String("peer", peer.String())}, attrs...)
	attrs = append(attrs, slog.Int64("refused_since_last_line", n))
	l.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
