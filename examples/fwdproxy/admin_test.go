package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var adminLine = regexp.MustCompile(`msg="admin listening".*addr=(\S+)`)

// adminGet GETs path from the admin listener at addr, with the bearer
// token when not empty, and returns the status and the body (of an event
// stream, its first event).
func adminGet(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() && sc.Text() != "" {
			b.WriteString(sc.Text() + "\n")
		}
		return resp.StatusCode, b.String()
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminListenAlias: the admin listener's old name, -metrics-listen,
// still works as a flag, an environment variable and a key of the file;
// a host left out means loopback.
func TestAdminListenAlias(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		file string
		want string // the host it listens on
	}{
		{"flag", []string{"-admin-listen", "127.0.0.1:0"}, nil, "", "127.0.0.1"},
		{"old flag", []string{"-metrics-listen", "127.0.0.1:0"}, nil, "", "127.0.0.1"},
		{"old variable", nil, []string{"FWDPROXY_METRICS_LISTEN=127.0.0.1:0"}, "", "127.0.0.1"},
		{"old key", nil, nil, "metrics-listen: 127.0.0.1:0\n", "127.0.0.1"},
		{"no host", []string{"-admin-listen", ":0"}, nil, "", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-allow-private"}, tc.args...)
			if tc.file != "" {
				args = append(args, "-config", writeFile(t, "fwdproxy.yaml", tc.file))
			}
			_, logs := startLoggedEnv(t, bin, tc.env, args...)
			addr := logs.waitFor(t, adminLine)
			if host, _, _ := net.SplitHostPort(addr); host != tc.want {
				t.Errorf("admin listener on %s, want host %s", addr, tc.want)
			}
			for _, path := range []string{"/metrics", "/healthz", "/"} {
				if code, _ := adminGet(t, addr, path, ""); code != 200 {
					t.Errorf("GET %s: %d", path, code)
				}
			}
		})
	}
}

