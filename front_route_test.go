package fwdproxy

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// TestRoutesOnEveryFrontEnd: the routes of WithUpstreams hold on every
// front end, from one table (ingresses): a tunnel (CONNECT, HTTP/2
// CONNECT, SOCKS5's CONNECT) and, on the HTTP front ends, a plain GET go
// through the upstream fwdproxy their user's route names: alice's (by
// Users; on SOCKS5 the RFC 1929 user) through one, anyone else's through
// the default route's. Each arrives (the origin sees the upstream's Via;
// the tunnel echoes), the upstream counts it in Stats.Upstreams, and the
// access record names it (via) without its credentials.
func TestRoutesOnEveryFrontEnd(t *testing.T) {
	o := newChainOrigin(t)
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	hopAlice, hopOthers := upstreamFwdproxy(t, "alice-hop"), upstreamFwdproxy(t, "others-hop")
	up := chainUser + ":" + chainPass + "@"
	names := map[string]string{"alice": "http://" + hopAlice.Addr, "bob": "http://" + hopOthers.Addr}
	hops := map[string]string{"alice": "alice-hop", "bob": "others-hop"}
	users := WithBasicAuth(StaticCredentials(map[string]string{"alice": "a-pw", "bob": "b-pw"}))
	routes := WithUpstreams(
		Route{Users: []string{"alice"}, Upstreams: []string{"http://" + up + hopAlice.Addr}},
		Route{Upstreams: []string{"http://" + up + hopOthers.Addr}},
	)
	for i := range ingresses {
		fe := &ingresses[i]
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, users, routes, WithAllowPrivate(), allowAnyConnectPort())
			want := map[string]uint64{}
			for _, user := range []string{"alice", "bob"} {
				cr := creds{user, user[:1] + "-pw"}
				tun, code := fp.tunnel(t, echoAddr, cr)
				if tun == nil {
					t.Fatalf("%s's tunnel: %d", user, code)
				}
				if _, err := io.WriteString(tun, "ping\n"); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(tun, buf); err != nil || string(buf) != "ping\n" {
					t.Fatalf("%s's tunnel echoed %q, %v", user, buf, err)
				}
				tun.Close()
				want[names[user]]++
				if fe.socks {
					continue
				}
				status, _ := fp.get(t, o.URL+"/"+user, cr)
				if via := o.lastVia(); status != 200 || !strings.Contains(via, hops[user]) {
					t.Errorf("%s's GET: %d, the origin saw Via %q; want it through %s", user, status, via, hops[user])
				}
				want[names[user]]++
			}
			quiesce(t, fp.Proxy)
			for name, n := range want {
				if s, _ := upstreamState(fp.Proxy, name); s.Requests != n || s.Successes != n {
					t.Errorf("upstream %s: %d requests, %d successes; want %d", name, s.Requests, s.Successes, n)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			var recs []map[string]any
			for {
				recs = recs[:0]
				for _, line := range strings.Split(strings.TrimSpace(fp.logs.String()), "\n") {
					var r map[string]any
					if json.Unmarshal([]byte(line), &r) == nil && (r["msg"] == "request" || r["msg"] == "tunnel") {
						recs = append(recs, r)
					}
				}
				total := 0
				for _, n := range want {
					total += int(n)
				}
				if len(recs) >= total || time.Now().After(deadline) {
					if len(recs) != total {
						t.Fatalf("%d access records, want %d:\n%s", len(recs), total, fp.logs.String())
					}
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, r := range recs {
				if user, _ := r["user"].(string); r["via"] != names[user] {
					t.Errorf("access record of %v: via = %v, want %s", user, r["via"], names[user])
				}
			}
			assertNoSecrets(t, "the log", fp.logs.String())
		})
	}
}
