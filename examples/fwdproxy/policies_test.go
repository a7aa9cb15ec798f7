package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPolicySettingErrors: problems with the policies setting are
// reported at the policy's own line of the file (the library's too), or at
// the environment variable.
func TestPolicySettingErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		env  []string
		want string // after "FILE:" when it starts with a digit
	}{
		{"no name", "log-level: info\npolicies:\n  - users: [alice]\n", nil, "3: policies: policy 1: no name"},
		{"unknown key", "policies:\n  - name: a\n    userz: [alice]\n", nil, `3: policies: policy 1: unknown key "userz"`},
		{"bad rate", "policies:\n  - name: a\n    rate: fast\n", nil, `3: policies: policy 1: rate: "fast" is not a positive number`},
		{"bad size", "policies:\n  - name: a\n    bytes-per-day: 1TB\n", nil, `3: policies: policy 1: bytes-per-day: "1TB" is not a size`},
		{"burst without rate", "policies:\n  - name: a\n    burst: 3\n", nil, "2: policies: policy 1: burst needs rate"},
		{"intercept as a boolean", "policies:\n  - name: a\n    intercept: yes\n", nil, `3: policies: policy 1: intercept: want "on" or "off"`},
		{"not a list", "policies: {name: a}", nil, "1: policies: want a list of policies, got a mapping"},
		{"default first", "policies:\n  - name: all\n  - name: b\n    users: [b]\n", nil, `3: policies: WithPolicies: policy 2 ("b"): it is never used`},
		{"intercept without a CA", "policies:\n  - name: a\n    users: [a]\n    intercept: \"on\"\n", nil, `2: policies: WithPolicies: policy 1 ("a"): Intercept "on" needs WithInterception`},
		{"route of a policy", "policies:\n  - name: a\n    users: [a]\n  - name: b\n    users: [b]\n    upstreams: [{via: [\"http://u:secret@p\"]}]\n", nil,
			`4: policies: WithPolicies: policy 2 ("b"): route 1: upstream 1: upstream "http://***@p": missing port`},
		{"environment", "", []string{"FWDPROXY_POLICIES=[{users: [a]}]"}, `FWDPROXY_POLICIES="[{users: [a]}]": line 1: policy 1: no name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "f.yaml", tc.yaml)
			l, err := load([]string{"-config", path}, tc.env, io.Discard)
			if err == nil {
				err = checkBuild(l, io.Discard)
			}
			want := tc.want
			if want[0] >= '0' && want[0] <= '9' {
				want = path + ":" + want
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v\nwant it to hold %s", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error holds a password: %v", err)
			}
		})
	}
}

// startRedisServer starts a redis-server on a free loopback port for the
// test and returns its address and a function that kills it; it skips the
// test when redis-server is not installed.
func startRedisServer(t *testing.T) (addr string, kill func()) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (Debian: apt-get install redis-server; .ci/run installs it): skipping the replicas test")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill = func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, kill
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasOnRedis: two server processes with -redis (and policies
// from the file) enforce alice's burst of 3 together, whichever takes her
// requests; bob, whom no policy names, is not limited; /readyz lists Redis
// and fails once Redis is gone.
func TestReplicasOnRedis(t *testing.T) {
	bin := build(t)
	redisAddr, killRedis := startRedisServer(t)
	o := viaOrigin(t)
	file := writeFile(t, "fwdproxy.yaml", "auth: [\"alice:pw\", \"bob:pw\"]\nallow-private: true\nredis: redis://"+redisAddr+"/0\n"+
		"policies:\n  - name: limited\n    users: [alice]\n    rate: 0.001\n    burst: 3\n")
	var proxies, admins []string
	for range 2 {
		cmd, logs := startLogged(t, bin, "-config", file, "-admin-listen", "127.0.0.1:0")
		proxies = append(proxies, logs.waitFor(t, textListen))
		admins = append(admins, logs.waitFor(t, adminLine))
		t.Cleanup(func() { stop(t, cmd, logs) })
	}
	status := func(i int, user string) int {
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxies[i], User: url.UserPassword(user, "pw")})}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(o.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	var got []string
	allowed := 0
	for i := range 8 {
		s := status(i%2, "alice")
		got = append(got, fmt.Sprint(s))
		if s == 200 {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("alice through both replicas: %s; want her burst of 3 allowed in all", strings.Join(got, " "))
	}
	for i := range 2 {
		if s := status(i, "bob"); s != 200 {
			t.Errorf("bob through replica %d: %d", i+1, s)
		}
	}
	for i, a := range admins {
		if code, body := adminGet(t, a, "/readyz", ""); code != 200 || !strings.Contains(body, "redis: ok") {
			t.Errorf("replica %d's /readyz: %d %q, want 200 with redis: ok", i+1, code, body)
		}
	}
	killRedis()
	for i, a := range admins {
		if code, body := adminGet(t, a, "/readyz", ""); code != 503 || !strings.Contains(body, "redis: ") || strings.Contains(body, "redis: ok") {
			t.Errorf("replica %d's /readyz with Redis gone: %d %q, want 503 naming redis", i+1, code, body)
		}
	}
}

// TestReloadChangesPolicies: policies change with the file: one added
// refuses alice's next request, a bad one is refused at its line and the
// running policies stay, and removing them lets her through again.
func TestReloadChangesPolicies(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	host, _, _ := net.SplitHostPort(o.Listener.Addr().String())
	base := "auth: [\"alice:pw\"]\nallow-private: true\n"
	path := writeFile(t, "fwdproxy.yaml", base)
	_, logs := startLogged(t, bin, "-config", path, "-log-level", "debug")
	addr := logs.waitFor(t, textListen)
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr, User: url.UserPassword("alice", "pw")})}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	status := func() int {
		resp, err := c.Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != 200 {
		t.Fatalf("before any policy: %d", got)
	}
	rewrite(t, path, base+"policies:\n  - name: closed\n    users: [alice]\n    deny-hosts: [\""+host+"\"]\n")
	wantReloaded(t, reloadLines(t, logs, 1)[0])
	if got := status(); got != http.StatusForbidden {
		t.Errorf("after the policy: %d, want 403", got)
	}
	rewrite(t, path, base+"policies:\n  - name: closed\n    users: [alice]\n    rate: slow\n")
	if line := reloadLines(t, logs, 2)[1]; !strings.Contains(line, "fwdproxy.yaml:6: policies: policy 1: rate") {
		t.Errorf("the refused reload's line does not point at the policy's rate: %s", line)
	}
	if got := status(); got != http.StatusForbidden {
		t.Errorf("after a refused reload: %d, want 403 (the running policy stays)", got)
	}
	rewrite(t, path, base)
	reloadLines(t, logs, 3)
	if got := status(); got != 200 {
		t.Errorf("after the policies were removed: %d", got)
	}
}
