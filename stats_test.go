package fwdproxy

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestStats: counts by error kind, requests, denials, latency quantiles and
// the active gauges.
func TestStats(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
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
	mustGet(t, c, "http://"+closedPort(t)+"/")
	conn, br := tp.rawConn(t)
	mustWrite(t, conn, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 400 {
		t.Fatalf("relative request: %v %v", resp, err)
	}
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tc, _ := tp.connect(t, echoAddr, "")
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
	if s.Requests != 9 || s.Denials != 1 {
		t.Errorf("Requests %d, Denials %d, want 9 and 1", s.Requests, s.Denials)
	}
	if s.Latency.Count != 8 {
		t.Errorf("Latency.Count = %d, want 8 (tunnels left out)", s.Latency.Count)
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
