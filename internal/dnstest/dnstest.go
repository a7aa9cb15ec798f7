// Package dnstest provides an in-process DNS server for tests.
//
//	srv := dnstest.NewServer(t) // stopped when the test ends
//	srv.Add("web.test. 60 IN A 192.0.2.1", "web.test. 60 IN AAAA 2001:db8::1")
//	r, err := fwdproxy.NewResolver(fwdproxy.WithDNSServers(srv.Addr()), fwdproxy.WithHostsFile(""))
//
// A hook answers dynamically, for instance to rebind a name to a loopback
// address after a first, public answer (a Resolver caches answers for at
// least its TTL floor; lower it with WithDNSTTL to see the second answer):
//
//	var n atomic.Int32
//	srv.SetHook(func(req *dns.Msg) *dns.Msg {
//		if req.Question[0].Qtype != dns.TypeA {
//			return nil // the table answers: NODATA
//		}
//		if n.Add(1) == 1 {
//			return srv.Reply(req, "rebind.test. 0 IN A 93.184.216.34")
//		}
//		return srv.Reply(req, "rebind.test. 0 IN A 127.0.0.1")
//	})
package dnstest

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Fault makes the server misbehave for some names.
type Fault int

const (
	FaultNone     Fault = iota // answer normally
	FaultDrop                  // send no answer
	FaultServFail              // answer SERVFAIL
	FaultRefused               // answer REFUSED
	FaultTruncate              // answer over UDP with TC set and no records; answer over TCP normally
)

// Server is a DNS server listening on 127.0.0.1, over UDP and TCP on the
// same port. UDP answers larger than the client's buffer are truncated.
// It answers from a table of records as if it were authoritative
// for every name and recursive at once: CNAME chains within the table are
// followed and included in the answer; a name without records of the type
// asked gets an empty NOERROR answer (NODATA) and a name without any records
// NXDOMAIN, both with an SOA record in the authority section.
//
// Every method is safe for concurrent use; the methods of a running server
// take effect for the next query.
type Server struct {
	tb testing.TB

	mu      sync.Mutex
	addr    string
	records map[recordKey][]dns.RR
	faults  map[string]Fault // by name, "" for every name
	delay   time.Duration
	hook    func(req *dns.Msg) *dns.Msg
	soaTTL  uint32
	soaMin  uint32
	queries map[queryKey]int
	udp     *dns.Server
	tcp     *dns.Server
	stopped chan struct{} // closed by Stop to end pending delays
	done    sync.WaitGroup
}

type recordKey struct {
	name  string
	rtype uint16
}

type queryKey struct {
	name  string
	qtype uint16
	tcp   bool
}

// NewServer starts a server without records, with SOA TTL and MINIMUM of
// 60 s. It is stopped when the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		tb:      tb,
		records: make(map[recordKey][]dns.RR),
		faults:  make(map[string]Fault),
		soaTTL:  60,
		soaMin:  60,
		queries: make(map[queryKey]int),
	}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same
// across Stop and Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Add adds records written as in a zone file, such as
// "example.com. 60 IN A 192.0.2.1" or "www.example.com. 60 IN CNAME
// example.com.". A record that does not parse fails the test.
func (s *Server) Add(records ...string) {
	s.tb.Helper()
	rrs := s.parse(records)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		h := rr.Header()
		k := recordKey{canonical(h.Name), h.Rrtype}
		s.records[k] = append(s.records[k], rr)
	}
}

// Remove removes every record of name, which then gets NXDOMAIN.
func (s *Server) Remove(name string) {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.records {
		if k.name == name {
			delete(s.records, k)
		}
	}
}

// SetSOA sets the TTL and MINIMUM field of the SOA record sent with
// negative answers.
func (s *Server) SetSOA(ttl, minimum uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.soaTTL, s.soaMin = ttl, minimum
}

