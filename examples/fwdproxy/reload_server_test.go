package main

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadLine matches the log line of a reload attempt; its submatch is the
// outcome.
// The server runs at -log-level debug for them: an applied file's own line
// is at Debug, beside the library's Info line ("configuration reloaded").
var reloadLine = regexp.MustCompile(`msg="(configuration file applied|reload failed; the running configuration stays)"`)

// reloadLines waits until the server has logged n reload attempts and
// returns them.
func reloadLines(t *testing.T, logs *logLines, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		for _, line := range logs.all() {
			if reloadLine.MatchString(line) {
				got = append(got, line)
			}
		}
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("%d reload lines, want %d:\n%s", len(got), n, strings.Join(logs.all(), "\n"))
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantReloaded fails the test unless a reload line says the configuration
// was applied.
func wantReloaded(t *testing.T, line string) {
	t.Helper()
	if !strings.Contains(line, `msg="configuration file applied"`) {
		t.Fatalf("reload line %q, want the configuration reloaded", line)
	}
}

// TestSIGHUPReloads: with -config, SIGHUP reloads the file instead of
// stopping the server, one log line per attempt; a bad file (seen by the
// watcher, or at SIGHUP) keeps the server running as it was and the line
// says where the problem is; SIGTERM still drains.
func TestSIGHUPReloads(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	path := writeFile(t, "fwdproxy.yaml", "deny-host: [a.example]\n")
	cmd, logs := startLogged(t, bin, "-config", path, "-log-level", "debug")
	addr := logs.waitFor(t, textListen)
	get(t, proxyClient(t, addr), o.URL)

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	first := reloadLines(t, logs, 1)[0]
	wantReloaded(t, first)
	if !strings.Contains(first, "trigger=SIGHUP") {
		t.Errorf("reload line %q does not name SIGHUP", first)
	}
	var info []string // the reload's one Info line is the library's (nothing changed: SIGHUP alone)
	for _, line := range logs.all() {
		if strings.Contains(line, "level=INFO") && strings.Contains(line, "reload") {
			info = append(info, line)
		}
	}
	if len(info) != 1 || !strings.Contains(info[0], `msg="configuration reloaded, unchanged" generation=2`) {
		t.Errorf("Info lines about the reload: %q; want the library's one", info)
	}
	get(t, proxyClient(t, addr), o.URL) // still serving

	rewrite(t, path, "deny-host: [a.example]\ndial-timeout: 10\n")
	second := reloadLines(t, logs, 2)[1]
	want := `msg="reload failed; the running configuration stays" trigger="file change" file=` + path +
		` error="` + path + `:2: dial-timeout: want a duration such as 10s, 1m30s or 500ms, got \"10\""`
	if !strings.Contains(second, want) {
		t.Errorf("reload line\n%s\nwant it to contain\n%s", second, want)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	third := reloadLines(t, logs, 3)[2]
	if !strings.Contains(third, `trigger=SIGHUP`) || !strings.Contains(third, path+`:2: dial-timeout:`) {
		t.Errorf("reload line %q", third)
	}
	get(t, proxyClient(t, addr), o.URL)

	rewrite(t, path, "listen: 127.0.0.1:1\nlog-format: json\n") // -listen on the command line wins over the file
	fourth := reloadLines(t, logs, 4)[3]
	if want := path + `:2: log-format: cannot change on reload (running with \"text\", asked for \"json\")`; !strings.Contains(fourth, want) || strings.Contains(fourth, "listen:") {
		t.Errorf("reload line\n%s\nwant it to contain\n%s\nand not name listen", fourth, want)
	}
	stop(t, cmd, logs)
	if strings.Contains(strings.Join(logs.all(), "\n"), "shutting down signal=SIGHUP") {
		t.Error("SIGHUP stopped the server")
	}
}

// TestReloadChangesRequests: a deny rule added to the file refuses the next
// request, and a credential removed from it refuses the next request on a
// connection kept alive from before.
func TestReloadChangesRequests(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	path := writeFile(t, "fwdproxy.yaml", "auth: [\"alice:pw\", \"bob:pw\"]\n")
	_, logs := startLogged(t, bin, "-config", path, "-log-level", "debug")
	addr := logs.waitFor(t, textListen)
	client := func(user string) *http.Client {
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr, User: url.UserPassword(user, "pw")})}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	alice, bob := client("alice"), client("bob")
	get(t, alice, o.URL)
	get(t, bob, o.URL) // bob's connection is kept alive

	status := func(c *http.Client) int {
		resp, err := c.Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	rewrite(t, path, "auth: [\"alice:pw\"]\n")
	wantReloaded(t, reloadLines(t, logs, 1)[0])
	if got := status(bob); got != http.StatusProxyAuthRequired {
		t.Errorf("bob after his credential was removed: %d, want 407", got)
	}
	host, _, _ := net.SplitHostPort(o.Listener.Addr().String())
	rewrite(t, path, "auth: [\"alice:pw\"]\ndeny-host: [\""+host+"\"]\n")
	reloadLines(t, logs, 2)
	if got := status(alice); got != http.StatusForbidden {
		t.Errorf("alice after the deny rule: %d, want 403", got)
	}
}
