package fwdproxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// mTLSIngress is the TLS listener with client certificates: the client
// presents alice's, whose identity is the user a Policy matches.
func mTLSIngress(t testing.TB, proto string) ingress {
	clients := proxytest.NewPKI(t, "clients CA")
	alice := clients.Client(t, "alice")
	return ingress{
		name: "mTLS " + proto, client: "127.0.0.1", h2: proto == "h2",
		options: func(pki *proxytest.PKI, t testing.TB) []Option {
			return []Option{WithTLS(&tls.Config{Certificates: []tls.Certificate{pki.Server(t, "127.0.0.1")},
				ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clients.Pool})}
		},
		serve: (*Proxy).ServeTLS,
		dial: func(t testing.TB, pki *proxytest.PKI, addr string) net.Conn {
			raw := plainDial(t, pki, addr)
			tc := tls.Client(raw, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1", NextProtos: []string{proto},
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &alice, nil }})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc
		},
	}
}

// TestUserPolicyOnEveryFrontEnd runs the per-user policy table (hosts,
// ports, rate, concurrent tunnels, the default policy, another user's
// policy, a policy by client address) on every front end, the user being
// alice by Basic credentials (HTTP/1.1, HTTPS with HTTP/1.1 and HTTP/2,
// cleartext HTTP/2, the PROXY protocol), by SOCKS5's user name, or by her
// client certificate (mTLS, HTTP/1.1 and HTTP/2). Each refusal must be the
// policy's (its status, its reason counted in Stats.DeniedBy, the policy
// named in the access record's reason), and must not touch the requests
// before it.
func TestUserPolicyOnEveryFrontEnd(t *testing.T) {
	httpOrigin := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the origin") })
	_, httpPort, _ := net.SplitHostPort(httpOrigin.Listener.Addr().String())
	_, echoPort, _ := net.SplitHostPort(tcpOrigin(t, "tcp", "127.0.0.1:0", echo))
	ds := dnstest.NewServer(t)
	ds.Add("origin.test. 60 IN A 127.0.0.1")
	port, _ := strconv.Atoi(httpPort)
	tport, _ := strconv.Atoi(echoPort)

	fronts := append([]ingress(nil), ingresses...)
	fronts = append(fronts, mTLSIngress(t, "http/1.1"), mTLSIngress(t, "h2"))

	type policyCase struct {
		name     string
		policies []Policy
		before   int    // requests (or tunnels, held open) that pass first
		want     int    // the status of the request after those
		why      string // the DeniedBy reason of a refusal
		noGET    bool   // a tunnel-only case
		anon     bool   // no authentication: the policy matches the client's address
	}
	cases := []policyCase{
		{name: "no policy for alice", policies: []Policy{{Name: "bob", Users: []string{"bob"}, DenyHosts: []string{"origin.test"}}}, want: 200},
		{name: "deny host", policies: []Policy{{Name: "a", Users: []string{"alice"}, DenyHosts: []string{"*.test", "origin.test"}}}, want: 403, why: "policy"},
		{name: "allow other host", policies: []Policy{{Name: "a", Users: []string{"alice"}, AllowHosts: []string{"other.test"}}}, want: 403, why: "policy"},
		{name: "allow host", policies: []Policy{{Name: "a", Users: []string{"alice"}, AllowHosts: []string{"origin.test"}, Ports: []uint16{uint16(port), uint16(tport)}}}, want: 200},
		{name: "ports", policies: []Policy{{Name: "a", Users: []string{"alice"}, Ports: []uint16{1}}}, want: 403, why: "policy"},
		{name: "deny by address", policies: []Policy{{Name: "a", Users: []string{"alice"}, DenyHosts: []string{"127.0.0.0/8"}}}, want: 403, why: "policy"},
		{name: "rate", policies: []Policy{{Name: "a", Users: []string{"alice"}, Rate: Rate{PerSecond: 0.001, Burst: 2}}}, before: 2, want: 429, why: "quota_rate"},
		{name: "tunnels", policies: []Policy{{Name: "a", Users: []string{"alice"}, MaxTunnels: 2}}, before: 2, want: 429, why: "quota_tunnels", noGET: true},
		{name: "first match wins", policies: []Policy{{Name: "a", Users: []string{"alice"}}, {Name: "rest", DenyHosts: []string{"origin.test"}}}, want: 200},
		{name: "default policy", policies: []Policy{{Name: "bob", Users: []string{"bob"}}, {Name: "rest", DenyHosts: []string{"origin.test"}}}, want: 403, why: "policy"},
		{name: "client address", anon: true, policies: []Policy{{Name: "net", Clients: []string{"CLIENT/32"}, Rate: Rate{PerSecond: 0.001, Burst: 1}}}, before: 1, want: 429, why: "quota_rate"},
	}
	for i := range fronts {
		fe := &fronts[i]
		mtls := strings.HasPrefix(fe.name, "mTLS")
		t.Run(fe.name, func(t *testing.T) {
			for _, pc := range cases {
				if pc.anon && mtls {
					continue // the certificate authenticates every request
				}
				for _, tunnel := range []bool{false, true} {
					if !tunnel && (fe.socks || pc.noGET) {
						continue
					}
					what := "GET"
					if tunnel {
						what = "tunnel"
					}
					t.Run(pc.name+"/"+what, func(t *testing.T) {
						ps := make([]Policy, len(pc.policies))
						copy(ps, pc.policies)
						for i := range ps {
							for j, c := range ps[i].Clients {
								ps[i].Clients = append([]string(nil), ps[i].Clients...)
								ps[i].Clients[j] = strings.Replace(c, "CLIENT", fe.client, 1)
							}
						}
						opts := []Option{WithDNSServers(ds.Addr()), allowAnyConnectPort(), WithAllowPrivate(), WithPolicies(ps...)}
						cr := creds{}
						if !pc.anon && !mtls {
							opts = append(opts, WithBasicAuth(StaticCredentials(map[string]string{"alice": "s3cret"})))
							cr = creds{"alice", "s3cret"}
						}
						fp := startFront(t, fe, opts...)
						var held []io.Closer
						defer func() {
							for _, c := range held {
								c.Close()
							}
						}()
						try := func() int { return fp.try(t, tunnel, httpPort, echoPort, cr, &held) }
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
						s := fp.Stats()
						var wantBy DenialCounts
						switch pc.why {
						case "policy":
							wantBy.Policy = 1
						case "quota_rate":
							wantBy.QuotaRate = 1
						case "quota_tunnels":
							wantBy.QuotaTunnels = 1
						}
						if s.DeniedBy != wantBy {
							t.Errorf("Stats.DeniedBy %+v, want %+v", s.DeniedBy, wantBy)
						}
						if pc.why != "" {
							var rec map[string]any
							for _, r := range fp.records(t, pc.before+1) {
								if r["status"] == float64(pc.want) {
									rec = r
								}
							}
							if r, _ := rec["reason"].(string); !strings.Contains(r, "policy \"") {
								t.Errorf("the refusal's record %v does not name the policy", rec)
							}
						}
					})
				}
			}
		})
	}
}

