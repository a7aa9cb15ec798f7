//go:build linux

package fwdproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"weak"
)

// Parked tunnels (tunnelpark_linux.go), through Serve with real sockets.

// tunnelGoroutines counts the goroutines serving tunnels: running
// directions of parked tunnels, tunnels relayed by their handler, and
// handlers still in serveConnect.
func tunnelGoroutines() int {
	buf := make([]byte, 16<<20)
	s := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(s, "fwdproxy.(*tunnelDir).run(") + strings.Count(s, "fwdproxy.(*tunnelDir).Wake(") +
		strings.Count(s, "fwdproxy.(*tunnel).pump(") + strings.Count(s, "fwdproxy.(*Proxy).serveConnect(")
}

// waitParked waits until no goroutine serves a tunnel.
func waitParked(t testing.TB) {
	t.Helper()
	eventually(t, "every tunnel parked (no goroutine)", func() bool { return tunnelGoroutines() == 0 })
}

type openTunnel struct {
	c  net.Conn
	br *bufio.Reader
}

func openTunnels(t testing.TB, tp *testProxy, target string, n int) []openTunnel {
	t.Helper()
	tuns := make([]openTunnel, n)
	for i := range tuns {
		tuns[i].c, tuns[i].br = tp.connect(t, target, "")
	}
	return tuns
}

// echoed writes msg to a tunnel to an echo origin and reads it back.
func (o openTunnel) echoed(msg string) error {
	_ = o.c.SetDeadline(time.Now().Add(5 * time.Second))
	defer o.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(o.c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(o.br, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// TestParkedTunnelsWake: a few hundred idle tunnels hold no goroutine;
// each wakes for bytes, one at a time and all at once, after idle spells
// longer than the linger, and parks again; Stats counts them open
// throughout, and none once closed.
func TestParkedTunnelsWake(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	const n = 300
	tuns := openTunnels(t, tp, addr, n)
	waitParked(t)
	if got := tp.Stats().ActiveTunnels; got != n {
		t.Errorf("ActiveTunnels = %d, want %d", got, n)
	}
	for round := range 3 {
		time.Sleep(2 * parkLinger)
		if round < 2 {
			for i, o := range tuns {
				if err := o.echoed(fmt.Sprintf("round %d tunnel %d", round, i)); err != nil {
					t.Fatalf("round %d tunnel %d: %v", round, i, err)
				}
			}
		} else { // all at once
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i, o := range tuns {
				wg.Go(func() {
					if err := o.echoed("burst " + strconv.Itoa(i)); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		}
		waitParked(t)
	}
	if got := tp.Stats().ActiveTunnels; got != n {
		t.Errorf("ActiveTunnels = %d, want %d", got, n)
	}
	for _, o := range tuns {
		o.c.Close()
	}
	quiesce(t, tp.Proxy)
}

// rchar is the bytes this process has read through read(2) and the like
// (/proc/self/io); splice(2) does not count.
func rchar(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

// TestParkedTunnelSplices: a parked tunnel woken by a large body moves it
// with splice, both ways: the process reads (read(2)) only what the test's
// own ends read, not the body a second time in the proxy. The body's
// bytes arrive intact.
func TestParkedTunnelSplices(t *testing.T) {
	const size = 64 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	want := sha256.Sum256(body)
	start := make(chan struct{})
	gotUp := make(chan [32]byte, 1)
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		<-start
		_, _ = c.Write(body) // down: origin → client
		h := sha256.New()
		_, _ = io.Copy(h, c) // up: client → origin, until the client's FIN
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		gotUp <- sum
		c.Close()
	})
	tp := startProxy(t)
	c, br := tp.connect(t, addr, "")
	waitParked(t)
	before := rchar(t)
	close(start)
	h := sha256.New()
	if _, err := io.CopyN(h, br, size); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the body down arrived changed")
	}
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if got := <-gotUp; got != want {
		t.Fatal("the body up arrived changed")
	}
	// The two ends read 2 × size; a proxy copying through user space would
	// read as much again.
	if extra := rchar(t) - before - 2*size; extra > size/8 {
		t.Errorf("%d bytes read(2) besides the two ends' %d: the tunnel did not splice", extra, 2*size)
	}
	c.Close()
	quiesce(t, tp.Proxy)
}

// TestParkedTunnelHalfClose: a FIN from either side while the tunnel is
// parked reaches the other, which can still send the other way.
func TestParkedTunnelHalfClose(t *testing.T) {
	t.Run("client first", func(t *testing.T) {
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			fmt.Fprintf(c, "got %d bytes", n)
		})
		tp := startProxy(t)
		c, br := tp.connect(t, addr, "12345")
		waitParked(t)
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(br)
		if err != nil || string(b) != "got 5 bytes" {
			t.Fatalf("after the client's half-close: %q, %v", b, err)
		}
		c.Close()
		quiesce(t, tp.Proxy)
	})
	t.Run("origin first", func(t *testing.T) {
		got := make(chan string, 1)
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			_, _ = io.WriteString(c, "bye")
			_ = c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			got <- string(b)
		})
		tp := startProxy(t)
		c, br := tp.connect(t, addr, "")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(br)
		if err != nil || string(b) != "bye" {
			t.Fatalf("from the half-closed origin: %q, %v", b, err)
		}
		waitParked(t)
		time.Sleep(2 * parkLinger)
		mustWrite(t, c, "still here")
		_ = c.(*net.TCPConn).CloseWrite()
		if s := <-got; s != "still here" {
			t.Fatalf("the origin got %q after its half-close", s)
		}
		c.Close()
		quiesce(t, tp.Proxy)
	})
}

