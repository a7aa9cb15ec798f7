//go:build linux

package h1

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/park"
)

// TestLoopParksIdle: a keep-alive connection idle past the linger waits
// in the Parker without a goroutine, serves its next request at once when
// it comes, is closed by its idle timeout (counted from its last
// response, the linger included), and by Shutdown while parked.
func TestLoopParksIdle(t *testing.T) {
	const n = 40
	h := http.HandlerFunc(pathHandler)
	ts := startServer(t, h, func(st *ServerSettings) { st.IdleTimeout = 1500 * time.Millisecond }, nil)
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	get := func(t *testing.T, cl client, path string) {
		t.Helper()
		mustWrite(t, cl.c, rawGet(path, ""))
		if r := readWire(t, cl.br, "GET"); r.status != 200 {
			t.Fatalf("%s: status %d", path, r.status)
		}
	}
	open := func(t *testing.T) []client {
		cls := make([]client, n)
		for i := range cls {
			cls[i].c, cls[i].br = ts.rawConn(t)
			get(t, cls[i], "/first")
		}
		return cls
	}
	settled := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}

	t.Run("no goroutine while parked, served when woken", func(t *testing.T) {
		base := settled()
		cls := open(t)
		// Past the linger, every connection is parked: their goroutines
		// are gone.
		eventually(t, "the idle connections' goroutines to end", func() bool { return settled() < base+n/4 })
		for _, cl := range cls {
			get(t, cl, "/second")
		}
		for _, cl := range cls {
			get(t, cl, "/third") // served by the goroutine the wake gave it
		}
		ts.wantOpenConns(t, n)
	})

	t.Run("idle timeout while parked", func(t *testing.T) {
		cl := open(t)[0]
		start := time.Now()
		wantClosed(t, cl.c, cl.br)
		// 1.5 s from the response, at most an eighth late; not the
		// linger plus the timeout.
		if d := time.Since(start); d < 1200*time.Millisecond || d > 1500*time.Millisecond+1500*time.Millisecond/8+time.Second {
			t.Errorf("closed after %v, want about 1.5 s", d)
		}
	})

	t.Run("Shutdown closes parked connections", func(t *testing.T) {
		cls := open(t)
		time.Sleep(parkLinger + 200*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		for _, cl := range cls {
			wantClosed(t, cl.c, cl.br)
		}
		ts.wantOpenConns(t, 0)
		if ts.LoopConns() != 0 {
			t.Errorf("%d connections left in the loop", ts.LoopConns())
		}
	})
}

// TestCrowdedParks: with more connections open than its Parker serves at
// once (park.Parker.SetLimit), the loop parks a connection as soon as it
// waits for a request, its first one included, without lingering; every
// request is still served, each connection's first request under the
// header timeout counted from its accept.
func TestCrowdedParks(t *testing.T) {
	old := parkLinger
	parkLinger = time.Hour // a connection that lingers would keep its goroutine through the test
	t.Cleanup(func() { parkLinger = old })
	const n, limit = 12, 2
	pk := park.New()
	pk.SetLimit(limit)
	ts := startServerParker(t, http.HandlerFunc(pathHandler), func(st *ServerSettings) {
		st.ReadHeaderTimeout = 2 * time.Second
		st.IdleTimeout = 30 * time.Second
	}, nil, pk)
	settled := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	base := settled()
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	cls := make([]client, n)
	for i := range cls {
		cls[i].c, cls[i].br = ts.rawConn(t)
	}
	ts.wantLoopConns(t, n)
	// Past the limit, connections are parked from their accept: no
	// goroutine waits for their first request.
	eventually(t, "connections accepted past the limit to park", func() bool { return settled() <= base+limit+2 })
	for round, path := range []string{"/first", "/second", "/third"} {
		for _, cl := range cls {
			mustWrite(t, cl.c, rawGet(path, ""))
		}
		for i, cl := range cls {
			if r := readWire(t, cl.br, "GET"); r.status != 200 || string(r.body) != "GET "+path {
				t.Fatalf("round %d, connection %d: status %d, body %q", round, i, r.status, r.body)
			}
		}
		// Every connection parks again at once (the linger is an hour).
		eventually(t, "served connections to park at once", func() bool { return settled() <= base+2 })
	}
	ts.wantOpenConns(t, n)

	// A connection parked from its accept has its header timeout counted
	// from the accept: half a header block 1.5 s in does not buy it
	// another 2 s.
	c, br := ts.rawConn(t)
	start := time.Now()
	ts.wantLoopConns(t, n+1)
	time.Sleep(1500 * time.Millisecond)
	mustWrite(t, c, "GET http://origin.test/ HTTP/1.1\r\n")
	wantClosed(t, c, br)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed %v after its accept, want about 2 s (the header timeout)", d)
	}
}
