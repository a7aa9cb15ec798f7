package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logLines runs the binary like startServer and keeps every line it writes
// to stderr.
type logLines struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// waitFor returns the first submatch of re in a line, waiting up to 10 s.
func (l *logLines) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range l.all() {
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no line matching %s in:\n%s", re, strings.Join(l.all(), "\n"))
	return ""
}

func startLogged(t *testing.T, bin string, args ...string) (*exec.Cmd, *logLines) {
	t.Helper()
	return startLoggedEnv(t, bin, nil, append([]string{"-allow-private"}, args...)...)
}

// startLoggedEnv is startLogged without -allow-private and with env added to
// the environment.
func startLoggedEnv(t *testing.T, bin string, env []string, args ...string) (*exec.Cmd, *logLines) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(append(os.Environ(), "FWDPROXY_LOG_LEVEL=info"), env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &logLines{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-l.done
	})
	return cmd, l
}

// stop sends SIGTERM and waits for a clean exit.
func stop(t *testing.T, cmd *exec.Cmd, l *logLines) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { <-l.done; done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not stopped 10 s after SIGTERM")
	}
}

var (
	textListen = regexp.MustCompile(`fwdproxy listening.*addr=(\S+)`)
	jsonListen = regexp.MustCompile(`"msg":"fwdproxy listening".*"addr":"([^"]+)"`)
)

func helloOrigin(t *testing.T) *httptest.Server {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(o.Close)
	return o
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %q", u, resp.StatusCode, b)
	}
	return string(b)
}

// TestTraceFileFlag: finished spans are written to the file as one JSON
// object a line, flushed by the shutdown.
func TestTraceFileFlag(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	path := filepath.Join(t.TempDir(), "spans.jsonl")
	cmd, logs := startLogged(t, bin, "-trace-file", path)
	addr := logs.waitFor(t, textListen)
	c := proxyClient(t, addr)
	get(t, c, o.URL+"/a")
	get(t, c, o.URL+"/b")
	c.Transport.(*http.Transport).CloseIdleConnections()
	stop(t, cmd, logs)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	kinds := map[float64]int{}
	for _, line := range lines {
		var span struct {
			Name     string
			SpanKind float64
		}
		if err := json.Unmarshal([]byte(line), &span); err != nil {
			t.Fatalf("line is not one JSON span: %v: %.300q", err, line)
		}
		kinds[span.SpanKind]++
	}
	// Two requests: a server span (kind 2) and a client span (kind 3) each.
	if len(lines) != 4 || kinds[2] != 2 || kinds[3] != 2 {
		t.Errorf("%d span lines, kinds %v; want 4: 2 server, 2 client", len(lines), kinds)
	}
}

// TestLogFormatJSON: with -log-format json every stderr line is a JSON
// object, the access-log record included (duration_s a number, proto and
// user_agent beside method and target), a refusal has its access record as
// its one log line, with the reason naming the flag that would allow it,
// and a bad format is refused.
func TestLogFormatJSON(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	cmd, logs := startLogged(t, bin, "-log-format", "json")
	addr := logs.waitFor(t, jsonListen)
	req, _ := http.NewRequest("GET", o.URL, nil)
	req.Header.Set("Cookie", "c=very-secret")
	c := proxyClient(t, addr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.Transport.(*http.Transport).CloseIdleConnections()
	// CONNECT to the origin's port, not 443: refused, saying how to allow it.
	oAddr := o.Listener.Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "CONNECT "+oAddr+" HTTP/1.1\r\nHost: "+oAddr+"\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	conn.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "-allow-port") {
		t.Errorf("CONNECT to port %s: %d %q, want 403 naming -allow-port", o.Listener.Addr(), resp.StatusCode, body)
	}
	stop(t, cmd, logs)
	sawAccess, refusals := false, 0
	for _, line := range logs.all() {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("not JSON: %q", line)
			continue
		}
		if m["msg"] == "request" && m["status"] == float64(200) && m["method"] == "GET" {
			sawAccess = true
			if d, ok := m["duration_s"].(float64); !ok || d <= 0 || m["proto"] != "HTTP/1.1" ||
				!strings.HasPrefix(fmt.Sprint(m["user_agent"]), "Go-http-client/") {
				t.Errorf("access record without duration_s, proto or user_agent: %s", line)
			}
		}
		if m["target"] == oAddr && m["method"] == "CONNECT" {
			refusals++
			if m["msg"] != "request" || m["status"] != float64(403) || m["reason"] != strings.TrimSpace(string(body)) {
				t.Errorf("the refusal's record: %s; want its access record with the reason %q", line, body)
			}
		}
		if strings.Contains(line, "very-secret") {
			t.Errorf("secret in log: %q", line)
		}
	}
	if !sawAccess || refusals != 1 {
		t.Errorf("access-log record: %v, refusal records: %d, want 1, in:\n%s", sawAccess, refusals, strings.Join(logs.all(), "\n"))
	}
	out, err := exec.Command(bin, "-log-format", "xml").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-log-format") {
		t.Errorf("-log-format xml: %v %s", err, out)
	}
}