// TestParkedTunnelIdleTimeout: a parked tunnel is closed after the idle
// timeout; one whose other direction keeps moving bytes is not, though
// the direction that stays parked sees its deadline pass; one whose
// client stops reading (a direction blocked writing, the other ended) is
// closed too.
func TestParkedTunnelIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	t.Run("quiet", func(t *testing.T) {
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
		tp := startProxy(t, WithTunnelIdleTimeout(idle))
		o := openTunnels(t, tp, addr, 1)[0]
		if err := o.echoed("ping"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = o.c.SetReadDeadline(time.Now().Add(promptly))
		if _, err := o.br.ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("read from an idle tunnel: %v, want it closed", err)
		}
		if d := time.Since(start); d < idle-50*time.Millisecond {
			t.Errorf("closed after %v, before the idle timeout %v", d, idle)
		}
		quiesce(t, tp.Proxy)
	})
	t.Run("one way busy", func(t *testing.T) {
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			for i := range 30 { // 1.5 s of a byte every 50 ms, nothing read
				if _, err := c.Write([]byte{byte('a' + i%26)}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			c.Close()
		})
		tp := startProxy(t, WithTunnelIdleTimeout(idle))
		c, br := tp.connect(t, addr, "")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(br)
		if err != nil || len(b) != 30 {
			t.Fatalf("a tunnel busy one way: %d bytes, %v; want all 30 and the origin's close", len(b), err)
		}
		c.Close()
		quiesce(t, tp.Proxy)
	})
	t.Run("client not reading", func(t *testing.T) {
		addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			_, _ = c.Write(make([]byte, 64<<20)) // more than the sockets hold
			c.Close()
		})
		tp := startProxy(t, WithTunnelIdleTimeout(idle))
		c, _ := tp.connect(t, addr, "")
		// The client's half-close ends the other direction: only the one
		// blocked writing to the client is left to notice the timeout.
		_ = c.(*net.TCPConn).CloseWrite()
		eventually(t, "the stalled tunnel closed", func() bool { return tp.Stats().ActiveTunnels == 0 })
		c.Close()
		quiesce(t, tp.Proxy)
	})
}

