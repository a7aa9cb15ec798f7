package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type scenario struct {
	name, desc string
	tool       string // "wrk", or a loadgen mode: "tunnel", "https", "abs", "tunnels-idle", "conns-idle"
	path       string
	conns      int // load: connections or workers; idle: connections held
	intercept  bool
	bytes      bool // figures in MiB/s and CPU s per GiB, not req/s and CPU s per 10k requests
	close      bool // wrk sends Connection: close: a new connection per request
	// front is the proxy's front end the load goes through: "" (plain
	// HTTP/1.1), "tls" (HTTPS to the proxy), "socks", "h2c" or "h2" (CONNECT
	// streams on one HTTP/2 connection, cleartext or TLS). Only fwdproxy
	// has the others here.
	front string
	// tlsOrigin: abs requests for the origin's https URL, which the proxy
	// fetches over TLS itself.
	tlsOrigin bool
}

// idle reports whether s holds connections open rather than loading them
// (idle.go): its figures are memory per connection and setup rate.
func (s scenario) idle() bool { return s.tool == "tunnels-idle" || s.tool == "conns-idle" }

// unit is what an idle scenario holds: "tunnel" or "connection".
func (s scenario) unit() string {
	if s.tool == "tunnels-idle" {
		return "tunnel"
	}
	return "connection"
}

var scenarios = []scenario{
	{name: "small-c50", desc: "GET /small (100 B), 50 keep-alive connections, wrk", tool: "wrk", path: "/small", conns: 50},
	{name: "small-c1000", desc: "GET /small (100 B), 1000 keep-alive connections, wrk", tool: "wrk", path: "/small", conns: 1000},
	{name: "1m-c8", desc: "GET /1m (1 MiB), 8 keep-alive connections, wrk", tool: "wrk", path: "/1m", conns: 8, bytes: true},
	{name: "tunnel-c4", desc: "raw CONNECT tunnel to the origin's zero source, 4 connections reading, loadgen", tool: "tunnel", conns: 4, bytes: true},
	{name: "https-c50", desc: "HTTPS GET /small through CONNECT, 50 keep-alive HTTP/1.1 workers, loadgen", tool: "https", path: "/small", conns: 50},
	{name: "mitm-c50", desc: "intercepted HTTPS GET /small, 50 keep-alive HTTP/1.1 workers trusting the proxy's CA, loadgen", tool: "https", path: "/small", conns: 50, intercept: true},
	{name: "churn-c50", desc: "GET /small (100 B) with Connection: close, 50 connections: a new connection per request, wrk", tool: "wrk", path: "/small", conns: 50, close: true},
	{name: "tunnels-idle-1000", desc: "1000 idle CONNECT tunnels to the origin's echo sink, loadgen", tool: "tunnels-idle", conns: 1000},
	{name: "tunnels-idle-9000", desc: "9000 idle CONNECT tunnels to the origin's echo sink, loadgen", tool: "tunnels-idle", conns: 9000},
	{name: "conns-idle-1000", desc: "1000 idle keep-alive connections, one GET /small on each, loadgen", tool: "conns-idle", path: "/small", conns: 1000},
	{name: "conns-idle-9000", desc: "9000 idle keep-alive connections, one GET /small on each, loadgen", tool: "conns-idle", path: "/small", conns: 9000},

	// The front ends (issue 17): TLS to the proxy against TLS to the origin,
	// on the same client (absolute-form requests written by loadgen), and
	// tunnels through each front end.
	{name: "abs-c50", desc: "GET http://origin/small in absolute form, 50 keep-alive HTTP/1.1 workers, plain TCP to the proxy, loadgen", tool: "abs", path: "/small", conns: 50},
	{name: "abs-tlsorigin-c50", desc: "GET https://origin/small in absolute form (the proxy speaks TLS to the origin), 50 workers, plain TCP to the proxy, loadgen", tool: "abs", path: "/small", conns: 50, tlsOrigin: true},
	{name: "abs-tlsproxy-c50", desc: "GET http://origin/small in absolute form, 50 workers, TLS to the proxy (HTTPS listener, HTTP/1.1), loadgen", tool: "abs", path: "/small", conns: 50, front: "tls"},
	{name: "socks-tunnel-c4", desc: "SOCKS5 tunnel to the origin's zero source, 4 connections reading, loadgen", tool: "tunnel", conns: 4, bytes: true, front: "socks"},
	{name: "h2c-tunnel-s4", desc: "CONNECT tunnels to the zero source as 4 streams of one cleartext HTTP/2 connection, loadgen", tool: "tunnel", conns: 4, bytes: true, front: "h2c"},
	{name: "tls-tunnel-c4", desc: "CONNECT tunnels over TLS to the proxy (HTTP/1.1), 4 connections reading, loadgen", tool: "tunnel", conns: 4, bytes: true, front: "tls"},
	{name: "h2-tunnel-s4", desc: "CONNECT tunnels as 4 streams of one HTTP/2 connection over TLS to the proxy, loadgen", tool: "tunnel", conns: 4, bytes: true, front: "h2"},
}