// TestPolicyInterceptRouteReload: a policy's Intercept turns interception
// off (or on) for its users' tunnels; its Routes send its users' requests
// through an upstream proxy, and only theirs; Reload swaps the policies
// while a user's rate state carries over, and refuses a bad policy.
func TestPolicyInterceptRouteReload(t *testing.T) {
	tlsO, originRoots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls origin") })
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain origin") })
	ca, caRoots := newTestCA(t)
	auth := WithBasicAuth(StaticCredentials(map[string]string{"alice": "a", "bob": "b", "carol": "c"}))
	basic := func(u string) string { return creds{u, u[:1]}.header() }

	t.Run("intercept", func(t *testing.T) {
		never := WithInterceptFunc(func(context.Context, string, *http.Request) bool { return false })
		policies := WithPolicies(Policy{Name: "clear", Users: []string{"alice"}, Intercept: "off"},
			Policy{Name: "inspected", Users: []string{"bob"}, Intercept: "on"})
		target := tlsO.Listener.Addr().String()
		for _, tc := range []struct {
			proxy       string // the Proxy's own choice: "all" or "none"
			user        string
			intercepted bool
		}{{"all", "alice", false}, {"all", "carol", true}, {"none", "bob", true}, {"none", "carol", false}} {
			opts := []Option{auth, allowAnyConnectPort(), WithUpstreamRootCAs(originRoots), policies, WithInterception(ca)}
			if tc.proxy == "none" {
				opts[len(opts)-1] = WithInterception(ca, never)
			}
			tp := startProxy(t, opts...)
			c, _ := connectAs(t, tp, target, basic(tc.user))
			roots := originRoots
			if tc.intercepted {
				roots = caRoots
			}
			tc2 := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
			if err := tc2.Handshake(); err != nil {
				t.Errorf("proxy intercepting %s, %s: TLS handshake trusting the %s: %v", tc.proxy, tc.user, map[bool]string{true: "proxy's CA", false: "origin"}[tc.intercepted], err)
			}
			c.Close()
		}
		if _, err := New(WithPolicies(Policy{Name: "x", Intercept: "on"})); err == nil || !strings.Contains(err.Error(), "needs WithInterception") {
			t.Errorf("Intercept on without interception: %v", err)
		}
	})

	t.Run("route", func(t *testing.T) {
		up := startProxy(t)
		tp := startProxy(t, auth, WithPolicies(Policy{Name: "via", Users: []string{"alice"}, Routes: []Route{{Upstreams: []string{"http://" + up.Addr}}}}))
		for _, tc := range []struct {
			user string
			via  uint64 // requests the upstream proxy has seen after
		}{{"bob", 0}, {"alice", 1}, {"bob", 1}, {"alice", 2}} {
			status, body, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic(tc.user)+"\r\n\r\n")
			if status != 200 || body != "plain origin" {
				t.Errorf("%s: %d %q", tc.user, status, body)
			}
			quiesce(t, up.Proxy)
			if got := up.Stats().Requests; got != tc.via {
				t.Errorf("after %s's request the upstream saw %d, want %d", tc.user, got, tc.via)
			}
		}
	})

	t.Run("reload", func(t *testing.T) {
		limited := Policy{Name: "slow", Users: []string{"alice"}, Rate: Rate{PerSecond: 0.001, Burst: 1}}
		tp := startProxy(t, auth, WithPolicies(limited))
		get := func(user string) int {
			status, _, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic(user)+"\r\n\r\n")
			return status
		}
		if s := get("alice"); s != 200 {
			t.Fatalf("first: %d", s)
		}
		denyBob := Policy{Name: "no bob", Users: []string{"bob"}, DenyHosts: []string{"127.0.0.1"}}
		if err := tp.Reload(WithAllowPrivate(), auth, WithPolicies(limited, denyBob)); err != nil {
			t.Fatal(err)
		}
		if s, b := get("alice"), get("bob"); s != 429 || b != 403 {
			t.Errorf("after the reload: alice %d (her rate carries over: want 429), bob %d (want 403)", s, b)
		}
		if err := tp.Reload(WithAllowPrivate(), auth, WithPolicies(Policy{Name: "dup"}, Policy{Name: "dup", Users: []string{"x"}})); err == nil {
			t.Error("a default policy before another accepted")
		}
		if err := tp.Reload(WithAllowPrivate(), auth); err != nil {
			t.Fatal(err)
		}
		if s := get("alice"); s != 200 {
			t.Errorf("without policies: %d", s)
		}
	})
}

// uncomparableState is a SharedState that Go cannot compare (a map in a
// struct value); WithSharedState refuses it rather than panic at a reload.
type uncomparableState struct {
	_ map[string]int
	SharedState
}

func TestWithSharedStateUncomparable(t *testing.T) {
	_, err := New(WithSharedState(uncomparableState{}))
	if err == nil || !strings.Contains(err.Error(), "WithSharedState") || !strings.Contains(err.Error(), "pointer") {
		t.Fatalf("New with an uncomparable store: %v; want an error naming WithSharedState and asking for a pointer", err)
	}
	p, err := New(WithSharedState(&uncomparableState{}))
	if err != nil {
		t.Fatalf("a pointer to it: %v", err)
	}
	p.Shutdown(context.Background())
}
