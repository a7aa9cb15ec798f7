//go:build linux

package fwdproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// TestKeepAliveParked: through the proxy, a keep-alive connection idle
// past the loop's linger (parked, without a goroutine) serves its next
// request, then a CONNECT on it opens a tunnel that moves bytes both ways
// (the connection leaves the loop's Parker registration for the tunnel's);
// another parked connection is closed by the client idle timeout.
func TestKeepAliveParked(t *testing.T) {
	hits, port := proxytest.HitCountingOrigin(t)
	echo := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	const idle = 1500 * time.Millisecond
	tp := startProxy(t, WithClientIdleTimeout(idle))
	target := "127.0.0.1:" + port
	c, br := tp.rawConn(t)
	for i := range 3 {
		proxytest.MustWrite(t, c, proxytest.GetRequest(target))
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "origin reached" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(400 * time.Millisecond) // past the linger: parked
	}
	if hits.Load() != 3 {
		t.Fatalf("origin hit %d times, want 3", hits.Load())
	}
	proxytest.MustWrite(t, c, proxytest.ConnectRequest(echo))
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT on the parked connection: %v %v", resp, err)
	}
	for range 2 {
		proxytest.MustWrite(t, c, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through the tunnel: %q %v", buf, err)
		}
		time.Sleep(400 * time.Millisecond) // the tunnel parks too
	}

	idler, ibr := tp.rawConn(t)
	proxytest.MustWrite(t, idler, proxytest.GetRequest(target))
	resp, err = http.ReadResponse(ibr, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	start := time.Now()
	_ = idler.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := ibr.ReadByte()
	if err == nil {
		t.Fatalf("idle connection still open: read %q", b)
	}
	var ne net.Error
	if d := time.Since(start); d < idle-300*time.Millisecond || d > idle+idle/8+time.Second ||
		(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("idle connection ended after %v with %v, want closed at about %v", d, err, idle)
	}
}

// TestCrowdedKeepAlive: with more keep-alive connections open than the
// proxy serves at once (servedPerProc a processor, internal/park's limit),
// every request is served, the connections taking turns; and requests that
// wait on their upstream (long polls) hold no one back: with more of them
// in flight than the limit, each reaches the origin, and every request of
// the other connections is answered while they still wait.
func TestCrowdedKeepAlive(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // a failure must not leave the origin's handlers blocked
	var slowIn atomic.Int32
	origin := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowIn.Add(1)
			<-release
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})
	target := origin.Listener.Addr().String()
	tp := startProxy(t)
	limit := servedPerProc * runtime.GOMAXPROCS(0)
	get := func(path string) string {
		return "GET http://" + target + path + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
	}
	read := func(t *testing.T, br *bufio.Reader, want string) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("%s: %d %q %v", want, resp.StatusCode, b, err)
		}
	}
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func(n int) []client {
		cls := make([]client, n)
		for i := range cls {
			cls[i].c, cls[i].br = tp.rawConn(t)
		}
		return cls
	}

	// Every connection serves a first request, then waits parked: the
	// long polls come through the limit, on parked connections woken.
	slow, fast := dial(limit+8), dial(2*limit)
	for _, cls := range [][]client{slow, fast} {
		for _, cl := range cls {
			proxytest.MustWrite(t, cl.c, get("/first"))
		}
		for _, cl := range cls {
			read(t, cl.br, "/first")
		}
	}
	for _, cl := range slow {
		proxytest.MustWrite(t, cl.c, get("/slow"))
	}
	proxytest.Eventually(t, "every long poll to reach the origin", func() bool { return slowIn.Load() == int32(len(slow)) })

	for round := range 3 {
		for _, cl := range fast {
			proxytest.MustWrite(t, cl.c, get("/fast"))
		}
		for _, cl := range fast {
			read(t, cl.br, "/fast")
		}
		if n := slowIn.Load(); n != int32(len(slow)) {
			t.Fatalf("round %d: %d long polls at the origin, want %d", round, n, len(slow))
		}
	}
	unblock()
	for _, cl := range slow {
		read(t, cl.br, "/slow")
	}
}