// loadResult is the JSON line that both the wrk script and loadgen print.
type loadResult struct {
	Requests     int64   `json:"requests"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	StatusErrors int64   `json:"status_errors"`
	SocketErrors int64   `json:"socket_errors"`
	P50us        int64   `json:"p50_us"`
	P99us        int64   `json:"p99_us"`
	Error        string  `json:"error"`
}

// wrkDone is the wrk script's done hook; a done hook (unlike a response
// hook) costs nothing per request. wrk counts statuses >= 400 as status errors.
const wrkDone = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"bytes":%d,"seconds":%.6f,"status_errors":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.bytes, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
`

// load runs the load generator for s for d against proxy ("" for direct)
// and returns its result and the CPU seconds the load generator used.
func (h *harness) load(ctx context.Context, s scenario, proxy, ca string, d time.Duration, logFile string) (loadResult, float64, error) {
	var argv []string
	switch s.tool {
	case "wrk":
		script := filepath.Join(h.tmp, s.name+".lua")
		src, url := wrkDone, "http://"+h.originHTTP+s.path
		if proxy != "" { // absolute-form request line, Host of the origin, sent to the proxy
			src = fmt.Sprintf("wrk.path = %q\nwrk.headers[\"Host\"] = %q\n", url, h.originHTTP) + src
			url = "http://" + proxy + "/"
		}
		if s.close { // wrk reconnects after a response that closes
			src = "wrk.headers[\"Connection\"] = \"close\"\n" + src
		}
		if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
			return loadResult{}, 0, err
		}
		secs := max(1, int(math.Ceil(d.Seconds()))) // wrk takes whole seconds
		argv = []string{h.wrk, "-t", strconv.Itoa(min(h.loadThreads, s.conns)), "-c", strconv.Itoa(s.conns),
			"-d", strconv.Itoa(secs) + "s", "--timeout", "5s", "-s", script, url}
	case "tunnel", "https", "abs":
		argv = []string{filepath.Join(h.tmp, "loadgen"), "-mode", s.tool, "-c", strconv.Itoa(s.conns),
			"-duration", d.String(), "-proxy", proxy}
		if s.front != "" {
			argv = append(argv, "-front", s.front)
		}
		switch {
		case s.tool == "tunnel":
			argv = append(argv, "-target", h.originRaw, "-ca", h.proxyCert)
		case s.tool == "abs" && s.tlsOrigin:
			argv = append(argv, "-url", "https://"+h.originHTTPS+s.path, "-ca", h.proxyCert+","+h.originCert)
		case s.tool == "abs":
			argv = append(argv, "-url", "http://"+h.originHTTP+s.path, "-ca", h.proxyCert)
		default:
			cas := h.originCert
			if ca != "" {
				cas += "," + ca
			}
			argv = append(argv, "-url", "https://"+h.originHTTPS+s.path, "-ca", cas)
		}
	}
	p, err := h.procs.start(h.pinned(loadCPU, argv), os.Environ(), logFile)
	if err != nil {
		return loadResult{}, 0, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		h.procs.stop(p)
		return loadResult{}, 0, ctx.Err()
	case <-time.After(d + 30*time.Second):
		h.procs.stop(p)
		return loadResult{}, 0, fmt.Errorf("%s did not finish: %s", filepath.Base(argv[0]), p.tail())
	}
	h.procs.stop(p)
	st := p.cmd.ProcessState
	cpu := (st.UserTime() + st.SystemTime()).Seconds()
	if !st.Success() {
		return loadResult{}, cpu, fmt.Errorf("%s failed (%s): %s", filepath.Base(argv[0]), st, p.tail())
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		return loadResult{}, cpu, err
	}
	i := strings.LastIndex(string(b), "{\"requests\"")
	var r loadResult
	if i < 0 {
		return r, cpu, fmt.Errorf("no result from %s: %s", filepath.Base(argv[0]), p.tail())
	}
	return r, cpu, json.Unmarshal(b[i:], &r)
}

// probeKeepAlive sends two absolute-form requests on one connection to the
// proxy. It fails when a request is refused, and reports false when the proxy
// does not keep the client connection open between them.
func (h *harness) probeKeepAlive(proxy, path string) (bool, error) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		if _, err := fmt.Fprintf(c, "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n\r\n", h.originHTTP, path, h.originHTTP); err != nil {
			return false, nil
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if i > 0 {
				return false, nil
			}
			return false, fmt.Errorf("probe: %w", err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return false, fmt.Errorf("probe: %s %v", resp.Status, err)
		}
		if resp.Close {
			return false, nil
		}
	}
	return true, nil
}

// waitReady waits until the proxy accepts connections and, in intercept
// mode, has written its CA certificate.
func waitReady(p *proc, port int, ca string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("exited at start: %s", p.tail())
		}
		if c, err := net.DialTimeout("tcp", addr(port), time.Second); err == nil {
			c.Close()
			if _, err := os.Stat(ca); ca == "" || err == nil {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 15 s: %s", p.tail())
}
