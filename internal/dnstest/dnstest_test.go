package dnstest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func exchange(t *testing.T, s *Server, network, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := dns.Client{Net: network, Timeout: 200 * time.Millisecond}
	m, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), s.Addr())
	return m, err
}

func TestServer(t *testing.T) {
	s := NewServer(t)
	s.Add("www.test. 60 IN CNAME web.test.", "web.test. 30 IN A 192.0.2.1")
	s.SetSOA(120, 10)

	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
		soa     bool
	}{
		{"www.test.", dns.TypeA, dns.RcodeSuccess, 2, false},
		{"WEB.test.", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"web.test.", dns.TypeAAAA, dns.RcodeSuccess, 0, true},
		{"nope.test.", dns.TypeA, dns.RcodeNameError, 0, true},
	}
	for _, tt := range tests {
		for _, network := range []string{"udp", "tcp"} {
			m, err := exchange(t, s, network, tt.name, tt.qtype)
			if err != nil {
				t.Fatalf("%s %s: %v", network, tt.name, err)
			}
			if m.Rcode != tt.rcode || len(m.Answer) != tt.answers || (len(m.Ns) == 1) != tt.soa {
				t.Errorf("%s %s/%d: got %v", network, tt.name, tt.qtype, m)
			}
			if tt.soa && m.Ns[0].(*dns.SOA).Minttl != 10 {
				t.Errorf("SOA = %v", m.Ns[0])
			}
		}
	}
	if got := s.Queries("www.test", dns.TypeA); got != 2 {
		t.Errorf("Queries = %d, want 2", got)
	}
	if got := s.TCPQueries("www.test.", dns.TypeA); got != 1 {
		t.Errorf("TCPQueries = %d, want 1", got)
	}
}

func TestServerFaults(t *testing.T) {
	s := NewServer(t)
	s.Add("web.test. 30 IN A 192.0.2.1")

	s.SetFault("web.test", FaultTruncate)
	if m, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err != nil || !m.Truncated || len(m.Answer) != 0 {
		t.Errorf("truncate over UDP: %v, %v", m, err)
	}
	if m, err := exchange(t, s, "tcp", "web.test.", dns.TypeA); err != nil || m.Truncated || len(m.Answer) != 1 {
		t.Errorf("truncate over TCP: %v, %v", m, err)
	}
	s.SetFault("", FaultServFail)
	s.SetFault("web.test", FaultRefused)
	if m, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err != nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("refused: %v, %v", m, err)
	}
	if m, err := exchange(t, s, "udp", "other.test.", dns.TypeA); err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("servfail: %v, %v", m, err)
	}
	s.SetFault("", FaultNone)
	s.SetFault("web.test", FaultDrop)
	if _, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err == nil {
		t.Error("drop: got an answer")
	}
	s.SetFault("web.test", FaultNone)

	var n atomic.Int32
	s.SetHook(func(req *dns.Msg) *dns.Msg {
		if n.Add(1) == 1 {
			return s.Reply(req, "web.test. 1 IN A 198.51.100.1")
		}
		return nil
	})
	for _, want := range []string{"198.51.100.1", "192.0.2.1"} {
		m, err := exchange(t, s, "udp", "web.test.", dns.TypeA)
		if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != want {
			t.Errorf("hook: %v, %v; want %s", m, err, want)
		}
	}
	s.SetHook(nil)

	s.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if _, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err != nil || time.Since(start) < 100*time.Millisecond {
		t.Errorf("delay: answered after %v, %v", time.Since(start), err)
	}
	s.SetDelay(0)

	addr := s.Addr()
	s.Stop()
	if _, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err == nil {
		t.Error("stopped server answered")
	}
	s.Start()
	if s.Addr() != addr {
		t.Errorf("restarted on %s, was %s", s.Addr(), addr)
	}
	if _, err := exchange(t, s, "udp", "web.test.", dns.TypeA); err != nil {
		t.Errorf("restarted server: %v", err)
	}
}
