package fwdproxy

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// ednsBufferSize is the UDP payload size advertised with EDNS0, the
	// value recommended by DNS Flag Day 2020 to avoid IP fragmentation.
	ednsBufferSize = 1232
	// queryPasses is how many times the server list is tried when a
	// server timed out.
	queryPasses = 2
	// maxCNAMEHops bounds the CNAME chain followed inside one answer.
	maxCNAMEHops = 16
)

// Err texts of the *net.DNSError values a Resolver returns.
const (
	errMsgNotFound      = "no such host"
	errMsgTimeout       = "DNS timeout"
	errMsgUnreachable   = "DNS servers unreachable"
	errMsgServerFailure = "server failure"
)

// errBadReply reports a reply that does not answer the query sent.
var errBadReply = errors.New("reply does not match the query")

// answer is the outcome of a query for one type, or of a whole lookup.
type answer struct {
	addrs    []netip.Addr  // nil when err is set
	ttl      time.Duration // unclamped: of addrs, or of the negative answer per RFC 2308
	err      *net.DNSError // a negative answer (IsNotFound) or a failure
	nxdomain bool          // err is an NXDOMAIN answer
}

// resolve asks for the A and AAAA records of name in parallel. The
// addresses of the type answered first come first.
func (r *Resolver) resolve(ctx context.Context, name string) answer {
	fqdn := dns.Fqdn(name)
	ch := make(chan answer, 2)
	go func() { ch <- r.query(ctx, name, fqdn, dns.TypeA) }()
	go func() { ch <- r.query(ctx, name, fqdn, dns.TypeAAAA) }()
	return combineAnswers(<-ch, <-ch)
}

// combineAnswers merges the answers for the two address types. Addresses
// win over anything else, then NXDOMAIN, then a failure, then NODATA.
func combineAnswers(a, b answer) answer {
	if n := len(a.addrs) + len(b.addrs); n > 0 {
		addrs := make([]netip.Addr, 0, n)
		addrs = append(append(addrs, a.addrs...), b.addrs...)
		ttl := time.Duration(math.MaxInt64)
		for _, x := range [2]answer{a, b} {
			if x.addrs != nil {
				ttl = min(ttl, x.ttl)
			}
		}
		return answer{addrs: addrs, ttl: ttl}
	}
	switch {
	case a.nxdomain:
		return a
	case b.nxdomain:
		return b
	case !a.err.IsNotFound:
		return a
	case !b.err.IsNotFound:
		return b
	case b.ttl < a.ttl:
		return b
	default:
		return a
	}
}

// query asks the servers in turn for the records of type qtype of fqdn
// until one answers, and makes another pass if a server timed out and time
// is left.
func (r *Resolver) query(ctx context.Context, name, fqdn string, qtype uint16) answer {
	var fail *net.DNSError
	for pass := 0; pass < queryPasses; pass++ {
		timedOut := false
		for _, server := range r.servers {
			if ctx.Err() != nil {
				break
			}
			resp, err := r.exchange(ctx, server, fqdn, qtype)
			if err == nil && (resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError) {
				return readAnswer(resp, qtype, name, server)
			}
			r.stats.errors.Add(1)
			e := exchangeError(err, name, server)
			timedOut = timedOut || e.IsTimeout
			if fail == nil || failureRank(e) > failureRank(fail) {
				fail = e
			}
		}
		if !timedOut {
			break
		}
	}
	if fail == nil {
		fail = &net.DNSError{Err: errMsgTimeout, Name: name, IsTimeout: true}
	}
	return answer{err: fail}
}

