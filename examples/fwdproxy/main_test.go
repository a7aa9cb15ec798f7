package main

import (
	"bufio"
	"context"
	"io"
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

	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-allow-private")
	cmd.Env = append(os.Environ(), "FWDPROXY_LOG_LEVEL=debug")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
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

	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr})}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(o.URL)
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
