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