// exchange sends one query to server over UDP, and again over TCP when the
// answer is truncated, within the per-exchange timeout. It returns replies
// that answer the query, whatever their RCODE.
func (r *Resolver) exchange(ctx context.Context, server, fqdn string, qtype uint16) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.timeout)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype)
	q.SetEdns0(ednsBufferSize, false)
	resp, err := exchangeOver(ctx, &r.udp, q, server)
	if err == nil && resp.Truncated {
		resp, err = exchangeOver(ctx, &r.tcp, q, server)
	}
	if err != nil {
		return nil, err
	}
	if err := checkReply(q, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// exchangeOver is Client.ExchangeContext, except that the exchange is also
// aborted when ctx is cancelled, not only when its deadline passes.
func exchangeOver(ctx context.Context, c *dns.Client, q *dns.Msg, server string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return resp, err
}

// checkReply verifies that resp answers q: same ID, a response to a
// standard query, with the same single question.
func checkReply(q, resp *dns.Msg) error {
	if resp.Id != q.Id || !resp.Response || resp.Opcode != dns.OpcodeQuery || len(resp.Question) != 1 {
		return errBadReply
	}
	got, want := resp.Question[0], q.Question[0]
	if got.Qtype != want.Qtype || got.Qclass != want.Qclass || !strings.EqualFold(got.Name, want.Name) {
		return errBadReply
	}
	return nil
}

// readAnswer extracts the addresses of type qtype from resp, a NOERROR or
// NXDOMAIN reply, following the CNAME chain that starts at the question.
// The TTL is the least along the chain. Without addresses, the answer is
// negative, with the TTL of RFC 2308 §5 from the SOA record, if any.
func readAnswer(resp *dns.Msg, qtype uint16, name, server string) answer {
	if resp.Rcode == dns.RcodeSuccess && len(resp.Question) == 1 {
		target := resp.Question[0].Name
		ttl := uint32(math.MaxUint32)
		for range maxCNAMEHops {
			addrs, addrTTL, next, nextTTL := recordsOf(resp.Answer, target, qtype)
			if len(addrs) > 0 {
				return answer{addrs: addrs, ttl: seconds(min(ttl, addrTTL))}
			}
			if next == "" {
				break
			}
			target, ttl = next, min(ttl, nextTTL)
		}
	}
	var ttl time.Duration
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl = seconds(min(soa.Hdr.Ttl, soa.Minttl))
			break
		}
	}
	return answer{
		err:      &net.DNSError{Err: errMsgNotFound, Name: name, Server: server, IsNotFound: true},
		ttl:      ttl,
		nxdomain: resp.Rcode == dns.RcodeNameError,
	}
}

// recordsOf returns the addresses of type qtype owned by target in rrs and
// their least TTL, and the CNAME target of target, if any, with its TTL.
func recordsOf(rrs []dns.RR, target string, qtype uint16) (addrs []netip.Addr, ttl uint32, next string, nextTTL uint32) {
	ttl = math.MaxUint32
	for _, rr := range rrs {
		h := rr.Header()
		if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, target) {
			continue
		}
		var a netip.Addr
		var ok bool
		switch rr := rr.(type) {
		case *dns.A:
			a, ok = netip.AddrFromSlice(rr.A.To4())
			ok = ok && qtype == dns.TypeA
		case *dns.AAAA:
			a, ok = netip.AddrFromSlice(rr.AAAA.To16())
			ok = ok && qtype == dns.TypeAAAA
		case *dns.CNAME:
			next, nextTTL = rr.Target, h.Ttl
		}
		if ok {
			addrs = append(addrs, a)
			ttl = min(ttl, h.Ttl)
		}
	}
	return addrs, ttl, next, nextTTL
}

func seconds(ttl uint32) time.Duration { return time.Duration(ttl) * time.Second }

// exchangeError turns the failure of an exchange with server into a
// *net.DNSError. err is nil when the server answered with a failure RCODE.
func exchangeError(err error, name, server string) *net.DNSError {
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, errBadReply):
		return &net.DNSError{Err: errMsgServerFailure, Name: name, Server: server, IsTemporary: true}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.As(err, &ne) && ne.Timeout():
		return &net.DNSError{Err: errMsgTimeout, Name: name, Server: server, IsTimeout: true}
	case errors.As(err, new(*net.OpError)):
		return &net.DNSError{Err: errMsgUnreachable, Name: name, Server: server, IsTemporary: true}
	default: // a reply that could not be parsed
		return &net.DNSError{Err: errMsgServerFailure, Name: name, Server: server, IsTemporary: true}
	}
}

// failureRank orders failures by how much they tell: a server that answered
// with a failure, then a timeout, then an unreachable server.
func failureRank(e *net.DNSError) int {
	switch e.Err {
	case errMsgServerFailure:
		return 2
	case errMsgTimeout:
		return 1
	default:
		return 0
	}
}
