package fwdproxy_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/fwdproxy/fwdproxy"
	"github.com/miekg/dns"
)

func ExampleResolver() {
	// A DNS server for the example, on a loopback port: it answers
	// 192.0.2.10 to every A query.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	started := make(chan struct{})
	server := &dns.Server{
		PacketConn:        pc,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			m := new(dns.Msg).SetReply(req)
			if q := req.Question[0]; q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
					A:   net.IPv4(192, 0, 2, 10),
				})
			}
			w.WriteMsg(m)
		}),
	}
	go server.ActivateAndServe()
	<-started
	defer server.Shutdown()

	r, err := fwdproxy.NewResolver(
		fwdproxy.WithDNSServers(pc.LocalAddr().String()),
		fwdproxy.WithHostsFile(""),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	for range 2 {
		addrs, err := r.LookupNetIP(context.Background(), "www.example.com")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(addrs)
	}
	s := r.Stats()
	fmt.Printf("hits %d, misses %d\n", s.Hits, s.Misses)
	// Output:
	// [192.0.2.10]
	// [192.0.2.10]
	// hits 1, misses 1
}
