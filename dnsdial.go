package fwdproxy

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// happyEyeballsDelay is the time between connection attempts (RFC 8305 §5).
const happyEyeballsDelay = 250 * time.Millisecond

// DialContext connects to address, a "host:port" pair, on network "tcp",
// "tcp4" or "tcp6". It looks host up with LookupNetIP and connects to its
// addresses with Happy Eyeballs (RFC 8305): attempts start 250 ms apart,
// alternating IPv6 and IPv4, and the first to connect wins. The first
// address tried rotates from dial to dial, so that a name's addresses share
// the load. Each attempt is bounded by 30 s, and all by ctx. Lookup failures
// are returned as a *net.OpError wrapping the *net.DNSError.
func (r *Resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	host, service, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	port, err := strconv.ParseUint(service, 10, 16)
	if err != nil {
		p, lerr := net.DefaultResolver.LookupPort(ctx, network, service)
		if lerr != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: lerr}
		}
		port = uint64(p)
	}
	addrs, err := r.LookupNetIP(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return r.dialAddrs(ctx, &r.dialer, network, addrs, uint16(port))
}

// dialAddrs connects to port on addrs with Happy Eyeballs using d, as
// DialContext describes. Addresses of a family network excludes are
// skipped. Attempts that lose are aborted or closed; when ctx ends, every
// attempt fails. If all attempts fail, the first error is returned.
func (r *Resolver) dialAddrs(ctx context.Context, d *net.Dialer, network string, addrs []netip.Addr, port uint16) (net.Conn, error) {
	order := dialOrder(addrs, network, r.rotation.Add(1)-1)
	if len(order) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "no suitable address found"}}
	}
	if len(order) == 1 {
		return d.DialContext(ctx, network, netip.AddrPortFrom(order[0], port).String())
	}

	type result struct {
		conn net.Conn
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, len(order))
	next, running := 0, 0
	start := func() {
		addr := netip.AddrPortFrom(order[next], port).String()
		next++
		running++
		go func() {
			c, err := d.DialContext(ctx, network, addr)
			results <- result{c, err}
		}()
	}
	start()
	timer := time.NewTimer(happyEyeballsDelay)
	defer timer.Stop()
	var firstErr error
	for {
		select {
		case res := <-results:
			running--
			if res.err == nil {
				cancel()
				for ; running > 0; running-- {
					if lost := <-results; lost.conn != nil {
						lost.conn.Close()
					}
				}
				return res.conn, nil
			}
			if firstErr == nil {
				firstErr = res.err
			}
			if next < len(order) {
				start()
				timer.Reset(happyEyeballsDelay)
			} else if running == 0 {
				return nil, firstErr
			}
		case <-timer.C:
			if next < len(order) {
				start()
				timer.Reset(happyEyeballsDelay)
			}
		}
	}
}

// dialOrder returns the addresses to try, in order: those network allows,
// each family rotated by rot, the families interleaved starting with the
// family of the first address (RFC 8305 §4).
func dialOrder(addrs []netip.Addr, network string, rot uint32) []netip.Addr {
	var first, second []netip.Addr
	for _, a := range addrs {
		is4 := a.Unmap().Is4()
		if network == "tcp4" && !is4 || network == "tcp6" && is4 {
			continue
		}
		if len(first) == 0 || first[0].Unmap().Is4() == is4 {
			first = append(first, a)
		} else {
			second = append(second, a)
		}
	}
	order := make([]netip.Addr, 0, len(first)+len(second))
	for i := 0; i < len(first) || i < len(second); i++ {
		if i < len(first) {
			order = append(order, first[(i+int(rot%uint32(len(first))))%len(first)])
		}
		if i < len(second) {
			order = append(order, second[(i+int(rot%uint32(len(second))))%len(second)])
		}
	}
	return order
}
