package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopSignalsDrain: each stop signal, SIGHUP included, lets a request
// in flight finish with its whole body, logs which signal it was, and ends
// the process with status 0.
func TestStopSignalsDrain(t *testing.T) {
	bin := build(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				time.Sleep(time.Second) // the signal comes while this request runs
				_, _ = io.WriteString(w, "slow but whole")
			}))
			defer o.Close()
			cmd, logs := startLogged(t, bin)
			addr := logs.waitFor(t, textListen)

			type result struct {
				body string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := proxyClient(t, addr).Get(o.URL)
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
			r := <-res
			if r.err != nil || r.body != "slow but whole" {
				t.Errorf("request in flight at %v: body %q, error %v", sig, r.body, r.err)
			}
			done := make(chan error, 1)
			go func() { <-logs.done; done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exit after %v: %v", sig, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("not stopped 10 s after %v", sig)
			}
			want := regexp.MustCompile(`msg="shutting down" signal=(` + signalName(sig) + `) `)
			logs.waitFor(t, want)
		})
	}
}

// TestEnvironment: FWDPROXY_ variables set flags, switches take the words
// people write in environment files, a bad value names the variable and what
// it accepts, and a variable that names no flag is reported, with the one it
// was probably meant to be.
func TestEnvironment(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)

	t.Run("switch words", func(t *testing.T) {
		for _, v := range []string{"yes", "on", "1", "TRUE"} {
			cmd, logs := startLoggedEnv(t, bin, []string{"FWDPROXY_ALLOW_PRIVATE=" + v})
			addr := logs.waitFor(t, textListen)
			if got := get(t, proxyClient(t, addr), o.URL); got != "hello" {
				t.Errorf("FWDPROXY_ALLOW_PRIVATE=%s: got %q", v, got)
			}
			stop(t, cmd, logs)
		}
	})
	t.Run("switch off", func(t *testing.T) {
		cmd, logs := startLoggedEnv(t, bin, []string{"FWDPROXY_ALLOW_PRIVATE=no"})
		addr := logs.waitFor(t, textListen)
		resp, err := proxyClient(t, addr).Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("FWDPROXY_ALLOW_PRIVATE=no: status %d, want 403", resp.StatusCode)
		}
		stop(t, cmd, logs)
	})
	t.Run("unknown variable", func(t *testing.T) {
		cmd, logs := startLoggedEnv(t, bin, []string{"FWDPROXY_ALOW_PRIVATE=1", "FWDPROXY_NO_SUCH_THING=1"}, "-allow-private")
		logs.waitFor(t, regexp.MustCompile(`msg="unknown environment variable ignored" name=FWDPROXY_ALOW_PRIVATE did_you_mean=(FWDPROXY_ALLOW_PRIVATE)`))
		logs.waitFor(t, regexp.MustCompile(`msg="unknown environment variable ignored" name=(FWDPROXY_NO_SUCH_THING) help=`))
		stop(t, cmd, logs)
	})
	t.Run("bad values", func(t *testing.T) {
		for _, tc := range []struct{ env, want string }{
			{"FWDPROXY_ALLOW_PRIVATE=maybe", `FWDPROXY_ALLOW_PRIVATE="maybe": want true or false (also 1/0, yes/no, on/off)`},
			{"FWDPROXY_DNS_SERVER=1.1.1.1,", `FWDPROXY_DNS_SERVER="1.1.1.1,": empty item`},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), tc.env)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), tc.want) {
				t.Errorf("%s: exit %d, output %q; want 1 and %q", tc.env, code, out, tc.want)
			}
			cancel()
		}
	})
}

// TestREADMEShutdownGrace: the README states the grace the code gives.
func TestREADMEShutdownGrace(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := strings.Join(strings.Fields(string(b)), " ")
	for _, want := range []string{
		fmt.Sprintf("in flight get %d seconds to finish", shutdownGrace/time.Second),
		fmt.Sprintf("gone %d seconds after the signal at most", (shutdownGrace+flushGrace)/time.Second),
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README does not say %q", want)
		}
	}
}
