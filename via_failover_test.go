package fwdproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// killableUpstream is a second fwdproxy that a test can kill (its
// listener and every connection closed at once, as when its process dies)
// and start again on the same address.
type killableUpstream struct {
	t    testing.TB
	name string // its Via pseudonym
	addr string

	mu     sync.Mutex
	p      *Proxy
	served chan error
}

func startKillable(t testing.TB, name string) *killableUpstream {
	k := &killableUpstream{t: t, name: name}
	k.start()
	t.Cleanup(k.kill)
	return k
}

// start serves a new Proxy on k's address (a free one the first time).
func (k *killableUpstream) start() {
	k.t.Helper()
	addr := k.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for range 50 { // the port may take a moment to be free again
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		k.t.Fatal(err)
	}
	k.addr = l.Addr().String()
	p, err := New(WithLogger(testLogger(k.t)), WithAllowPrivate(), allowAnyConnectPort(), WithVia(k.name))
	if err != nil {
		k.t.Fatal(err)
	}
	k.mu.Lock()
	k.p, k.served = p, make(chan error, 1)
	served := k.served
	k.mu.Unlock()
	go func() { served <- p.Serve(l) }()
}

// kill closes the Proxy's listener and connections without a drain.
func (k *killableUpstream) kill() {
	k.mu.Lock()
	p, served := k.p, k.served
	k.p = nil
	k.mu.Unlock()
	if p == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Shutdown(ctx)
	<-served
}

// upstreamState returns the Stats of the upstream called name.
func upstreamState(p *Proxy, name string) (UpstreamStats, bool) {
	for _, s := range p.Stats().Upstreams {
		if s.Name == name {
			return s, true
		}
	}
	return UpstreamStats{}, false
}

// waitFor polls cond every 5 ms for up to d and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestFailoverUnderLoad kills one of three upstreams in the middle of a
// steady load of GETs spread over them round robin: no request fails (the
// ones that met the dead upstream went to the next one), the dead upstream
// is marked down within a second, and after it is started again it serves
// its share again: passively (a trial request once its back-off has
// passed) and with WithUpstreamProbe (a probe finds it).
func TestFailoverUnderLoad(t *testing.T) {
	for _, probe := range []bool{false, true} {
		t.Run(fmt.Sprintf("probe=%v", probe), func(t *testing.T) {
			testFailoverUnderLoad(t, probe)
		})
	}
}

func testFailoverUnderLoad(t *testing.T, probe bool) {
	o := newChainOrigin(t)
	ups := []*killableUpstream{startKillable(t, "up-a"), startKillable(t, "up-b"), startKillable(t, "up-c")}
	specs := make([]string, len(ups))
	for i, k := range ups {
		specs[i] = "http://" + k.addr
	}
	opts := []Option{WithUpstreams(Route{Upstreams: specs, Policy: "round-robin"})}
	if probe {
		opts = append(opts, WithUpstreamProbe(100*time.Millisecond, ""))
	}
	tp := startProxy(t, opts...)
	victim := ups[1]
	victimName := "http://" + victim.addr

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		c := tp.client(t, nil)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(o.URL + "/load")
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || string(b) != "got /load") {
						err = fmt.Errorf("%d %q", resp.StatusCode, b)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	served := func() uint64 {
		s, _ := upstreamState(tp.Proxy, victimName)
		return s.Successes
	}
	if !waitFor(5*time.Second, func() bool { return ok.Load() > 300 && served() > 50 }) {
		t.Fatalf("the load did not reach every upstream: %d requests, %d through %s", ok.Load(), served(), victimName)
	}

	victim.kill()
	killed := time.Now()
	if !waitFor(time.Second, func() bool { s, _ := upstreamState(tp.Proxy, victimName); return !s.Up }) {
		s, _ := upstreamState(tp.Proxy, victimName)
		t.Errorf("%s not marked down within a second of its death: %+v", victimName, s)
	}
	t.Logf("marked down %v after the kill", time.Since(killed).Round(time.Millisecond))
	before := ok.Load()
	if !waitFor(5*time.Second, func() bool { return ok.Load() > before+300 }) {
		t.Fatalf("the load stalled after the kill: %d requests", ok.Load()-before)
	}

	victim.start()
	restarted := time.Now()
	base := served()
	if !waitFor(15*time.Second, func() bool {
		s, _ := upstreamState(tp.Proxy, victimName)
		return s.Up && served() > base+50
	}) {
		s, _ := upstreamState(tp.Proxy, victimName)
		t.Fatalf("%s not back in service 15 s after it returned: %+v", victimName, s)
	}
	t.Logf("back in service %v after it returned; %d requests, %d failed", time.Since(restarted).Round(time.Millisecond), ok.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d idempotent requests failed; the first: %v", n, firstErr.Load())
	}
}

