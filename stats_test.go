package fwdproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStats: counts by error kind, requests, denials (by reason), bytes,
// upstream requests and connections, latency quantiles and the active
// gauges.
func TestStats(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok"+strings.Repeat("!", int(n)))
	})
	deny := WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		if out.URL.Path == "/deny" {
			return nil, Deny(403, "no")
		}
		return nil, nil
	})
	tp := startProxy(t, deny)
	c := tp.client(t, nil)
	for range 5 {
		mustGet(t, c, o.URL+"/")
	}
	mustGet(t, c, o.URL+"/deny")
	if resp, err := c.Post(o.URL+"/post", "text/plain", strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mustGet(t, c, "http://"+closedPort(t)+"/")
	conn, br := tp.rawConn(t)
	mustWrite(t, conn, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 400 {
		t.Fatalf("relative request: %v %v", resp, err)
	}
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tc, tbr := tp.connect(t, echoAddr, "hello")
	if _, err := io.ReadFull(tbr, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	// The tunnel is counted when its relay starts, just after the proxy
	// has written the 200 the client read.
	var s Stats
	eventually(t, "the tunnel to be counted", func() bool {
		s = tp.Stats()
		return s.ActiveTunnels == 1
	})
	if s.ActiveRequests != 1 {
		t.Errorf("during a tunnel: ActiveRequests %d, want 1", s.ActiveRequests)
	}
	if s.ActiveConnections < 2 { // the client's keep-alive connection and the raw one
		t.Errorf("ActiveConnections = %d, want at least 2", s.ActiveConnections)
	}
	tc.Close()
	quiesce(t, tp.Proxy)
	s = tp.Stats()
	want := ErrorCounts{Malformed: 1, Forbidden: 1, Upstream: 1}
	if s.Errors != want {
		t.Errorf("Errors = %+v, want %+v", s.Errors, want)
	}
	if s.Requests != 10 || s.Denials != 1 || s.DeniedBy != (DenialCounts{Forbidden: 1}) {
		t.Errorf("Requests %d, Denials %d by %+v, want 10 and 1 (a hook's Deny)", s.Requests, s.Denials, s.DeniedBy)
	}
	// Bodies: five "ok" and the POST's "ok!!!" out, its "abc" in; the
	// tunnel's 5 bytes each way.
	if want := (ByteCounts{RequestBodies: 3, ResponseBodies: 15, TunnelUp: 5, TunnelDown: 5}); s.Bytes != want {
		t.Errorf("Bytes = %+v, want %+v", s.Bytes, want)
	}
	// Reuse: the five GETs, the POST and the one to the closed port; the
	// GETs share a connection, the POST may take it or dial.
	if u := s.Reuse; u.Requests != 7 || u.NewConns < 1 || u.NewConns > 3 {
		t.Errorf("Reuse = %+v, want 7 requests on 1 to 3 new connections", u)
	}
	if s.Latency.Count != 9 {
		t.Errorf("Latency.Count = %d, want 9 (tunnels left out)", s.Latency.Count)
	}
	if s.Latency.P99 < 2*time.Millisecond || s.Latency.P50 > s.Latency.P95 || s.Latency.P95 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max {
		t.Errorf("Latency = %+v", s.Latency)
	}
	if s.DNS != tp.cfg.Load().up.resolver.Stats() {
		t.Errorf("DNS = %+v, want the Resolver's %+v", s.DNS, tp.cfg.Load().up.resolver.Stats())
	}
	if allocs := testing.AllocsPerRun(10, func() { _ = tp.Stats() }); allocs != 0 {
		t.Errorf("Stats allocates %v times", allocs)
	}
}
