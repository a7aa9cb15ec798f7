package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The idle modes hold many connections open and do nothing with them, so
// that the harness can measure what each costs the proxy:
//
//	-mode tunnels-idle: n CONNECT tunnels through -proxy to -target (the
//	                    origin's echo sink)
//	-mode conns-idle:   n keep-alive connections to -proxy, one GET of -url
//	                    on each
//
// The run is driven by the harness over stdin, one phase a line, and each
// phase reports one JSON line on stdout:
//
//	(start)   warm-up: -warm connections opened, checked and closed  → {"phase":"warm",…}
//	"open"    n connections opened, -parallel at a time              → {"phase":"open",…}
//	"check"   every open connection used once more (see idleCheck)   → {"phase":"check",…}
//	"close"   (or end of input) every connection closed; loadgen exits
//
// Between the phases nothing is sent: the connections are idle.

// idleOpTimeout bounds each connect, request or check; idlePhaseTimeout a
// whole phase: connections not yet tried when it passes count as errors.
const (
	idleOpTimeout    = 10 * time.Second
	idlePhaseTimeout = time.Minute
)

// idleReport is one phase's JSON line.
type idleReport struct {
	Phase   string  `json:"phase"`
	N       int     `json:"n"`       // connections the phase tried
	OK      int     `json:"ok"`      // opened (or, in check, passed)
	Refused int     `json:"refused"` // answered with a status other than 200
	Errors  int     `json:"errors"`  // connect, read or write failures, timeouts, wrong bytes back
	Closed  int     `json:"closed"`  // conns-idle: the proxy announced it would close after its response
	Seconds float64 `json:"seconds"` // wall time of the phase
	Error   string  `json:"error,omitempty"`
}

// idleConn is one held connection.
type idleConn struct {
	c      net.Conn
	closed bool // the proxy said it would close it (Connection: close)
}

type idleRun struct {
	tunnels         bool // tunnels-idle (else conns-idle)
	proxy, target   string
	url, host, path string // conns-idle: absolute URL, its host, and its path for direct
	parallel        int
}

// idleMain runs an idle mode; it returns the process's exit code.
func idleMain(mode, proxy, target, rawURL string, n, parallel, warm int) int {
	raiseNoFile()
	r := &idleRun{tunnels: mode == "tunnels-idle", proxy: proxy, target: target, parallel: max(1, parallel)}
	if r.tunnels && target == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -target required")
		return 2
	}
	if !r.tunnels {
		u, err := urlHostPath(rawURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 2
		}
		r.url, r.host, r.path = rawURL, u[0], u[1]
	}
	enc := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)

	w, rep := r.openAll(warm)
	rep.Phase = "warm"
	if len(w) > 0 {
		c := r.checkAll(w)
		rep.Errors += c.Errors + c.Refused
		if rep.Error == "" {
			rep.Error = c.Error
		}
	}
	closeAll(w)
	_ = enc.Encode(rep)

	var held []*idleConn
	for in.Scan() {
		switch in.Text() {
		case "open":
			var rep idleReport
			held, rep = r.openAll(n)
			rep.Phase = "open"
			_ = enc.Encode(rep)
		case "check":
			rep := r.checkAll(held)
			rep.Phase = "check"
			_ = enc.Encode(rep)
		case "close":
			closeAll(held)
			return 0
		default:
			fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n", in.Text())
			closeAll(held)
			return 2
		}
	}
	closeAll(held)
	return 0
}

// raiseNoFile raises the soft descriptor limit to the hard one (Go does so
// at start since 1.19; this says so explicitly and covers older builds).
func raiseNoFile() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// urlHostPath splits an http:// URL into its host and path.
func urlHostPath(raw string) ([2]string, error) {
	rest, ok := strings.CutPrefix(raw, "http://")
	if !ok {
		return [2]string{}, fmt.Errorf("-url %q: want http://host/path", raw)
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return [2]string{}, fmt.Errorf("-url %q: no host", raw)
	}
	return [2]string{host, "/" + path}, nil
}

// tally collects a phase's outcomes from its workers.
type tally struct {
	ok, refused, errors, closed atomic.Int64
	firstErr                    atomic.Pointer[string]
}

func (t *tally) fail(err error, refused bool) {
	if refused {
		t.refused.Add(1)
	} else {
		t.errors.Add(1)
	}
	s := err.Error()
	t.firstErr.CompareAndSwap(nil, &s)
}

