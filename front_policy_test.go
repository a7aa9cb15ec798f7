package fwdproxy

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// TestPolicyOnEveryFrontEnd runs the policy cases of the HTTP/1.1 tests
// (the private-address guard, a deny rule, proxy authentication, a rule
// on the client's address in an access hook, the rate limit, the tunnel
// limit) on every front end, from one table: plain
// HTTP/1.1, HTTPS with HTTP/1.1 and with HTTP/2, cleartext HTTP/2, SOCKS5
// on its own listener and on the HTTP listener, and HTTP/1.1 under the
// PROXY protocol. Each must answer alike (a SOCKS client with the reply code
// of the status), write one access record per decision with the client's
// address (the PROXY header's, under the PROXY protocol) and the user, and
// count alike in Stats. GET runs on the HTTP front ends; a tunnel (CONNECT,
// or SOCKS5's) on all.
func TestPolicyOnEveryFrontEnd(t *testing.T) {
	httpOrigin := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the origin") })
	_, httpPort, _ := net.SplitHostPort(httpOrigin.Listener.Addr().String())
	_, echoPort, _ := net.SplitHostPort(tcpOrigin(t, "tcp", "127.0.0.1:0", echo))
	ds := dnstest.NewServer(t)
	ds.Add("origin.test. 60 IN A 127.0.0.1")
	alice := WithBasicAuth(StaticCredentials(map[string]string{"alice": "s3cret"}))

	type policyCase struct {
		name    string
		opts    []Option
		optsFor func(fe *ingress) []Option // options that depend on the front end
		guarded bool                       // keep the private-address guard (origin.test is loopback)
		creds   creds                      // presented with every request
		before  int                        // requests (or tunnels, held open) that pass first
		want    int                        // the status of the request after those
		user    string
		noGET   bool // a tunnel-only case
	}
	cases := []policyCase{
		{name: "allowed", want: 200},
		{name: "private address", guarded: true, want: 403},
		{name: "deny rule", opts: []Option{WithDenyHosts("origin.test")}, want: 403},
		{name: "credentials rejected", opts: []Option{alice}, creds: creds{"alice", "wrong"}, want: 407},
		{name: "credentials accepted", opts: []Option{alice}, creds: creds{"alice", "s3cret"}, want: 200, user: "alice"},
		{name: "client rule (access hook)", optsFor: func(fe *ingress) []Option {
			// Refuses the front end's client by its address: the PROXY
			// header's under the PROXY protocol, which loopback is not.
			return []Option{WithAccessHook(func(_ context.Context, a Access) error {
				if host, _, _ := net.SplitHostPort(a.Client); host == fe.client {
					return Deny(http.StatusForbidden, "client "+host+" is not allowed")
				}
				return nil
			})}
		}, want: 403},
		{name: "rate limit", opts: []Option{WithRateLimit(0.001, 1)}, before: 1, want: 429},
		{name: "tunnel limit", opts: []Option{WithMaxTunnels(1)}, before: 1, want: 503, noGET: true},
	}
	for i := range ingresses {
		fe := &ingresses[i]
		t.Run(fe.name, func(t *testing.T) {
			for _, pc := range cases {
				for _, tunnel := range []bool{false, true} {
					if !tunnel && (fe.socks || pc.noGET) {
						continue
					}
					what := "GET"
					if tunnel {
						what = "tunnel"
					}
					t.Run(pc.name+"/"+what, func(t *testing.T) {
						opts := append([]Option{WithDNSServers(ds.Addr()), allowAnyConnectPort()}, pc.opts...)
						if pc.optsFor != nil {
							opts = append(opts, pc.optsFor(fe)...)
						}
						if !pc.guarded {
							opts = append(opts, WithAllowPrivate())
						}
						fp := startFront(t, fe, opts...)
						var held []io.Closer
						defer func() {
							for _, c := range held {
								c.Close()
							}
						}()
						try := func() int { return fp.try(t, tunnel, httpPort, echoPort, pc.creds, &held) }
						for n := range pc.before {
							if got := try(); got != fe.answer(200) {
								t.Fatalf("request %d before the case: %d", n, got)
							}
						}
						got, want := try(), fe.answer(pc.want)
						if got != want {
							t.Errorf("got %d, want %d", got, want)
						}
						for _, c := range held {
							c.Close()
						}
						held = nil
						quiesce(t, fp.Proxy)

						// One access record per decision, each with the
						// client's address; the last is the case's.
						recs := fp.records(t, pc.before+1)
						for _, r := range recs {
							if host, _, _ := net.SplitHostPort(r["client"].(string)); host != fe.client {
								t.Errorf("record with client %v, want %s", r["client"], fe.client)
							}
						}
						method := "GET"
						if tunnel {
							method = "CONNECT"
						}
						var rec map[string]any // the case's: the only one with its status, or the last
						for _, r := range recs {
							if r["status"] == float64(pc.want) {
								if rec != nil && pc.want != 200 {
									t.Errorf("two records with status %d: %v", pc.want, recs)
								}
								rec = r
							}
						}
						if rec == nil || rec["method"] != method || rec["user"] != pc.user {
							t.Errorf("records %v, want one with status %d, method %s, user %q", recs, pc.want, method, pc.user)
						} else if fe.socks && rec["proto"] != "SOCKS5" {
							t.Errorf("record proto %v, want SOCKS5", rec["proto"])
						}
						s := fp.Stats()
						if s.Requests != uint64(pc.before+1) {
							t.Errorf("Stats.Requests %d, want %d", s.Requests, pc.before+1)
						}
						wantErrs := ErrorCounts{}
						var wantDenials uint64
						switch pc.want {
						case 403:
							wantErrs.Forbidden, wantDenials = 1, 1
						case 407:
							wantErrs.AuthRequired, wantDenials = 1, 1
						case 429:
							wantErrs.RateLimited, wantDenials = 1, 1
						case 503:
							wantErrs.Unavailable = 1
						}
						if s.Errors != wantErrs || s.Denials != wantDenials {
							t.Errorf("Stats.Errors %+v, Denials %d; want %+v, %d", s.Errors, s.Denials, wantErrs, wantDenials)
						}
						eventually(t, "no client connection open", func() bool { return fp.Stats().ActiveConnections == 0 })
					})
				}
			}
		})
	}
}

// records returns the access records (of requests and tunnels) in the
// order written, once there are n.
func (fp *frontProxy) records(t testing.TB, n int) []map[string]any {
	t.Helper()
	var out []map[string]any
	eventually(t, "the access records", func() bool {
		out = out[:0]
		for line := range strings.Lines(fp.logs.String()) {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("log line is not JSON: %q", line)
			}
			if m["msg"] == "request" || m["msg"] == "tunnel" {
				out = append(out, m)
			}
		}
		return len(out) >= n
	})
	if len(out) != n {
		t.Errorf("%d access records, want %d: %v", len(out), n, out)
	}
	return out
}