// TestParkedTunnelWakesAtOnce: a parked tunnel with an hour's idle timeout,
// quiet for many lingers while other tunnels come, time out and go, moves
// bytes as soon as they come: its wake is an event, not a poll whose
// period is a fraction of its timeout.
func TestParkedTunnelWakesAtOnce(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t, WithTunnelIdleTimeout(time.Hour))
	long := openTunnels(t, tp, addr, 1)[0]
	if err := tp.Reload(WithLogger(testLogger(t)), WithAllowPrivate(), allowAnyConnectPort(), WithTunnelIdleTimeout(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		short := openTunnels(t, tp, addr, 5)
		eventually(t, "the short tunnels timed out", func() bool { return tp.Stats().ActiveTunnels == 1 })
		for _, o := range short {
			o.c.Close()
		}
	}
	waitParked(t)
	for i := range 3 {
		time.Sleep(4 * parkLinger)
		start := time.Now()
		if err := long.echoed("after a long quiet " + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("the parked tunnel took %v to move bytes", d)
		}
	}
	long.c.Close()
	quiesce(t, tp.Proxy)
}

// TestParkedTunnelShutdown: Shutdown closes parked tunnels at its
// deadline and returns once they have ended; each gets its end (Stats).
func TestParkedTunnelShutdown(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	sp := serveProxy(t)
	tuns := openTunnels(t, sp.testProxy, addr, 50)
	waitParked(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sp.shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with parked tunnels = %v, want the deadline", err)
	}
	if d := time.Since(start); d > promptly {
		t.Errorf("Shutdown took %v", d)
	}
	for i, o := range tuns {
		_ = o.c.SetReadDeadline(time.Now().Add(promptly))
		if _, err := o.br.ReadByte(); err == nil || isTimeout(err) {
			t.Errorf("tunnel %d after Shutdown: %v, want closed", i, err)
		}
	}
	if s := sp.Stats(); s.ActiveTunnels != 0 || s.ActiveRequests != 0 {
		t.Errorf("after Shutdown: %d tunnels, %d requests active", s.ActiveTunnels, s.ActiveRequests)
	}
}

// TestReloadClosesDeniedParkedTunnel: a Reload with
// WithReloadClosesDeniedTunnels closes a parked tunnel its rules refuse,
// and the allowed one keeps moving bytes.
func TestReloadClosesDeniedParkedTunnel(t *testing.T) {
	var logs logCapture
	e := newReloadEnv(t, logs.logger(), WithAllowPrivate(), allowAnyConnectPort())
	var tuns [2]openTunnel
	for i, host := range []string{"a.test", "b.test"} {
		tuns[i].c, tuns[i].br = e.tp.connect(t, host+":"+e.echo, "")
		if err := tuns[i].echoed("before"); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t)
	e.reload(t, WithAllowPrivate(), allowAnyConnectPort(), WithDenyHosts("b.test"), WithReloadClosesDeniedTunnels())
	logs.wantLogged(t, "tunnel closed by reload", "target=b.test:"+e.echo)
	_ = tuns[1].c.SetReadDeadline(time.Now().Add(promptly))
	if _, err := tuns[1].br.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("the denied tunnel: %v, want closed", err)
	}
	if err := tuns[0].echoed("after"); err != nil {
		t.Errorf("the allowed tunnel after the reload: %v", err)
	}
	for _, o := range tuns {
		o.c.Close()
	}
	quiesce(t, e.tp.Proxy)
}