// SetFault sets the fault for queries about name, or about every name
// without a fault of its own if name is "". FaultNone clears it.
func (s *Server) SetFault(name string, f Fault) {
	if name != "" {
		name = canonical(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == FaultNone {
		delete(s.faults, name)
	} else {
		s.faults[name] = f
	}
}

// SetDelay delays every answer by d. Stop ends pending delays, dropping
// their answers.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetHook sets a function that answers queries before the table and the
// faults are consulted; it returns the reply, or nil to let the server
// answer. Reply helps build replies. A nil hook removes the hook.
func (s *Server) SetHook(hook func(req *dns.Msg) *dns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = hook
}

// Reply returns a NOERROR reply to req holding records written as in a zone
// file. A record that does not parse is reported as a test error and makes
// the reply SERVFAIL.
func (s *Server) Reply(req *dns.Msg, records ...string) *dns.Msg {
	m := new(dns.Msg).SetReply(req)
	for _, text := range records {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			s.tb.Errorf("dnstest: bad record %q: %v", text, err)
			m.Answer = nil
			m.Rcode = dns.RcodeServerFailure
			return m
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

// Queries returns how many queries for name and qtype the server received,
// over UDP and TCP, whether it answered them or not.
func (s *Server) Queries(name string, qtype uint16) int {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[queryKey{name, qtype, false}] + s.queries[queryKey{name, qtype, true}]
}

// TCPQueries returns how many queries for name and qtype the server
// received over TCP.
func (s *Server) TCPQueries(name string, qtype uint16) int {
	name = canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[queryKey{name, qtype, true}]
}

// Start starts a stopped server on its former address. A server that cannot
// listen fails the test.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return
	}
	pc, l, err := listen(s.addr)
	if err != nil {
		s.tb.Fatalf("dnstest: %v", err)
	}
	s.addr = pc.LocalAddr().String()
	s.stopped = make(chan struct{})
	s.udp = s.serve(&dns.Server{PacketConn: pc})
	s.tcp = s.serve(&dns.Server{Listener: l})
}

// Stop stops the server: queries then get ICMP port unreachable over UDP
// and a refused connection over TCP. It waits for the handlers to end.
func (s *Server) Stop() {
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	if udp != nil {
		close(s.stopped)
		s.udp, s.tcp = nil, nil
	}
	s.mu.Unlock()
	if udp == nil {
		return
	}
	udp.Shutdown()
	tcp.Shutdown()
	s.done.Wait()
}

// listen opens UDP and TCP sockets on addr, or on a port free for both if
// addr is "".
func listen(addr string) (net.PacketConn, net.Listener, error) {
	fixed := addr != ""
	if !fixed {
		addr = "127.0.0.1:0"
	}
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if fixed {
			return nil, nil, err
		}
	}
	return nil, nil, errors.New("no port free for both UDP and TCP")
}

// serve runs srv with the server's handler and returns once it listens.
func (s *Server) serve(srv *dns.Server) *dns.Server {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	srv.Handler = dns.HandlerFunc(s.handle)
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		srv.ActivateAndServe()
	}()
	<-started
	return srv
}

func (s *Server) handle(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg).SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)
	_, tcp := w.RemoteAddr().(*net.TCPAddr)

	s.mu.Lock()
	s.queries[queryKey{name, q.Qtype, tcp}]++
	delay, hook, stopped := s.delay, s.hook, s.stopped
	fault, ok := s.faults[name]
	if !ok {
		fault = s.faults[""]
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-stopped:
			return
		}
	}
	var m *dns.Msg
	if hook != nil {
		m = hook(req)
	}
	if m == nil {
		switch fault {
		case FaultDrop:
			return
		case FaultServFail:
			m = new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
		case FaultRefused:
			m = new(dns.Msg).SetRcode(req, dns.RcodeRefused)
		case FaultTruncate:
			if !tcp {
				m = new(dns.Msg).SetReply(req)
				m.Truncated = true
			}
		}
	}
	if m == nil {
		m = s.answer(req, name, q.Qtype)
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
		if m.IsEdns0() == nil {
			m.SetEdns0(opt.UDPSize(), false)
		}
	}
	if !tcp {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer answers from the table.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg).SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 16 {
		if rrs := s.records[recordKey{name, qtype}]; len(rrs) > 0 {
			m.Answer = append(m.Answer, rrs...)
			return m
		}
		cname := s.records[recordKey{name, dns.TypeCNAME}]
		if len(cname) == 0 {
			break
		}
		m.Answer = append(m.Answer, cname[0])
		name = canonical(cname[0].(*dns.CNAME).Target)
	}
	if !s.exists(name) {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = []dns.RR{&dns.SOA{
		Hdr:     dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.soaTTL},
		Ns:      "ns.dnstest.",
		Mbox:    "hostmaster.dnstest.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.soaMin,
	}}
	return m
}

// exists reports whether name has records; s.mu is held.
func (s *Server) exists(name string) bool {
	for k := range s.records {
		if k.name == name {
			return true
		}
	}
	return false
}

func (s *Server) parse(records []string) []dns.RR {
	s.tb.Helper()
	rrs := make([]dns.RR, 0, len(records))
	for _, text := range records {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			s.tb.Fatalf("dnstest: bad record %q: %v", text, err)
		}
		rrs = append(rrs, rr)
	}
	return rrs
}

// canonical returns name lower-case and fully qualified.
func canonical(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}
