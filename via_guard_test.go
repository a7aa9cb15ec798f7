package fwdproxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/peertest"
)

// TestUpstreamGuard: the private-address guard is about the final
// destination, also through an upstream proxy. One table across plain
// requests and CONNECT tunnels, with the guard on (the default) in the
// first proxy and an upstream fwdproxy that reaches private addresses:
//
//   - an address is always checked, trusted upstream or not;
//   - by default a name is resolved here too, and refused when an address
//     is private; one that does not resolve here is refused with a hint;
//   - WithUpstreamResolvesNames sends names on unresolved: the upstream
//     resolves them (and here reaches the loopback origin).
func TestUpstreamGuard(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "origin reached") })
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	_, echoPort, _ := net.SplitHostPort(echoAddr)
	here := dnstest.NewServer(t) // the first proxy's DNS
	here.Add("private.test. 60 IN A 127.0.0.1", "mixed.test. 60 IN A 9.9.9.9", "mixed.test. 60 IN A 127.0.0.1")
	there := dnstest.NewServer(t) // the upstream's DNS, which knows the internal zone too
	there.Add("private.test. 60 IN A 127.0.0.1", "internal.test. 60 IN A 127.0.0.1")
	up := upstreamFwdproxy(t, "guard-hop", WithDNSServers(there.Addr()))
	route := WithUpstreams(Route{Upstreams: []string{"http://" + chainUser + ":" + chainPass + "@" + up.Addr}})

	type want struct {
		status int
		reason string // part of the refusal
	}
	tests := []struct {
		host          string
		byDefault     want
		trustUpstream want
	}{
		{"127.0.0.1", want{403, "destination 127.0.0.1 is loopback"}, want{403, "destination 127.0.0.1 is loopback"}},
		{"private.test", want{403, "destination 127.0.0.1 is loopback"}, want{200, ""}},
		{"mixed.test", want{403, "destination 127.0.0.1 is loopback"}, want{502, ""}}, // the upstream does not know it
		{"internal.test", want{502, "WithUpstreamResolvesNames"}, want{200, ""}},
	}
	for _, trust := range []bool{false, true} {
		opts := []Option{WithDNSServers(here.Addr()), route, allowAnyConnectPort()}
		if trust {
			opts = append(opts, WithUpstreamResolvesNames())
		}
		tp := startGuardedProxy(t, opts...)
		for _, tt := range tests {
			w := tt.byDefault
			if trust {
				w = tt.trustUpstream
			}
			status, body, _ := send(t, tp, getReq(tt.host, port, "/"))
			if status != w.status || !strings.Contains(body, w.reason) || status == 200 && body != "origin reached" {
				t.Errorf("trust=%v GET %s: %d %q; want %d with %q", trust, tt.host, status, body, w.status, w.reason)
			}
			target := tt.host + ":" + echoPort
			status, body, _ = send(t, tp, connect(target))
			if status != w.status || !strings.Contains(body, w.reason) {
				t.Errorf("trust=%v CONNECT %s: %d %q; want %d with %q", trust, target, status, body, w.status, w.reason)
			}
		}
	}
}

// TestUpstreamCredentialsNeverShown: with wrong credentials for each kind
// of upstream that takes them, and with a failure mid-way, the answer to
// the client, the log (at debug level, access records included), the
// upstream's Stats and the description name the upstream but never its
// credentials.
func TestUpstreamCredentialsNeverShown(t *testing.T) {
	o := newChainOrigin(t)
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	wrong := chainUser + ":" + chainPass + "@" // the upstreams below want other credentials
	fwd := upstreamFwdproxy(t, "strict-hop", WithBasicAuth(StaticCredentials(map[string]string{"someone": "else"})))
	tlsAddr, roots := tlsUpstreamFwdproxy(t, "strict-tls-hop")
	socks := peertest.StartSOCKS(t, "someone", "else", 0).Addr()
	for _, spec := range []string{
		"http://" + wrong + fwd.Addr,
		"https://" + chainUser + ":wrong-" + chainPass + "@" + tlsAddr,
		"socks5://" + wrong + socks,
		"http://" + wrong + closedPort(t),
	} {
		var logs syncBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		tp := startProxy(t, WithLogger(logger), WithUpstreamRootCAs(roots), WithUpstreams(Route{Upstreams: []string{spec}}))
		status, body, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != 502 {
			t.Errorf("GET via %s: %d %q, want 502", redactedSpec(spec), status, body)
		}
		status2, body2, _ := send(t, tp, connect(echoAddr))
		if status2 != 502 {
			t.Errorf("CONNECT via %s: %d %q, want 502", redactedSpec(spec), status2, body2)
		}
		t.Logf("via %s: GET %q; CONNECT %q", redactedSpec(spec), body, body2)
		quiesce(t, tp.Proxy)
		st := tp.Stats()
		var all strings.Builder
		all.WriteString(body + body2 + logs.String())
		for _, u := range st.Upstreams {
			all.WriteString(u.Name + " " + u.LastError)
		}
		for _, d := range tp.cfg.Load().meta.desc {
			all.WriteString(d.value)
		}
		assertNoSecrets(t, "what "+redactedSpec(spec)+" left", all.String())
		if strings.Contains(all.String(), "wrong-") {
			t.Errorf("a password in what %s left: %s", redactedSpec(spec), all.String())
		}
		if !strings.Contains(body+body2, strings.SplitN(redactedSpec(spec), "@", 2)[1]) {
			t.Errorf("the answers %q %q do not name the upstream", body, body2)
		}
	}
}

// redactedSpec is spec with its user info replaced by "***".
func redactedSpec(spec string) string {
	i := strings.Index(spec, "://") + 3
	if at := strings.LastIndexByte(spec, '@'); at > i {
		return spec[:i] + "***" + spec[at:]
	}
	return spec
}