// TestParkedTunnelRecord: a parked tunnel's access record comes once, when
// it ends, with the fields of a tunnel a handler relays: the same as an
// upgraded connection's, but for the status and the URL.
func TestParkedTunnelRecord(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	var buf syncBuffer
	tp := startProxy(t, WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	c, br := tp.rawConn(t)
	mustWrite(t, c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: parked-test/1\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	o := openTunnel{c, br}
	if err := o.echoed("12345"); err != nil {
		t.Fatal(err)
	}
	waitParked(t)
	time.Sleep(2 * parkLinger)
	if n := strings.Count(buf.String(), `"msg":"tunnel"`); n != 0 {
		t.Fatalf("%d tunnel records while the tunnel is open", n)
	}
	if err := o.echoed("678"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	quiesce(t, tp.Proxy)
	rec := records(t, &buf, "tunnel", 1)[0]
	want := map[string]any{"method": "CONNECT", "target": addr, "proto": "HTTP/1.1", "status": float64(200),
		"bytes_in": float64(8), "bytes_out": float64(8), "upstream": addr, "user": "", "user_agent": "parked-test/1"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("record %s = %v, want %v", k, rec[k], v)
		}
	}
	for _, k := range []string{"duration_s", "client", "time", "level"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("record has no %s: %v", k, rec)
		}
	}
	if len(rec) != len(want)+5 { // + duration_s, client, time, level, msg
		t.Errorf("record fields: %v", rec)
	}
}

// TestParkedTunnelKeepsNoRequest: once a CONNECT's tunnel has parked, its
// handler's *http.Request can be collected, whatever its end needs; with
// the access log alone (the example server's default) its reqState can be
// too, the record keeping a few values instead (tunnelRecord); and the
// record the tunnel's end writes from them is whole. With a flow recorded
// the state stays (reqState.detach: the flow needs the header).
func TestParkedTunnelKeepsNoRequest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		level      slog.Level
		admin      bool
		stateGoes  bool
		wantRecord bool
		user       string // authenticated (Basic)
	}{
		{name: "access log", level: slog.LevelInfo, stateGoes: true, wantRecord: true},
		{name: "access log, a user", level: slog.LevelInfo, stateGoes: true, wantRecord: true, user: "alice"},
		{name: "log off", level: slog.LevelWarn, stateGoes: true},
		{name: "flow recorded", level: slog.LevelWarn, admin: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
			var buf syncBuffer
			var req weak.Pointer[http.Request]
			var state weak.Pointer[reqState]
			hook := WithConnectHook(func(ctx context.Context, target string, r *http.Request) error {
				req, state = weak.Make(r), weak.Make(reqStateFrom(r.Context()))
				return nil
			})
			opts := []Option{WithLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tc.level}))), hook}
			auth := ""
			if tc.user != "" {
				opts = append(opts, WithBasicAuth(func(_ context.Context, user, pass string) bool { return user == tc.user && pass == "pw" }))
				auth = "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tc.user+":pw")) + "\r\n"
			}
			tp := startProxy(t, opts...)
			if tc.admin {
				openAdmin(t, tp.Proxy, AdminOptions{})
			}
			c, br := tp.rawConn(t)
			mustWrite(t, c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: keeps-nothing/1\r\n"+auth+"\r\n")
			if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			o := openTunnel{c, br}
			if err := o.echoed("12345"); err != nil {
				t.Fatal(err)
			}
			waitParked(t)
			hadState := state.Value() != nil
			gone := func(what string, p func() bool) {
				t.Helper()
				eventually(t, what+" collected while the tunnel is parked", func() bool {
					runtime.GC()
					return p()
				})
			}
			gone("the CONNECT's *http.Request", func() bool { return req.Value() == nil })
			switch {
			case tc.stateGoes:
				gone("its reqState", func() bool { return state.Value() == nil })
			case hadState:
				runtime.GC()
				if state.Value() == nil {
					t.Error("the reqState of a recorded flow is gone while the tunnel is parked: what keeps it?")
				}
			default:
				t.Error("no reqState for a recorded flow")
			}
			if err := o.echoed("678"); err != nil {
				t.Fatal(err)
			}
			c.Close()
			quiesce(t, tp.Proxy)
			if !tc.wantRecord {
				return
			}
			rec := records(t, &buf, "tunnel", 1)[0]
			for k, v := range map[string]any{"method": "CONNECT", "target": addr, "proto": "HTTP/1.1", "status": float64(200),
				"bytes_in": float64(8), "bytes_out": float64(8), "upstream": addr, "user_agent": "keeps-nothing/1", "user": tc.user} {
				if rec[k] != v {
					t.Errorf("record %s = %v, want %v", k, rec[k], v)
				}
			}
		})
	}
}