func (t *tally) report(n int, d time.Duration) idleReport {
	rep := idleReport{N: n, OK: int(t.ok.Load()), Refused: int(t.refused.Load()), Errors: int(t.errors.Load()),
		Closed: int(t.closed.Load()), Seconds: d.Seconds()}
	if e := t.firstErr.Load(); e != nil {
		rep.Error = *e
	}
	return rep
}

// parallelDo runs f(i) for i in [0, n), r.parallel at a time, and returns
// how many it did not start because idlePhaseTimeout had passed.
func (r *idleRun) parallelDo(n int, f func(i int)) (skipped int) {
	var next, skip atomic.Int64
	deadline := time.Now().Add(idlePhaseTimeout)
	var wg sync.WaitGroup
	for range min(r.parallel, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if time.Now().After(deadline) {
					skip.Add(1)
					continue
				}
				f(i)
			}
		})
	}
	wg.Wait()
	return int(skip.Load())
}

// openAll opens n connections; the failed ones are left out.
func (r *idleRun) openAll(n int) ([]*idleConn, idleReport) {
	conns := make([]*idleConn, n)
	var t tally
	start := time.Now()
	skipped := r.parallelDo(n, func(i int) {
		ic, refused, err := r.open()
		if err != nil {
			t.fail(err, refused)
			return
		}
		t.ok.Add(1)
		if ic.closed {
			t.closed.Add(1)
		}
		conns[i] = ic
	})
	rep := t.report(n, time.Since(start))
	rep.Errors += skipped
	held := conns[:0]
	for _, c := range conns {
		if c != nil {
			held = append(held, c)
		}
	}
	return held, rep
}

// open makes one connection: a tunnel (CONNECT, 200) or a keep-alive
// connection that has served one request. refused reports a proxy's answer
// other than 200.
func (r *idleRun) open() (ic *idleConn, refused bool, err error) {
	addr := r.proxy
	if addr == "" {
		addr = r.target
		if !r.tunnels {
			addr = r.host
		}
	}
	c, err := net.DialTimeout("tcp", addr, idleOpTimeout)
	if err != nil {
		return nil, false, err
	}
	_ = c.SetDeadline(time.Now().Add(idleOpTimeout))
	ic = &idleConn{c: c}
	switch {
	case r.tunnels && r.proxy != "":
		refused, err = r.connect(c)
	case !r.tunnels:
		ic.closed, refused, err = r.get(c)
	}
	if err != nil {
		c.Close()
		return nil, refused, err
	}
	_ = c.SetDeadline(time.Time{})
	return ic, false, nil
}

// connect sends CONNECT and reads the answer; the response must end where
// the tunnel begins (the sink says nothing first).
func (r *idleRun) connect(c net.Conn) (refused bool, err error) {
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", r.target, r.target); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return false, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	if br.Buffered() > 0 {
		return false, fmt.Errorf("CONNECT: %d unexpected bytes after the 200", br.Buffered())
	}
	return false, nil
}

// get sends one GET and reads its response; closed reports that the proxy
// said it would close the connection after it.
func (r *idleRun) get(c net.Conn) (closed, refused bool, err error) {
	target := r.url
	if r.proxy == "" {
		target = r.path
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, r.host); err != nil {
		return false, false, err
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Close, true, fmt.Errorf("GET: %s", resp.Status)
	}
	if br.Buffered() > 0 {
		return false, false, fmt.Errorf("GET: %d unexpected bytes after the response", br.Buffered())
	}
	return resp.Close, false, nil
}

// checkAll uses every held connection once more: a tunnel echoes 8 bytes
// back from the sink, a keep-alive connection answers a second GET.
func (r *idleRun) checkAll(conns []*idleConn) idleReport {
	var t tally
	start := time.Now()
	skipped := r.parallelDo(len(conns), func(i int) {
		c := conns[i].c
		_ = c.SetDeadline(time.Now().Add(idleOpTimeout))
		var err error
		refused := false
		if r.tunnels {
			err = echo(c, i)
		} else {
			_, refused, err = r.get(c)
		}
		_ = c.SetDeadline(time.Time{})
		if err != nil {
			t.fail(err, refused)
			return
		}
		t.ok.Add(1)
	})
	rep := t.report(len(conns), time.Since(start))
	rep.Errors += skipped
	return rep
}

// echo sends an 8-byte token through a tunnel and expects it back.
func echo(c net.Conn, i int) error {
	var tok, got [8]byte
	copy(tok[:], fmt.Sprintf("%08d", i%100000000))
	if _, err := c.Write(tok[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if got != tok {
		return errors.New("echo: wrong bytes back: " + strconv.Quote(string(got[:])))
	}
	return nil
}

func closeAll(conns []*idleConn) {
	for _, c := range conns {
		c.c.Close()
	}
}
