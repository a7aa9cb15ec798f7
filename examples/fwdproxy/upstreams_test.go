package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/pac"
)

// secondProxy runs a library fwdproxy for the server to chain through:
// it requires user:pass, adds Via with pseudonym name, and reaches the
// loopback origins.
func secondProxy(t *testing.T, name, user, pass string) string {
	t.Helper()
	p, err := fwdproxy.New(fwdproxy.WithLogger(slog.New(slog.DiscardHandler)), fwdproxy.WithAllowPrivate(), fwdproxy.WithVia(name),
		fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{user: pass})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		_ = p.Shutdown(t.Context())
	})
	return srv.Listener.Addr().String()
}

// viaOrigin answers with the Via it was sent.
func viaOrigin(t *testing.T) *httptest.Server {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header.Values("Via"), ", "))
	}))
	t.Cleanup(o.Close)
	return o
}

// TestUpstreamFlags: the server chains through -upstream (a pool in
// failover order: a dead proxy first), through the routes of the file's
// upstreams and of FWDPROXY_UPSTREAMS, and through -pac with
// -pac-credentials; the access log names the upstream and not its
// password; the metrics listener serves a PAC file for the clients at
// /proxy.pac pointing at the proxy.
func TestUpstreamFlags(t *testing.T) {
	bin := build(t)
	o := viaOrigin(t)
	second := secondProxy(t, "second-hop", "chain-user", "chain-Pa55word")
	dead := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	good := "http://chain-user:chain-Pa55word@" + second
	pac := writeFile(t, "proxy.pac", `function FindProxyForURL(url, host) { return "PROXY `+dead+`; PROXY `+second+`"; }`)
	file := writeFile(t, "fwdproxy.yaml", "upstreams:\n  - hosts: [elsewhere.example]\n    via: [DIRECT]\n  - via: [\""+good+"\"]\n")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"-upstream", nil, []string{"-upstream", "http://" + dead, "-upstream", good}},
		{"upstreams in the file", nil, []string{"-config", file}},
		{"FWDPROXY_UPSTREAMS", []string{"FWDPROXY_UPSTREAMS=[{via: [\"" + good + "\"]}]"}, nil},
		{"-pac", nil, []string{"-pac", pac, "-pac-credentials", good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, logs := startLoggedEnv(t, bin, tc.env, append([]string{"-allow-private", "-metrics-listen", "127.0.0.1:0"}, tc.args...)...)
			addr := logs.waitFor(t, textListen)
			maddr := logs.waitFor(t, adminLine)
			if body := get(t, proxyClient(t, addr), o.URL+"/"); !strings.Contains(body, "second-hop") {
				t.Errorf("the origin saw Via %q; want it through second-hop", body)
			}
			pacBody := get(t, &http.Client{}, "http://"+maddr+"/proxy.pac")
			if !strings.Contains(pacBody, `return "PROXY `+addr+`"`) || !strings.Contains(pacBody, "function FindProxyForURL") {
				t.Errorf("/proxy.pac:\n%s\nwant it to send clients to %s", pacBody, addr)
			}
			stop(t, cmd, logs)
			all := strings.Join(logs.all(), "\n")
			if !strings.Contains(all, "via=http://"+second) {
				t.Errorf("no access record names via=http://%s:\n%s", second, all)
			}
			if strings.Contains(all, "chain-Pa55word") {
				t.Errorf("the log holds the upstream's password:\n%s", all)
			}
		})
	}
}

