package main

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var serving = regexp.MustCompile(`forward proxy on (\S+)`)

// TestShutdownWaitsForRequests runs the example, sends a request that takes
// a second through it and SIGTERM or SIGINT while the request runs: the
// request gets its whole answer and the process exits cleanly, after saying
// it stopped.
func TestShutdownWaitsForRequests(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "embed")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				time.Sleep(time.Second)
				_, _ = io.WriteString(w, "slow but whole")
			}))
			defer o.Close()

			cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-allow-private")
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill() }()
			var mu sync.Mutex
			var lines []string
			addrc := make(chan string, 1)
			copied := make(chan struct{})
			go func() {
				defer close(copied)
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					mu.Lock()
					lines = append(lines, sc.Text())
					mu.Unlock()
					if m := serving.FindStringSubmatch(sc.Text()); m != nil {
						addrc <- m[1]
					}
				}
			}()
			var addr string
			select {
			case addr = <-addrc:
			case <-time.After(10 * time.Second):
				t.Fatal("no line saying where the example listens")
			}

			tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr})}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			type result struct {
				body string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := c.Get(o.URL)
				if err != nil {
					res <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				res <- result{string(b), err}
			}()
			<-arrived
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if r := <-res; r.err != nil || r.body != "slow but whole" {
				t.Errorf("request in flight at %v: body %q, error %v", sig, r.body, r.err)
			}
			done := make(chan error, 1)
			go func() { <-copied; done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exit after %v: %v", sig, err)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("not stopped 15 s after %v", sig)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := strings.Join(lines, "\n"); !strings.Contains(got, "stopped") {
				t.Errorf("log does not end with the stop:\n%s", got)
			}
		})
	}
}