// TestParkedTunnelsBurstNearFDLimit wakes many parked tunnels at once with
// the process a few descriptors short of its limit: the directions that
// cannot have a pipe copy through buffers instead, and every tunnel moves
// its bytes. It runs in a child process, whose descriptor limit it
// lowers.
func TestParkedTunnelsBurstNearFDLimit(t *testing.T) {
	if os.Getenv("FWDPROXY_TEST_FDLIMIT_CHILD") == "1" {
		burstNearFDLimit(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestParkedTunnelsBurstNearFDLimit$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "FWDPROXY_TEST_FDLIMIT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestParkedTunnelsBurstNearFDLimit") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "pipes could not be had") {
		t.Fatalf("the child never ran short of descriptors:\n%s", out)
	}
}

func burstNearFDLimit(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	const n = 200
	tuns := openTunnels(t, tp, addr, n)
	waitParked(t)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	low := old
	low.Cur = uint64(len(ents) + 6) // three pipes at most
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()
	if _, err := tp.pipes.get(); err == nil {
		// Three may come; then none.
		for range 3 {
			_, _ = tp.pipes.get()
		}
	}
	if _, err := tp.pipes.get(); err != nil {
		t.Logf("pipes could not be had: %v", err)
	}
	msg := strings.Repeat("x", 100<<10) // more than one buffer's worth each way
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, o := range tuns {
		wg.Go(func() {
			if err := o.echoed(msg); err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	restore()
	for _, o := range tuns {
		o.c.Close()
	}
	quiesce(t, tp.Proxy)
}

// TestParkedTunnelBytes moves random bytes both ways at once, in bursts
// with pauses longer than the linger between some, so that the directions
// park and wake mid-stream; every byte arrives, in order.
func TestParkedTunnelBytes(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	const tunnels = 8
	var wg sync.WaitGroup
	for i := range tunnels {
		o := openTunnels(t, tp, addr, 1)[0]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			var sent, got bytes.Buffer
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				for got.Len() < 4<<20 {
					n, err := o.br.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for sent.Len() < 4<<20 {
				chunk := make([]byte, 1+rng.IntN(256<<10))
				for j := range chunk {
					chunk[j] = byte(rng.Uint32())
				}
				chunk = chunk[:min(len(chunk), 4<<20-sent.Len())]
				if _, err := o.c.Write(chunk); err != nil {
					t.Error(err)
					return
				}
				sent.Write(chunk)
				if rng.IntN(8) == 0 {
					time.Sleep(parkLinger + 50*time.Millisecond)
				}
			}
			if err := <-done; err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(sent.Bytes(), got.Bytes()) {
				t.Errorf("tunnel %d: the bytes echoed differ from those sent", i)
			}
			o.c.Close()
		})
	}
	wg.Wait()
	quiesce(t, tp.Proxy)
}

// TestParkedTunnelThroughUpstream: a tunnel dialed through an upstream
// proxy (via.go) over plain TCP is parked like a direct one, moves bytes
// after it woke, and stays outstanding on its upstream until it is
// closed, then no longer.
func TestParkedTunnelThroughUpstream(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	up := upstreamFwdproxy(t, "hop")
	name := "http://" + up.Addr
	tp := startProxy(t, WithUpstreams(Route{Upstreams: []string{"http://" + chainUser + ":" + chainPass + "@" + up.Addr}}))
	tuns := openTunnels(t, tp, echoAddr, 3)
	for _, o := range tuns {
		if err := o.echoed("before"); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t)
	tp.mu.Lock()
	for tun := range tp.tunnels {
		pt, ok := tun.(*parkedTunnel)
		if !ok {
			t.Errorf("a %T in the registry, want every tunnel parked", tun)
		} else if pt.via[1] == nil {
			t.Error("a parked tunnel through the upstream does not know its viaConn")
		}
	}
	tp.mu.Unlock()
	if s, ok := upstreamState(tp.Proxy, name); !ok || s.Outstanding != 3 {
		t.Errorf("upstream %s: %+v (found %v), want 3 outstanding", name, s, ok)
	}
	for _, o := range tuns {
		if err := o.echoed("after"); err != nil {
			t.Errorf("after parking: %v", err)
		}
	}
	for _, o := range tuns {
		o.c.Close()
	}
	eventually(t, "no tunnel outstanding once closed", func() bool {
		s, _ := upstreamState(tp.Proxy, name)
		return s.Outstanding == 0
	})
	quiesce(t, tp.Proxy)
}

// TestParkedTunnelFlow: an open Admin records a parked tunnel once, when
// it ends (nothing while it is parked), with the bytes it moved before and
// after parking, the CONNECT's protocol and header (User-Agent and a field
// of its own, without authentication configured: a parked tunnel keeps
// the header for the record), and the same Stats as a tunnel a handler
// relays.
func TestParkedTunnelFlow(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t)
	_, srv := openAdmin(t, tp.Proxy, AdminOptions{})
	c, br := tp.rawConn(t)
	mustWrite(t, c, "CONNECT "+echoAddr+" HTTP/1.1\r\nHost: "+echoAddr+"\r\nUser-Agent: park-test\r\nX-Flow: kept\r\n\r\n")
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	o := openTunnel{c: c, br: br}
	if err := o.echoed("before"); err != nil {
		t.Fatal(err)
	}
	waitParked(t)
	connectFlows := func() int {
		var list struct {
			Flows []struct{ Method string }
		}
		adminJSON(t, srv, "/api/flows?method=CONNECT", &list)
		return len(list.Flows)
	}
	if n := connectFlows(); n != 0 {
		t.Errorf("%d CONNECT flows while the tunnel is parked, want none yet", n)
	}
	if st := tp.Stats(); st.ActiveTunnels != 1 || st.ActiveRequests != 1 {
		t.Errorf("while parked: %d tunnels, %d requests active, want 1 and 1", st.ActiveTunnels, st.ActiveRequests)
	}
	if err := o.echoed("after!"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	quiesce(t, tp.Proxy)
	if n := connectFlows(); n != 1 {
		t.Fatalf("%d CONNECT flows after the tunnel ended, want 1", n)
	}
	f := latestFlow(t, srv)
	want := int64(len("before") + len("after!"))
	if f.Method != "CONNECT" || f.URL != echoAddr || f.Status != 200 || !f.Tunnel || f.Proto != "HTTP/1.1" ||
		f.BytesIn != want || f.BytesOut != want {
		t.Errorf("flow %+v; want CONNECT %s 200 HTTP/1.1, a tunnel, %d bytes each way", f, echoAddr, want)
	}
	if ua, x := f.header(true, "User-Agent"), f.header(true, "X-Flow"); len(ua) != 1 || ua[0] != "park-test" || len(x) != 1 || x[0] != "kept" {
		t.Errorf("request header User-Agent %q, X-Flow %q", ua, x)
	}
	if !strings.HasPrefix(f.Upstream, "127.0.0.1:") || f.Timings.Connect <= 0 || f.Timings.Total <= 0 {
		t.Errorf("upstream %q, timings %+v", f.Upstream, f.Timings)
	}
	if st := tp.Stats(); st.ActiveTunnels != 0 || st.ActiveRequests != 0 || st.Bytes.TunnelUp != uint64(want) || st.Bytes.TunnelDown != uint64(want) {
		t.Errorf("after: %+v", st)
	}
}

// TestParkedTunnelEveryTCPFrontEnd: a tunnel from each front end whose
// client connection is TCP (plain HTTP/1.1, SOCKS5 on its own listener and
// on the HTTP listener, the PROXY protocol) parks with no goroutine left
// for it, the SOCKS client's serveSOCKS included (the tunnel has its
// connection), moves bytes after it woke, and, closed, ends its request
// once: one access record with its front end's protocol, its client's
// address and the bytes both ways.
func TestParkedTunnelEveryTCPFrontEnd(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	for i := range ingresses {
		fe := &ingresses[i]
		if !fe.tcp() {
			continue
		}
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, WithAllowPrivate(), allowAnyConnectPort())
			c, _ := fp.tunnel(t, addr, creds{})
			if c == nil {
				t.Fatal("no tunnel")
			}
			br := bufio.NewReader(c)
			roundTrip := func(msg string) {
				t.Helper()
				mustWrite(t, c, msg+"\n")
				if line, err := br.ReadString('\n'); err != nil || line != msg+"\n" {
					t.Fatalf("echo: %q %v", line, err)
				}
			}
			roundTrip("before")
			eventually(t, "no goroutine for the tunnel", func() bool {
				buf := make([]byte, 1<<20)
				s := string(buf[:runtime.Stack(buf, true)])
				return tunnelGoroutines() == 0 && !strings.Contains(s, "fwdproxy.(*Proxy).serveSOCKS(")
			})
			roundTrip("after")
			c.Close()
			quiesce(t, fp.Proxy)
			recs := fp.logRecords(t, "tunnel")
			if len(recs) != 1 {
				t.Fatalf("%d tunnel records, want 1: %v", len(recs), recs)
			}
			r := recs[0]
			proto := "HTTP/1.1"
			if fe.socks {
				proto = "SOCKS5"
			}
			host, _, _ := net.SplitHostPort(fmt.Sprint(r["client"]))
			if r["proto"] != proto || host != fe.client || r["bytes_in"] != float64(len("before\nafter\n")) || r["bytes_out"] != float64(len("before\nafter\n")) {
				t.Errorf("record %v; want proto %s, client %s, %d bytes each way", r, proto, fe.client, len("before\nafter\n"))
			}
			if st := fp.Stats(); st.ActiveTunnels != 0 || st.ActiveRequests != 0 {
				t.Errorf("after: %d tunnels, %d requests active", st.ActiveTunnels, st.ActiveRequests)
			}
		})
	}
}

