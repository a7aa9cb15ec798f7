//go:build linux

package fwdproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
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
