package fwdproxy

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// reply builds a reply to a query for web.test./qtype holding records.
func reply(qtype uint16, rcode int, answer []string, authority ...string) *dns.Msg {
	q := new(dns.Msg).SetQuestion("web.test.", qtype)
	m := new(dns.Msg).SetRcode(q, rcode)
	for _, s := range answer {
		m.Answer = append(m.Answer, mustRR(s))
	}
	for _, s := range authority {
		m.Ns = append(m.Ns, mustRR(s))
	}
	return m
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

const testSOA = ". 120 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30"

func TestReadAnswer(t *testing.T) {
	tests := []struct {
		name     string
		resp     *dns.Msg
		qtype    uint16
		want     []string
		ttl      time.Duration
		nxdomain bool
	}{
		{"A", reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 IN A 192.0.2.1", "WEB.test. 30 IN A 192.0.2.2"}),
			dns.TypeA, []string{"192.0.2.1", "192.0.2.2"}, 30 * time.Second, false},
		{"AAAA ignores A", reply(dns.TypeAAAA, dns.RcodeSuccess, []string{"web.test. 60 IN A 192.0.2.1", "web.test. 60 IN AAAA 2001:db8::1"}),
			dns.TypeAAAA, []string{"2001:db8::1"}, time.Minute, false},
		{"CNAME chain", reply(dns.TypeA, dns.RcodeSuccess, []string{
			"web.test. 300 IN CNAME a.test.", "a.test. 20 IN CNAME b.test.", "b.test. 300 IN A 192.0.2.3", "other.test. 1 IN A 192.0.2.4"}),
			dns.TypeA, []string{"192.0.2.3"}, 20 * time.Second, false},
		{"records of another name", reply(dns.TypeA, dns.RcodeSuccess, []string{"evil.test. 60 IN A 203.0.113.1"}, testSOA),
			dns.TypeA, nil, 30 * time.Second, false},
		{"other class", reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 CH A 203.0.113.1"}),
			dns.TypeA, nil, 0, false},
		{"CNAME loop", reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 IN CNAME a.test.", "a.test. 60 IN CNAME web.test."}),
			dns.TypeA, nil, 0, false},
		{"dangling CNAME", reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 IN CNAME a.test."}, testSOA),
			dns.TypeA, nil, 30 * time.Second, false},
		{"NXDOMAIN", reply(dns.TypeA, dns.RcodeNameError, nil, testSOA), dns.TypeA, nil, 30 * time.Second, true},
	}
	for _, tt := range tests {
		ans := readAnswer(tt.resp, tt.qtype, "web.test", "192.0.2.53:53")
		if len(tt.want) > 0 {
			if ans.err != nil || !slices.Equal(ans.addrs, addrs(tt.want...)) || ans.ttl != tt.ttl {
				t.Errorf("%s: got %v ttl %v err %v, want %v ttl %v", tt.name, ans.addrs, ans.ttl, ans.err, tt.want, tt.ttl)
			}
			continue
		}
		if ans.addrs != nil || ans.err == nil || !ans.err.IsNotFound || ans.ttl != tt.ttl || ans.nxdomain != tt.nxdomain {
			t.Errorf("%s: got %v ttl %v err %v nxdomain %v, want negative, ttl %v", tt.name, ans.addrs, ans.ttl, ans.err, ans.nxdomain, tt.ttl)
		}
	}
}

func TestCombineAnswers(t *testing.T) {
	pos := answer{addrs: addrs("192.0.2.1"), ttl: time.Minute}
	pos6 := answer{addrs: addrs("2001:db8::1"), ttl: time.Second}
	nodata := answer{err: &net.DNSError{Err: errMsgNotFound, IsNotFound: true}, ttl: 20 * time.Second}
	nodataShort := answer{err: &net.DNSError{Err: errMsgNotFound, IsNotFound: true}, ttl: 10 * time.Second}
	nx := answer{err: &net.DNSError{Err: errMsgNotFound, IsNotFound: true}, ttl: time.Hour, nxdomain: true}
	fail := answer{err: &net.DNSError{Err: errMsgTimeout, IsTimeout: true}}
	tests := []struct {
		name string
		a, b answer
		want answer
	}{
		{"addresses of both", pos6, pos, answer{addrs: addrs("2001:db8::1", "192.0.2.1"), ttl: time.Second}},
		{"addresses win over failure", fail, pos, answer{addrs: addrs("192.0.2.1"), ttl: time.Minute}},
		{"NXDOMAIN wins over failure", fail, nx, nx},
		{"failure wins over NODATA", nodata, fail, fail},
		{"NODATA shortest TTL", nodata, nodataShort, nodataShort},
	}
	for _, tt := range tests {
		got := combineAnswers(tt.a, tt.b)
		if !slices.Equal(got.addrs, tt.want.addrs) || got.ttl != tt.want.ttl || got.err != tt.want.err {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// FuzzAnswer feeds arbitrary messages to the reply checks and the answer
// reader, which must not panic and must return either addresses or an error.
func FuzzAnswer(f *testing.F) {
	seeds := []*dns.Msg{
		reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 IN A 192.0.2.1", "web.test. 60 IN A 192.0.2.2"}),
		reply(dns.TypeAAAA, dns.RcodeSuccess, []string{"web.test. 300 IN CNAME a.test.", "a.test. 60 IN AAAA 2001:db8::1"}),
		reply(dns.TypeA, dns.RcodeSuccess, []string{"web.test. 60 IN CNAME a.test.", "a.test. 60 IN CNAME web.test."}),
		reply(dns.TypeA, dns.RcodeNameError, nil, testSOA),
		reply(dns.TypeA, dns.RcodeServerFailure, nil),
	}
	seeds[4].Truncated = true
	for _, m := range seeds {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := new(dns.Msg)
		if resp.Unpack(b) != nil {
			return
		}
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			q := new(dns.Msg).SetQuestion("web.test.", qtype)
			q.Id = resp.Id
			_ = checkReply(q, resp)
			ans := readAnswer(resp, qtype, "web.test", "192.0.2.53:53")
			if (len(ans.addrs) > 0) == (ans.err != nil) {
				t.Fatalf("answer with addresses %v and error %v", ans.addrs, ans.err)
			}
			for _, a := range ans.addrs {
				if a.Is4() != (qtype == dns.TypeA) {
					t.Fatalf("address %v for type %d", a, qtype)
				}
			}
			combineAnswers(ans, ans)
		}
	})
}