// TestUpstreamSettingErrors: problems with the upstream settings are
// reported where they were made, with the route's own line for a route of
// the file and the PAC file's line for its syntax error, and never with a
// password.
func TestUpstreamSettingErrors(t *testing.T) {
	pac := writeFile(t, "proxy.pac", "function FindProxyForURL(url, host) {\n  return \"DIRECT\";\n  if (\n}\n")
	for _, tc := range []struct {
		name string
		yaml string
		args []string
		env  []string
		want string // after "FILE:" when it starts with a digit
	}{
		{"pac and upstream", "", []string{"-pac", pac, "-upstream", "http://p:1"}, nil, "-pac: -pac and -upstream exclude each other"},
		{"pac and upstreams", "pac: " + pac + "\nupstreams: [{via: [DIRECT]}]", nil, nil, "1: pac: -pac and upstreams exclude each other"},
		{"upstream and upstreams", "upstreams: [{via: [DIRECT]}]", []string{"-upstream", "http://p:1"}, nil, "-upstream: -upstream and upstreams exclude each other"},
		{"bad upstream URL", "upstream: [\"http://u:secret@p\"]", nil, nil, `1: upstream: WithUpstreams: route 1: upstream 1: upstream "http://***@p": missing port`},
		{"route's own line", "log-level: info\nupstreams:\n  - hosts: [a.example]\n    via: [DIRECT]\n  - via: [\"http://u:secret@p\"]\n", nil, nil, `5: upstreams: WithUpstreams: route 2: upstream 1: upstream "http://***@p": missing port`},
		{"unknown route key", "upstreams:\n  - via: [DIRECT]\n    hostz: [a]\n", nil, nil, `3: upstreams: route 1: unknown key "hostz"`},
		{"route without via", "upstreams:\n  - hosts: [a.example]\n", nil, nil, `2: upstreams: route 1: no via`},
		{"bad route port", "upstreams: [{ports: [http], via: [DIRECT]}]", nil, nil, `1: upstreams: route 1: ports: "http" is not a port number`},
		{"routes not a list", "upstreams: {via: DIRECT}", nil, nil, "1: upstreams: want a list of routes, got a mapping"},
		{"bad policy", "upstreams: [{via: [DIRECT], policy: fastest}]", nil, nil, `1: upstreams: WithUpstreams: route 1: Policy "fastest"`},
		{"PAC syntax", "pac: " + pac, nil, nil, "1: pac: " + pac + ": syntax error at line 4, column 1"},
		{"PAC missing", "pac: /nonexistent/proxy.pac", nil, nil, "1: pac: open /nonexistent/proxy.pac"},
		{"PAC credentials without PAC", "pac-credentials: [\"http://u:secret@p:1\"]", nil, nil, "1: pac-credentials: needs -pac"},
		{"probe target without interval", "upstream-probe-target: a.example:443", nil, nil, "1: upstream-probe-target: needs -upstream-probe-interval"},
		{"probe without upstreams", "upstream-probe-interval: 10s", nil, nil, "1: upstream-probe-interval: WithUpstreamProbe: no upstream to probe"},
		{"environment routes", "", nil, []string{"FWDPROXY_UPSTREAMS=[{via: [\"http://u:secret@p\"]}]"}, `FWDPROXY_UPSTREAMS: WithUpstreams: route 1: upstream 1: upstream "http://***@p": missing port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "f.yaml", tc.yaml)
			l, err := load(append([]string{"-config", path}, tc.args...), tc.env, io.Discard)
			if err == nil {
				err = checkBuild(l, io.Discard)
			}
			want := tc.want
			if want[0] >= '0' && want[0] <= '9' {
				want = path + ":" + want
			}
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %v\nwant %q", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

// TestUpstreamsValue: the upstreams setting reads the routes' fields, from
// the file and as flow YAML, and its text is the same either way (a reload
// sees no change).
func TestUpstreamsValue(t *testing.T) {
	file := "upstreams:\n  - hosts: [\"*.corp.example\", 10.0.0.0/8]\n    ports: [443, 8443]\n    schemes: https\n    users: [alice]\n    via: [http://a:3128, DIRECT]\n    policy: round-robin\n  - via: socks5://s:1080\n"
	path := writeFile(t, "f.yaml", file)
	l, err := load([]string{"-config", path}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{hosts: ["*.corp.example", "10.0.0.0/8"], ports: [443, 8443], schemes: ["https"], users: ["alice"], via: ["http://a:3128", "DIRECT"], policy: round-robin}, {via: ["socks5://s:1080"]}]`
	if got := l.value("upstreams"); got != want {
		t.Errorf("from the file: %s\nwant %s", got, want)
	}
	l2, err := load([]string{"-upstreams", want}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := l2.value("upstreams"); got != want {
		t.Errorf("from the flag: %s\nwant %s", got, want)
	}
	if err := checkBuild(l, io.Discard); err != nil {
		t.Error(err)
	}
	if r := l.s.upstreams.routes.routes; len(r) != 2 || r[0].line != 2 || r[1].line != 8 {
		t.Errorf("routes %+v; want two, from lines 2 and 8", r)
	}
}

// TestReloadUpstreams: the routes change live with the file. Through
// hop-a, then (the file's upstreams rewritten) through hop-b; then by a
// PAC file naming hop-a, and, that PAC file rewritten to name hop-b, after
// SIGHUP through hop-b (a reload reads the PAC file again); a broken route
// is refused at its line and the running routes stay. /metrics shows each
// upstream's health by name; neither the log nor /metrics holds a
// password at any point.
func TestReloadUpstreams(t *testing.T) {
	bin := build(t)
	o := viaOrigin(t)
	const passA, passB = "hop-a-Pa55word", "hop-b-Pa55word"
	hopA, hopB := secondProxy(t, "hop-a", "chain-user", passA), secondProxy(t, "hop-b", "chain-user", passB)
	specA, specB := "http://chain-user:"+passA+"@"+hopA, "http://chain-user:"+passB+"@"+hopB
	path := writeFile(t, "fwdproxy.yaml", "upstreams:\n  - via: [\""+specA+"\"]\n")
	pac := writeFile(t, "proxy.pac", `function FindProxyForURL(url, host) { return "PROXY `+hopA+`"; }`)
	cmd, logs := startLogged(t, bin, "-config", path, "-log-level", "debug", "-metrics-listen", "127.0.0.1:0")
	addr := logs.waitFor(t, textListen)
	maddr := logs.waitFor(t, adminLine)
	client := proxyClient(t, addr)
	through := func(when, hop string) {
		t.Helper()
		if body := get(t, client, o.URL+"/"); !strings.Contains(body, hop) {
			t.Errorf("%s: the origin saw Via %q; want it through %s", when, body, hop)
		}
	}
	metrics := func() string { return get(t, &http.Client{}, "http://"+maddr+"/metrics") }
	upGauge := func(hop string) *regexp.Regexp { // the upstream's health: 1 while up
		return regexp.MustCompile(`(?m)^fwdproxy_upstream_proxy_up\{[^}]*upstream="http://` + regexp.QuoteMeta(hop) + `"[^}]*\} 1$`)
	}

	through("at start", "hop-a")
	if m := metrics(); !upGauge(hopA).MatchString(m) {
		t.Errorf("/metrics has no fwdproxy_upstream_proxy_up 1 for http://%s:\n%s", hopA, m)
	}

	rewrite(t, path, "upstreams:\n  - via: [\""+specB+"\"]\n")
	if line := reloadLines(t, logs, 1)[0]; !strings.Contains(line, "changed=[upstreams]") {
		t.Errorf("reload line %q; want changed=[upstreams]", line)
	}
	through("after upstreams changed to hop-b", "hop-b")
	if m := metrics(); !upGauge(hopB).MatchString(m) || upGauge(hopA).MatchString(m) {
		t.Errorf("/metrics after the reload: want fwdproxy_upstream_proxy_up for http://%s alone:\n%s", hopB, m)
	}

	rewrite(t, path, "pac: "+pac+"\npac-credentials: [\""+specA+"\", \""+specB+"\"]\n")
	wantReloaded(t, reloadLines(t, logs, 2)[1])
	through("routed by the PAC file", "hop-a")

	if err := os.WriteFile(pac, []byte(`function FindProxyForURL(url, host) { return "PROXY `+hopB+`"; }`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wantReloaded(t, reloadLines(t, logs, 3)[2])
	through("after the PAC file changed and SIGHUP", "hop-b")

	rewrite(t, path, "upstreams:\n  - hosts: [a.example]\n    via: [DIRECT]\n  - via: [\"http://chain-user:"+passA+"@127.0.0.1\"]\n")
	failed := reloadLines(t, logs, 4)[3]
	if want := path + `:4: upstreams: WithUpstreams: route 2: upstream 1: upstream \"http://***@127.0.0.1\": missing port`; !strings.Contains(failed, want) {
		t.Errorf("reload line\n%s\nwant it to contain\n%s", failed, want)
	}
	through("after a refused reload", "hop-b")

	m := metrics()
	stop(t, cmd, logs)
	all := strings.Join(logs.all(), "\n")
	for _, secret := range []string{passA, passB} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds an upstream's password %q:\n%s", secret, all)
		}
		if strings.Contains(m, secret) {
			t.Errorf("/metrics holds an upstream's password %q", secret)
		}
	}
}

// TestClientPAC: the PAC file of /proxy.pac, evaluated as a client would
// (internal/pac, the engine of -pac), sends names and addresses to the
// proxy and plain host names and loopback directly; a proxy listening on
// every address is named by the host the client asked for the PAC file
// by.
func TestClientPAC(t *testing.T) {
	for _, tc := range []struct {
		listen, host string // the proxy's address; the Host of the request for /proxy.pac
		want         string // FindProxyForURL for a remote name
	}{
		{"127.0.0.1:8080", "127.0.0.1:9090", "PROXY 127.0.0.1:8080"},
		{"[::1]:3128", "[::1]:9090", "PROXY [::1]:3128"},
		{"0.0.0.0:3128", "proxy.lan:9090", "PROXY proxy.lan:3128"},
		{"[::]:3128", "[2001:db8::5]:9090", "PROXY [2001:db8::5]:3128"},
		{"[::]:3128", "proxy.lan", "PROXY proxy.lan:3128"},
	} {
		t.Run(tc.listen+" asked as "+tc.host, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/proxy.pac", nil)
			req.Host = tc.host
			clientPAC(addr).ServeHTTP(rec, req)
			if ct := rec.Header().Get("Content-Type"); ct != "application/x-ns-proxy-autoconfig" {
				t.Errorf("Content-Type %q", ct)
			}
			ev, err := pac.New(rec.Body.Bytes())
			if err != nil {
				t.Fatalf("the PAC file does not load: %v\n%s", err, rec.Body)
			}
			for _, d := range []struct{ url, host, want string }{
				{"http://example.com/x", "example.com", tc.want},
				{"https://example.com:443/", "example.com", tc.want},
				{"http://192.0.2.7/", "192.0.2.7", tc.want},
				{"http://intranet/", "intranet", "DIRECT"},
				{"http://localhost:8000/", "localhost", "DIRECT"},
				{"http://127.0.0.1:8000/", "127.0.0.1", "DIRECT"},
				{"http://[::1]:8000/", "::1", "DIRECT"},
			} {
				entries, err := ev.FindProxyForURL(t.Context(), d.url, d.host)
				var got []string
				for _, e := range entries {
					got = append(got, e.String())
				}
				if err != nil || strings.Join(got, "; ") != d.want {
					t.Errorf("FindProxyForURL(%s) = %v, %v; want %s", d.url, got, err, d.want)
				}
			}
		})
	}
}