// TestFailoverRules: what goes to the next upstream and what does not.
// The first upstream of a failover pool misbehaves in one way; a request
// of each kind either arrives through the second, or fails with the first
// one's error, by the rule: nothing sent yet, or idempotent and no
// response byte, and never a body that went out.
func TestFailoverRules(t *testing.T) {
	o := newChainOrigin(t)
	good := upstreamFwdproxy(t, "good-hop")
	goodSpec := "http://" + chainUser + ":" + chainPass + "@" + good.Addr
	// closes reads the whole request head (and a Content-Length body),
	// then closes without answering: the request went out, nothing came.
	closes := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err == nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
	})
	// halfAnswers sends the start of a status line, then closes.
	halfAnswers := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err == nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
		_, _ = io.WriteString(c, "HTTP/1.1 20")
	})
	wantsCreds := upstreamFwdproxy(t, "other-hop") // no credentials given: it answers 407
	refused := closedPort(t)

	cases := []struct {
		name       string
		first      string
		method     string
		body       string
		header     string
		wantStatus int // 200: through the second upstream
	}{
		{"refused connection, POST", "http://" + refused, "POST", "data", "", 200},
		{"407 from the first, GET", "http://" + wantsCreds.Addr, "GET", "", "", 200},
		{"407 from the first, POST whose body went out", "http://" + wantsCreds.Addr, "POST", "data", "", 502},
		{"sent, no answer, GET", "http://" + closes, "GET", "", "", 200},
		{"sent, no answer, PUT without a body", "http://" + closes, "PUT", "", "", 200},
		{"sent, no answer, POST", "http://" + closes, "POST", "", "", 502},
		{"sent, no answer, POST with Idempotency-Key", "http://" + closes, "POST", "", "Idempotency-Key: k1", 200},
		{"sent, no answer, PUT whose body went out", "http://" + closes, "PUT", "data", "", 502},
		{"a response byte came, GET", "http://" + halfAnswers, "GET", "", "", 502},
		{"a response byte came, GET by http.Transport", "http://" + halfAnswers, "GET", "", "Expect: 100-continue", 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, WithUpstreams(Route{Upstreams: []string{tc.first, goodSpec}}))
			req := tc.method + " " + o.URL + "/x HTTP/1.1\r\nHost: " + strings.TrimPrefix(o.URL, "http://") + "\r\n"
			if tc.header != "" {
				req += tc.header + "\r\n"
			}
			if tc.body != "" || tc.method == "POST" || tc.method == "PUT" {
				req += fmt.Sprintf("Content-Length: %d\r\n", len(tc.body))
			}
			status, body, _ := send(t, tp, req+"\r\n"+tc.body)
			if status != tc.wantStatus {
				t.Fatalf("%s: %d %q, want %d", tc.name, status, body, tc.wantStatus)
			}
			if status == 200 && !strings.Contains(o.lastVia(), "good-hop") {
				t.Errorf("not through the second upstream: Via %q", o.lastVia())
			}
			assertNoSecrets(t, "the answer", body)
		})
	}
}

// TestConnectFailover: a CONNECT goes to the next upstream until a
// tunnel is established: past a dead upstream and one that refuses the
// target; the dead one is marked down and goes last from then on.
func TestConnectFailover(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	good := upstreamFwdproxy(t, "good-hop")
	refusing := upstreamFwdproxy(t, "refusing-hop", WithDenyHosts("127.0.0.0/8"))
	dead := closedPort(t)
	creds := chainUser + ":" + chainPass + "@"
	tp := startProxy(t, WithUpstreams(Route{Upstreams: []string{"http://" + dead, "http://" + creds + refusing.Addr, "http://" + creds + good.Addr}}))
	for range 3 {
		c, br := tp.connect(t, echoAddr, "")
		echoThrough(t, c, br)
		c.Close()
	}
	s, _ := upstreamState(tp.Proxy, "http://"+dead)
	if s.Up || s.Failures != 1 {
		t.Errorf("dead upstream: %+v; want down after one failure (then tried last, after its back-off)", s)
	}
	if s, _ := upstreamState(tp.Proxy, "http://"+refusing.Addr); !s.Up || s.Refusals != 3 {
		t.Errorf("refusing upstream: %+v; want up, with 3 refusals", s)
	}
	quiesce(t, tp.Proxy)
	if s, _ := upstreamState(tp.Proxy, "http://"+good.Addr); s.Outstanding != 0 || s.Requests != 3 {
		t.Errorf("good upstream: %+v; want 3 tunnels, none outstanding once closed", s)
	}
}