// BenchmarkParkedTunnel opens b.N CONNECT tunnels through Serve, each to a
// connection the origin accepts and holds (no goroutine, nothing read),
// with the access log on (JSON, discarded), as the example server runs,
// and keeps them all parked until the end: allocs/op and B/op are what
// opening one costs (client and origin included, the same in every run);
// live-B/tunnel is the heap still in use per open tunnel after a
// collection (the client's and origin's connections included: a
// TCPConn's heap part, about 300 bytes each).
func BenchmarkParkedTunnel(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	tp := startProxy(b, WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil))), WithMaxTunnels(1<<20))
	target := ln.Addr().String()
	req := []byte("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nUser-Agent: bench/1\r\n\r\n")
	answer := make([]byte, len(connectEstablished))
	open := func() net.Conn {
		c, err := net.Dial("tcp", tp.Addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, answer); err != nil || !bytes.Equal(answer, connectEstablished) {
			b.Fatalf("CONNECT: %q %v", answer, err)
		}
		return c
	}
	first := open() // the first tunnel's one-time allocations out of the count
	waitParked(b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	clients := make([]net.Conn, 0, b.N)
	b.ResetTimer()
	for range b.N {
		clients = append(clients, open())
	}
	b.StopTimer()
	waitParked(b)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "live-B/tunnel")
	first.Close()
	for _, c := range clients {
		c.Close()
	}
	ln.Close()
	<-accepted
	for _, c := range held {
		c.Close()
	}
	quiesce(b, tp.Proxy)
}
