package fwdproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// TestReloadUnderLoad is issue 15's promise: under a steady load of
// requests (a Go client loop and a wrk run) and 100 open tunnels moving
// bytes, 20 reloads alternating two configurations fail no request and cut
// no tunnel, and every request is judged by exactly one of the two.
//
// Configuration A denies b.test, B denies a.test, and each has its own Via
// pseudonym, so that every response names the configuration that judged
// it: a 200 carries the origin's echo of the host and of the Via it
// received ("a.test 1.1 conf-a"), a 403 the deny rule in its body and the
// judging configuration's Via in its header. A response is consistent when
// the configuration it names is one that would give it: a.test served by
// A or refused by B, b.test served by B or refused by A. Run it with -race.
func TestReloadUnderLoad(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		_, _ = io.WriteString(w, host+" "+r.Header.Get("Via"))
	})
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	_, echoPort, _ := net.SplitHostPort(tcpOrigin(t, "tcp", "127.0.0.1:0", echo))
	ds := dnstest.NewServer(t)
	ds.Add("a.test. 60 IN A 127.0.0.1", "b.test. 60 IN A 127.0.0.1")
	base := []Option{WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort(), WithDNSServers(ds.Addr())}
	confs := [2][]Option{
		append(append([]Option(nil), base...), WithDenyHosts("b.test"), WithVia("conf-a")),
		append(append([]Option(nil), base...), WithDenyHosts("a.test"), WithVia("conf-b")),
	}
	tp := startGuardedProxy(t, confs[0]...)

	// judge names the configuration that gave a response to host, or
	// reports the response as judged by none.
	judge := func(host string, status int, via, body string) (string, error) {
		switch {
		case status == 200 && host == "a.test" && body == "a.test 1.1 conf-a":
			return "A", nil
		case status == 200 && host == "b.test" && body == "b.test 1.1 conf-b":
			return "B", nil
		case status == 403 && host == "b.test" && via == "1.1 conf-a" && strings.Contains(body, "denied by rule b.test"):
			return "A", nil
		case status == 403 && host == "a.test" && via == "1.1 conf-b" && strings.Contains(body, "denied by rule a.test"):
			return "B", nil
		}
		return "", fmt.Errorf("%s: %d, Via %q, %q: judged by neither configuration", host, status, via, body)
	}

	// 100 tunnels, half to each host, opened under A: B refuses half of
	// them, A the other half, and none may be cut.
	const tunnels = 100
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var tunnelBytes atomic.Int64
	tunnelErrs := make(chan error, tunnels)
	openTunnels := func(host string, n int) {
		for range n {
			c, br := tp.connect(t, host+":"+echoPort, "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := bytes.Repeat([]byte(host), 128)
				buf := make([]byte, len(msg))
				for {
					select {
					case <-stop:
						return
					default:
					}
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					if _, err := c.Write(msg); err != nil {
						tunnelErrs <- fmt.Errorf("tunnel to %s: %w", host, err)
						return
					}
					if _, err := io.ReadFull(br, buf); err != nil || !bytes.Equal(buf, msg) {
						tunnelErrs <- fmt.Errorf("tunnel to %s: %v", host, err)
						return
					}
					tunnelBytes.Add(int64(2 * len(msg)))
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
	}
	openTunnels("a.test", tunnels/2) // allowed by A, refused by B
	if err := tp.Reload(confs[1]...); err != nil {
		t.Fatal(err)
	}
	openTunnels("b.test", tunnels/2) // allowed by B, refused by A

	// The Go client loop: two clients, alternating the hosts.
	var mu sync.Mutex
	seen := map[string]int{}
	var requests atomic.Int64
	for i := range 2 {
		cl := tp.client(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				host := []string{"a.test", "b.test"}[n%2]
				resp, err := cl.Get("http://" + host + ":" + port + "/")
				if err != nil {
					t.Errorf("a request failed: %v", err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Errorf("a response body failed: %v", err)
					return
				}
				conf, err := judge(host, resp.StatusCode, resp.Header.Get("Via"), string(body))
				if err != nil {
					t.Error(err)
					return
				}
				requests.Add(1)
				mu.Lock()
				seen[host+" "+strconv.Itoa(resp.StatusCode)+" by "+conf]++
				mu.Unlock()
			}
		}()
	}

	// wrk, alongside.
	wrkDone := make(chan string, 1)
	if path, err := exec.LookPath("wrk"); err != nil {
		t.Log("wrk is not installed: the wrk part of the load is skipped (apt-get install wrk)")
		wrkDone <- ""
	} else {
		script := filepath.Join(t.TempDir(), "reload.lua")
		if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkReloadScript, port)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(path, "-t1", "-c8", "-d4s", "--timeout", "10s", "-s", script, "http://"+tp.Addr+"/")
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("wrk: %v\n%s", err, out)
			}
			wrkDone <- string(out)
		}()
	}

	// 20 reloads, alternating, while all of it runs.
	time.Sleep(300 * time.Millisecond)
	for i := range 20 {
		if err := tp.Reload(confs[i%2]...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wrkOut := <-wrkDone
	close(stop)
	wg.Wait()
	close(tunnelErrs)
	for err := range tunnelErrs {
		t.Errorf("a tunnel was cut: %v", err)
	}

	s := tp.Stats()
	if s.Config.Generation != 22 || s.Config.Reloads != 21 || s.Config.FailedReloads != 0 {
		t.Errorf("Stats.Config = %+v, want generation 22 after 21 reloads", s.Config)
	}
	t.Logf("Go clients: %d requests %v; tunnels moved %d bytes", requests.Load(), seen, tunnelBytes.Load())
	for _, want := range []string{"a.test 200 by A", "a.test 403 by B", "b.test 200 by B", "b.test 403 by A"} {
		if seen[want] == 0 {
			t.Errorf("no response %q among the Go clients' (%v): the load did not span both configurations", want, seen)
		}
	}
	if wrkOut != "" {
		t.Logf("wrk:\n%s", wrkOut)
		m := regexp.MustCompile(`RESULT requests=(\d+) a=(\d+) b=(\d+) bad=(\d+) connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+) last=(.*)`).FindStringSubmatch(wrkOut)
		if m == nil {
			t.Fatalf("no RESULT line in wrk's output")
		}
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		if n(1) == 0 || n(2) == 0 || n(3) == 0 {
			t.Errorf("wrk: %d requests, %d judged by A, %d by B; want requests judged by both", n(1), n(2), n(3))
		}
		if n(4) != 0 {
			t.Errorf("wrk: %d responses judged by neither configuration (the last: %s)", n(4), m[9])
		}
		if errs := n(5) + n(6) + n(7) + n(8); errs != 0 {
			t.Errorf("wrk: %d socket errors (connect %d, read %d, write %d, timeout %d)", errs, n(5), n(6), n(7), n(8))
		}
	}
}

// wrkReloadScript is the wrk script of TestReloadUnderLoad: absolute-form
// GETs of a.test and b.test in turn (%[1]s is the origin's port), each
// response judged as the test's judge does, and a RESULT line at the end.
// wrk keeps one request in flight per connection, so a response is judged
// by what it says of its host, not by which request it answers.
const wrkReloadScript = `
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n, a, b, bad, last = 0, 0, 0, 0, ""
  reqs = {}
  for i, host in ipairs({"a.test", "b.test"}) do
    reqs[i] = wrk.format("GET", "http://" .. host .. ":%[1]s/", {["Host"] = host .. ":%[1]s"})
  end
end

function request()
  n = n + 1
  return reqs[n %% 2 + 1]
end

function response(status, headers, body)
  local via = headers["Via"] or headers["via"] or ""
  if status == 200 and body == "a.test 1.1 conf-a" then a = a + 1
  elseif status == 200 and body == "b.test 1.1 conf-b" then b = b + 1
  elseif status == 403 and via == "1.1 conf-a" and body:find("denied by rule b.test", 1, true) then a = a + 1
  elseif status == 403 and via == "1.1 conf-b" and body:find("denied by rule a.test", 1, true) then b = b + 1
  else
    bad = bad + 1
    last = status .. " " .. via .. " " .. body:gsub("\n", " ")
  end
end

function done(summary, latency, requests)
  local ta, tb, tbad, tlast = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ta = ta + t:get("a")
    tb = tb + t:get("b")
    tbad = tbad + t:get("bad")
    if t:get("last") ~= "" then tlast = t:get("last") end
  end
  local e = summary.errors
  io.write(string.format("RESULT requests=%%d a=%%d b=%%d bad=%%d connect=%%d read=%%d write=%%d timeout=%%d last=%%s\n",
    summary.requests, ta, tb, tbad, e.connect, e.read, e.write, e.timeout, tlast))
end
`