// TestAdminAliasSettings: an alias and its setting given together are
// refused in every layer, a problem is reported under the name it was
// given by, and -h says what the alias is.
func TestAdminAliasSettings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args, env []string
		file      string
		want      string
	}{
		{"flags", []string{"-admin-listen", "127.0.0.1:1", "-metrics-listen", "127.0.0.1:2"}, nil, "",
			"-admin-listen and -metrics-listen: both given"},
		{"variables", nil, []string{"FWDPROXY_ADMIN_LISTEN=127.0.0.1:1", "FWDPROXY_METRICS_LISTEN=127.0.0.1:2"}, "",
			"FWDPROXY_ADMIN_LISTEN and FWDPROXY_METRICS_LISTEN: both set"},
		{"keys", nil, nil, "admin-listen: 127.0.0.1:1\nmetrics-listen: 127.0.0.1:2\n",
			"FILE:2: metrics-listen: set twice (first at line 1 as admin-listen"},
		{"bad value by the old key", nil, nil, "metrics-listen: nowhere\n", `FILE:1: metrics-listen: want host:port, got "nowhere"`},
		{"bad value by the old flag", []string{"-metrics-listen", "nowhere"}, nil, "", `-metrics-listen: want host:port, got "nowhere"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			path := ""
			if tc.file != "" {
				path = writeFile(t, "fwdproxy.yaml", tc.file)
				args = append(args, "-config", path)
			}
			l, err := load(args, tc.env, io.Discard)
			if err == nil {
				err = checkFixed(l)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			got := err.Error()
			if path != "" {
				got = strings.ReplaceAll(got, path, "FILE")
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("error %q, want %q", got, tc.want)
			}
		})
	}
	var help bytes.Buffer
	if _, err := load([]string{"-h"}, nil, &help); err == nil {
		t.Fatal("-h did not return ErrHelp")
	}
	if !regexp.MustCompile(`-metrics-listen host:port\n\s+an alias of -admin-listen, its old name`).MatchString(help.String()) {
		t.Errorf("-h does not say what -metrics-listen is:\n%s", help.String())
	}
}

// TestAdminListener: the example server's admin listener end to end: with
// a token (from a file), every path wants it but /healthz and /readyz;
// the flows of real traffic are there, redacted; a reload rotates the
// token; /readyz says not ready as soon as SIGTERM starts the drain, while
// a tunnel is still open; -har-file holds every flow, valid HAR 1.2, once
// the server has stopped.
func TestAdminListener(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	echo := echoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	har := filepath.Join(dir, "flows.har")
	config := writeFile(t, "fwdproxy.yaml", "capture: 1KiB\n")
	cmd, logs := startLogged(t, bin, "-config", config, "-admin-listen", "127.0.0.1:0", "-admin-token-file", tokenFile,
		"-har-file", har, "-allow-port", echoPort, "-log-level", "debug")
	addr := logs.waitFor(t, textListen)
	admin := logs.waitFor(t, adminLine)

	c := proxyClient(t, addr)
	req, _ := http.NewRequest("GET", o.URL+"/page", nil)
	req.Header.Set("Cookie", "sid=client-secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// Every path, with and without the token.
	for _, path := range []string{"/", "/flows", "/flows.har", "/api/stats", "/api/stats/stream", "/api/flows",
		"/api/flows/stream", "/api/flows/1", "/metrics", "/debug/pprof/", "/ui/flows/flows.js"} {
		if code, _ := adminGet(t, admin, path, ""); code != 401 {
			t.Errorf("GET %s without the token: %d, want 401", path, code)
		}
		code, body := adminGet(t, admin, path, "first-token")
		if code != 200 {
			t.Errorf("GET %s with the token: %d %.200q", path, code, body)
		}
		if strings.Contains(body, "client-secret") {
			t.Errorf("GET %s shows a credential", path)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/proxy.pac"} {
		if code, body := adminGet(t, admin, path, ""); code != 200 {
			t.Errorf("GET %s without the token: %d %q", path, code, body)
		}
	}
	if _, body := adminGet(t, admin, "/api/flows/1", "first-token"); !strings.Contains(body, `"url":"`+o.URL+`/page"`) || !strings.Contains(body, "[REDACTED]") {
		t.Errorf("flow 1: %s", body)
	}
	if _, body := adminGet(t, admin, "/metrics", "first-token"); !strings.Contains(body, "http_server_request_duration_seconds_count") {
		t.Errorf("/metrics: %.300s", body)
	}
	// The proxy's own listener serves none of it.
	if code, _ := adminGet(t, addr, "/metrics", "first-token"); code == 200 {
		t.Error("the proxy listener serves /metrics")
	}

	// A reload reads the token file again.
	if err := os.WriteFile(tokenFile, []byte("second-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wantReloaded(t, reloadLines(t, logs, 1)[0])
	if code, _ := adminGet(t, admin, "/api/stats", "first-token"); code != 401 {
		t.Errorf("the old token after the reload: %d", code)
	}
	if code, _ := adminGet(t, admin, "/api/stats", "second-token"); code != 200 {
		t.Errorf("the new token after the reload: %d", code)
	}

	// A tunnel keeps the drain going; /readyz says so at once.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	io.WriteString(tc, "CONNECT "+echo+" HTTP/1.1\r\nHost: "+echo+"\r\n\r\n")
	br := bufio.NewReader(tc)
	if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	io.WriteString(tc, "hello")
	if _, err := io.ReadFull(br, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if code, body := adminGet(t, admin, "/readyz", ""); code != 200 {
		t.Fatalf("/readyz before SIGTERM: %d %q", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := adminGet(t, admin, "/readyz", "")
		if code == 503 && strings.Contains(body, "draining: shutting down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz while draining: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := adminGet(t, admin, "/healthz", ""); code != 200 {
		t.Errorf("/healthz while draining: %d", code)
	}
	tc.Close()
	done := make(chan error, 1)
	go func() { <-logs.done; done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("not stopped after the tunnel closed")
	}

	// The HAR file: both flows, valid, redacted.
	b, err := os.ReadFile(har)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeHAR(t, b)
	entries := m["log"].(map[string]any)["entries"].([]any)
	var requests []string
	for _, e := range entries {
		r := e.(map[string]any)["request"].(map[string]any)
		requests = append(requests, r["method"].(string)+" "+r["url"].(string))
	}
	want := []string{"GET " + o.URL + "/page", "GET http://" + addr + "/metrics", "CONNECT tcp://" + echo}
	if strings.Join(requests, ",") != strings.Join(want, ",") {
		t.Errorf("HAR entries %q, want %q: the GET, the request for the proxy itself, the CONNECT", requests, want)
	}
	if bytes.Contains(b, []byte("client-secret")) {
		t.Error("a credential in the HAR file")
	}
}

// TestAdminFlowSettings: -max-flows and -max-flow-bytes cap the ring the
// inspector shows, and -har-file-max-bytes rotates the HAR file, which
// still holds every flow (more than the ring keeps) across its files.
func TestAdminFlowSettings(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	dir := t.TempDir()
	har := filepath.Join(dir, "flows.har")
	cmd, logs := startLogged(t, bin, "-admin-listen", "127.0.0.1:0", "-max-flows", "2", "-max-flow-bytes", "1MiB",
		"-har-file", har, "-har-file-max-bytes", "2KiB")
	addr := logs.waitFor(t, textListen)
	admin := logs.waitFor(t, adminLine)
	c := proxyClient(t, addr)
	const n = 8
	for i := range n {
		resp, err := c.Get(o.URL + "/" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var list struct {
		Flows []struct {
			URL string `json:"url"`
		} `json:"flows"`
		State struct {
			Flows    int   `json:"flows"`
			MaxFlows int   `json:"max_flows"`
			MaxBytes int64 `json:"max_bytes"`
			Added    int   `json:"added"`
		} `json:"state"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // a flow is recorded as its request ends, just after the response
		_, body := adminGet(t, admin, "/api/flows", "")
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("/api/flows: %v: %s", err, body)
		}
		if list.State.Added == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := list.State; st.Flows != 2 || st.MaxFlows != 2 || st.MaxBytes != 1<<20 || st.Added != n ||
		len(list.Flows) != 2 || list.Flows[0].URL != o.URL+"/"+strconv.Itoa(n-1) {
		t.Errorf("/api/flows: %+v, want the newest 2 of %d under caps of 2 flows and 1 MiB", list, n)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { <-logs.done; done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("not stopped")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.har"))
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += len(decodeHAR(t, b)["log"].(map[string]any)["entries"].([]any))
	}
	if len(files) < 2 || total != n {
		t.Errorf("%d entries in %d HAR files %v, want all %d, rotated past 2 KiB", total, len(files), files, n)
	}
}

// decodeHAR decodes a HAR and checks its frame: a log of version 1.2 with
// an array of entries. The file is written by the library's HAR file
// writer, which internal/hartest checks against the HAR 1.2 schema (a
// module of its own, with the JSON-schema validator).
func decodeHAR(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, b)
	}
	log, _ := m["log"].(map[string]any)
	if _, ok := log["entries"].([]any); !ok || log["version"] != "1.2" {
		t.Fatalf("not a HAR 1.2 log:\n%s", b)
	}
	return m
}

// echoServer is a TCP echo server on loopback, closed with the test.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}
