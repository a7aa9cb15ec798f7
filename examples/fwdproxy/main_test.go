package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// build compiles the example server once per test binary.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fwdproxy")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var listenLine = regexp.MustCompile(`fwdproxy listening.*addr=(\S+)`)

// TestServerRunsAndShutsDown starts the real binary, proxies a request
// through it, then checks SIGTERM stops it cleanly and quickly.
func TestServerRunsAndShutsDown(t *testing.T) {
	bin := build(t)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "through "+r.Header.Get("Via"))
	}))
	defer o.Close()

	cmd, addr := startServer(t, bin, "-allow-private")
	resp, err := proxyClient(t, addr).Get(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "through 1.1 fwdproxy-") {
		t.Errorf("response %q", b)
	}

	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not stopped 10 s after SIGTERM")
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start))
}

// startServer runs the binary with args on a free loopback port and returns
// the process and its address. It is killed when the test ends.
func startServer(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "FWDPROXY_LOG_LEVEL=debug")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stderr)
	var addr string
	for sc.Scan() {
		if m := listenLine.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatal("no startup line saying where the server listens")
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	return cmd, addr
}

// proxyClient returns a client that sends its requests through the proxy
// at addr.
func proxyClient(t *testing.T, addr string) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr})}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestDNSServerFlag: -dns-server points the resolver at a test DNS server
// that alone knows the origin's name.
func TestDNSServerFlag(t *testing.T) {
	bin := build(t)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.Host)
	}))
	defer o.Close()
	ds := dnstest.NewServer(t)
	ds.Add("origin.fwdproxy-test. 60 IN A 127.0.0.1")
	_, addr := startServer(t, bin, "-allow-private", "-dns-server", "127.0.0.1:1,"+ds.Addr())
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	resp, err := proxyClient(t, addr).Get("http://origin.fwdproxy-test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello origin.fwdproxy-test:"+port {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

// TestAccessFlags: the access-control flags of the example server, through
// Go's client and curl.
func TestAccessFlags(t *testing.T) {
	bin := build(t)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "origin "+r.Header.Get("Proxy-Authorization"))
	}))
	defer o.Close()
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	ds := dnstest.NewServer(t)
	ds.Add("ok.fwdproxy-test. 60 IN A 127.0.0.1", "denied.fwdproxy-test. 60 IN A 127.0.0.1")

	// Safe by default: loopback is refused without -allow-private, and the
	// refusal says so.
	_, plain := startServer(t, bin)
	resp, err := proxyClient(t, plain).Get(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "loopback") || !strings.Contains(string(b), "-allow-private") {
		t.Errorf("loopback origin without -allow-private: %d %q, want 403 naming -allow-private", resp.StatusCode, b)
	}

	_, addr := startServer(t, bin, "-allow-private", "-dns-server", ds.Addr(), "-auth", "alice:pa:ss",
		"-deny-host", "denied.fwdproxy-test", "-allow-port", port)
	authed := func(user string) *http.Client {
		u := &url.URL{Scheme: "http", Host: addr}
		if user != "" {
			u.User = url.UserPassword(user, "pa:ss")
		}
		tr := &http.Transport{Proxy: http.ProxyURL(u)}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	for _, tc := range []struct {
		name, user, host string
		status           int
	}{
		{"no credentials", "", "ok.fwdproxy-test", 407},
		{"wrong user", "bob", "ok.fwdproxy-test", 407},
		{"allowed", "alice", "ok.fwdproxy-test", 200},
		{"denied host", "alice", "denied.fwdproxy-test", 403},
	} {
		resp, err := authed(tc.user).Get("http://" + tc.host + ":" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || strings.Contains(string(b), "Basic") {
			t.Errorf("%s: %d %q, want %d (and no credentials at the origin)", tc.name, resp.StatusCode, b, tc.status)
		}
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Log("curl not installed; skipping the curl part")
		return
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"curl -U", []string{"-U", "alice:pa:ss", "http://ok.fwdproxy-test:" + port + "/"}, "200"},
		{"curl without -U", []string{"http://ok.fwdproxy-test:" + port + "/"}, "407"},
		{"curl CONNECT to an allowed port", []string{"-p", "-U", "alice:pa:ss", "http://ok.fwdproxy-test:" + port + "/"}, "200"},
	} {
		args := append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://" + addr}, tc.args...)
		out, _ := exec.Command("curl", args...).Output()
		if got := string(out); got != tc.want && !(tc.want == "407" && got == "407000") {
			t.Errorf("%s: curl printed %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFlags(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		name     string
		args     []string
		env      string
		wantCode int
		wantOut  string
	}{
		{"help", []string{"-h"}, "", 0, "-listen"},
		{"unknown flag", []string{"-nope"}, "", 1, "flag provided but not defined"},
		{"stray argument", []string{"extra"}, "", 1, "unexpected arguments"},
		{"bad env value", nil, "FWDPROXY_ALLOW_PRIVATE=maybe", 1, "FWDPROXY_ALLOW_PRIVATE"},
		{"bad listen address", []string{"-listen", "256.0.0.1:99999"}, "", 1, "listen"},
		{"bad dns server", []string{"-dns-server", "no such:port"}, "", 1, "WithDNSServers"},
		{"empty dns server", []string{"-dns-server", "1.1.1.1,"}, "", 1, "empty item"},
		{"auth without colon", []string{"-auth", "alice"}, "", 1, "USER:PASS"},
		{"bad port", []string{"-allow-port", "0"}, "", 1, "-allow-port"},
		{"bad host pattern", []string{"-deny-host", "bad pattern!"}, "", 1, "WithDenyHosts"},
		{"bad env pattern", nil, "FWDPROXY_ALLOW_HOST=*.", 1, "WithAllowHosts"},
		{"tiny response header limit", []string{"-max-response-header-bytes", "100"}, "", 1, "WithMaxResponseHeaderBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = os.Environ()
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.wantCode || !strings.Contains(string(out), tc.wantOut) {
				t.Errorf("exit %d, output %q; want %d containing %q", code, out, tc.wantCode, tc.wantOut)
			}
		})
	}
}
