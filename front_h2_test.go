package fwdproxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// tlsH2 is the ingress of HTTPS with HTTP/2 (ingresses[2]).
func tlsH2(t *testing.T) *ingress {
	fe := &ingresses[2]
	if fe.name != "HTTPS HTTP/2" {
		t.Fatalf("ingresses[2] is %q", fe.name)
	}
	return fe
}

// TestHTTP2ManyConnectStreams: one HTTP/2 connection to the HTTPS
// listener carries 100 CONNECT tunnels at once, each echoing its own bytes.
func TestHTTP2ManyConnectStreams(t *testing.T) {
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	fp := startFront(t, tlsH2(t), WithAllowPrivate(), allowAnyConnectPort())
	cc := h2Conn(t, fp.fe.dial(t, fp.pki, fp.addr))
	const streams = 100
	var opened []io.ReadWriteCloser
	for i := range streams {
		s, code := h2StreamConnect(t, cc, addr, creds{})
		if code != 200 {
			t.Fatalf("stream %d: %d", i, code)
		}
		opened = append(opened, s)
	}
	// A tunnel is counted once its relay starts, just after its 200 is
	// sent: the last ones may be counted a moment after their answers.
	eventually(t, "100 tunnels open at once", func() bool { return fp.Stats().ActiveTunnels == streams })
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i, s := range opened {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("stream %d %s\n", i, strings.Repeat("x", i*100))
			if _, err := io.WriteString(s, msg); err != nil {
				errs <- err
				return
			}
			got, err := bufio.NewReader(s).ReadString('\n')
			if err != nil || got != msg {
				errs <- fmt.Errorf("stream %d: %q %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := cc.InFlight(); n != streams {
		t.Errorf("%d streams in flight on the client connection, want %d", n, streams)
	}
	for _, s := range opened {
		s.Close()
	}
	eventually(t, "the tunnels closed", func() bool { return fp.Stats().ActiveTunnels == 0 })
}

// TestHTTP2Settings: the proxy's HTTP/2 server announces the bound on
// concurrent streams (WithHTTP2MaxStreams, default 100) and flow-control
// windows sized for tunnels: 1 MiB per stream (SETTINGS_INITIAL_WINDOW_SIZE)
// and 4 MiB for the connection (a WINDOW_UPDATE on stream 0), on TLS and
// cleartext HTTP/2 alike; past the bound, a stream is refused.
func TestHTTP2Settings(t *testing.T) {
	for _, tc := range []struct {
		fe      *ingress
		opts    []Option
		streams uint32
	}{
		{&ingresses[2], nil, DefaultHTTP2MaxStreams},
		{&ingresses[3], []Option{WithHTTP2MaxStreams(7)}, 7},
	} {
		t.Run(tc.fe.name, func(t *testing.T) {
			fp := startFront(t, tc.fe, tc.opts...)
			c := fp.fe.dial(t, fp.pki, fp.addr)
			mustWrite(t, c, http2.ClientPreface)
			fr := http2.NewFramer(c, c)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			got := map[http2.SettingID]uint32{}
			var connWindow uint32
			for connWindow == 0 || len(got) == 0 {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the server's frames: %v", err)
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						_ = f.ForeachSetting(func(s http2.Setting) error { got[s.ID] = s.Val; return nil })
					}
				case *http2.WindowUpdateFrame:
					if f.StreamID == 0 {
						connWindow = 65535 + f.Increment
					}
				}
			}
			if got[http2.SettingMaxConcurrentStreams] != tc.streams {
				t.Errorf("MAX_CONCURRENT_STREAMS %d, want %d", got[http2.SettingMaxConcurrentStreams], tc.streams)
			}
			if got[http2.SettingInitialWindowSize] != h2StreamWindow {
				t.Errorf("INITIAL_WINDOW_SIZE %d, want %d", got[http2.SettingInitialWindowSize], h2StreamWindow)
			}
			if connWindow != h2ConnWindow {
				t.Errorf("connection window %d, want %d", connWindow, h2ConnWindow)
			}
		})
	}
}

// TestHTTP2StreamResetClosesUpstream: a client that resets its CONNECT
// stream gets the upstream connection closed (the origin reads EOF) and
// the tunnel counted out, while the other streams of the connection go on;
// and an upstream that closes its connection ends the client's stream.
func TestHTTP2StreamResetClosesUpstream(t *testing.T) {
	closed := make(chan string, 4)
	addr := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if line == "close\n" { // the upstream ends the tunnel
			c.Close()
			closed <- "origin closed"
			return
		}
		_, _ = io.WriteString(c, line)
		_, err = io.Copy(io.Discard, br)
		closed <- fmt.Sprintf("origin read %v", err)
	})
	for _, fe := range []*ingress{&ingresses[2], &ingresses[3]} {
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, WithAllowPrivate(), allowAnyConnectPort())
			cc := h2Conn(t, fp.fe.dial(t, fp.pki, fp.addr))
			keep, code := h2StreamConnect(t, cc, addr, creds{})
			if code != 200 {
				t.Fatalf("CONNECT: %d", code)
			}
			defer keep.Close()

			// The client resets a stream (closing the response body of a
			// stream still open sends RST_STREAM).
			pr, pw := io.Pipe()
			req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: addr}, Host: addr, Header: http.Header{}, Body: pr}
			resp, err := cc.RoundTrip(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			mustWrite(t, pw, "hello\n")
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "hello\n" {
				t.Fatalf("echo: %q %v", line, err)
			}
			resp.Body.Close() // RST_STREAM (CANCEL)
			select {
			case got := <-closed:
				if got != "origin read <nil>" {
					t.Errorf("after the reset: %s, want the origin to read EOF", got)
				}
			case <-time.After(promptly):
				t.Fatal("the upstream connection stayed open after the client reset its stream")
			}
			pw.Close()
			eventually(t, "the reset tunnel counted out", func() bool { return fp.Stats().ActiveTunnels == 1 })

			// The upstream closes: the client's stream ends.
			s, code := h2StreamConnect(t, cc, addr, creds{})
			if code != 200 {
				t.Fatalf("CONNECT: %d", code)
			}
			mustWrite(t, s, "close\n")
			<-closed
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, s)
				done <- err
			}()
			select {
			case <-done:
			case <-time.After(promptly):
				t.Fatal("the client's stream stayed open after the upstream closed")
			}
			s.Close()
			eventually(t, "that tunnel counted out", func() bool { return fp.Stats().ActiveTunnels == 1 })

			// The first stream was never disturbed.
			mustWrite(t, keep, "still here\n")
			if line, err := bufio.NewReader(keep).ReadString('\n'); err != nil || line != "still here\n" {
				t.Errorf("the other stream: %q %v", line, err)
			}
		})
	}
}

// TestHTTP2AbsoluteForm: over HTTP/2 a request whose :authority is another
// host is forwarded to it (as absolute-form is over HTTP/1.1), with the
// path and query; one for the proxy itself (its address, or its name in
// SNI) goes to the fallback handler.
func TestHTTP2AbsoluteForm(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s %s via=%s", r.Method, r.URL.RequestURI(), r.Header.Get("Via"))
	})
	fallback := WithFallback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proxy's own %s", r.URL.Path)
	}))
	for _, fe := range []*ingress{&ingresses[2], &ingresses[3]} {
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, WithAllowPrivate(), fallback, WithVia("h2test"))
			if s, b := fp.get(t, o.URL+"/a?b=c", creds{}); s != 200 || b != "origin GET /a?b=c via=2 h2test" {
				t.Errorf("proxy request: %d %q", s, b)
			}
			// Its access record names the target and the URL, as an
			// absolute-form request's does over HTTP/1.1.
			rec := fp.records(t, 1)[0]
			if rec["target"] != strings.TrimPrefix(o.URL, "http://") || rec["url"] != o.URL+"/a?b=c" || rec["proto"] != "HTTP/2.0" {
				t.Errorf("access record %v, want target %s, url %s/a?b=c, proto HTTP/2.0", rec, strings.TrimPrefix(o.URL, "http://"), o.URL)
			}
			if s, b := fp.get(t, "http://"+fp.addr+"/healthz", creds{}); s != 200 || b != "proxy's own /healthz" {
				t.Errorf("request for the proxy's address: %d %q", s, b)
			}
		})
	}
	fp := startFront(t, &ingresses[2], fallback)
	c := plainDial(t, fp.pki, fp.addr)
	tc := tls.Client(c, &tls.Config{RootCAs: fp.pki.Pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	cc := h2Conn(t, tc)
	_, port, _ := net.SplitHostPort(fp.addr)
	req, _ := http.NewRequest(http.MethodGet, "https://localhost:"+port+"/healthz", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "proxy's own /healthz" {
		t.Errorf("request for the proxy's SNI name: %d %q", resp.StatusCode, b)
	}
}

// xconnect is the GODEBUG setting under which net/http's HTTP/2 server
// offers extended CONNECT (h2.go).
const xconnect = "http2xconnect=1"

// TestExtendedConnectWebSocket: a WebSocket opened by an extended CONNECT
// (RFC 8441) over HTTP/2 to the proxy is relayed to a ws:// origin as an
// HTTP/1.1 Upgrade and echoes frames both ways, on the HTTPS and cleartext
// HTTP/2 listeners, with one access record. net/http offers extended
// CONNECT only under GODEBUG=http2xconnect=1, read at start: the test runs
// itself again in a process with it.
func TestExtendedConnectWebSocket(t *testing.T) {
	if !strings.Contains(os.Getenv("GODEBUG"), xconnect) {
		if testing.Short() {
			t.Skip("runs a child test process")
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestExtendedConnectWebSocket$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "GODEBUG="+strings.Trim(os.Getenv("GODEBUG")+","+xconnect, ","))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestExtendedConnectWebSocket") {
			t.Fatalf("the test under GODEBUG=%s: %v\n%s", xconnect, err, out)
		}
		return
	}
	ws := wsOrigin(t)
	target := ws.Listener.Addr().String()
	for _, fe := range []*ingress{&ingresses[2], &ingresses[3]} {
		t.Run(fe.name, func(t *testing.T) {
			fp := startFront(t, fe, WithAllowPrivate())
			cc := xh2Conn(t, fp.fe.dial(t, fp.pki, fp.addr))
			pr, pw := io.Pipe()
			req := &http.Request{
				Method: http.MethodConnect, URL: &url.URL{Scheme: "http", Host: target, Path: "/chat"}, Host: target,
				Header: http.Header{":protocol": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Origin": {"http://" + target}},
				Body:   pr,
			}
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatalf("extended CONNECT: %v", err)
			}
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("extended CONNECT: %d %q", resp.StatusCode, b)
			}
			if resp.Header.Get("Sec-Websocket-Accept") != "" {
				t.Errorf("the origin's Sec-WebSocket-Accept reached the HTTP/2 client")
			}
			br := bufio.NewReader(resp.Body)
			if op, p, err := wsReadFrame(br); err != nil || op != 1 || string(p) != "hello /chat" {
				t.Fatalf("greeting: %d %q %v", op, p, err)
			}
			for i := range 3 {
				msg := fmt.Sprintf("message %d %s", i, strings.Repeat("y", i*1000))
				if err := wsWriteFrame(pw, 1, []byte(msg), true); err != nil {
					t.Fatal(err)
				}
				if op, p, err := wsReadFrame(br); err != nil || op != 1 || string(p) != "echo: "+msg {
					t.Fatalf("frame %d: %d %q %v", i, op, p, err)
				}
			}
			if err := wsWriteFrame(pw, 8, []byte{0x03, 0xe8}, true); err != nil {
				t.Fatal(err)
			}
			if op, _, err := wsReadFrame(br); err != nil || op != 8 {
				t.Fatalf("close: %d %v", op, err)
			}
			pw.Close()
			resp.Body.Close()
			quiesce(t, fp.Proxy)
			recs := fp.records(t, 1)
			if r := recs[0]; r["status"] != float64(200) || r["method"] != "CONNECT" || r["msg"] != "tunnel" || r["upstream"] != target {
				t.Errorf("record %v", r)
			}
		})
	}
}

// TestExtendedConnectOff: without GODEBUG=http2xconnect=1 the server does
// not offer extended CONNECT, and a client that needs it learns so at once.
func TestExtendedConnectOff(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), xconnect) {
		t.Skip("GODEBUG turns extended CONNECT on")
	}
	fp := startFront(t, &ingresses[3], WithAllowPrivate())
	cc := xh2Conn(t, fp.fe.dial(t, fp.pki, fp.addr))
	req := &http.Request{
		Method: http.MethodConnect, URL: &url.URL{Scheme: "http", Host: "127.0.0.1:1", Path: "/"}, Host: "127.0.0.1:1",
		Header: http.Header{":protocol": {"websocket"}}, Body: http.NoBody,
	}
	if _, err := cc.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "extended connect not supported") {
		t.Fatalf("extended CONNECT without the server's SETTINGS_ENABLE_CONNECT_PROTOCOL: %v", err)
	}
}

// xh2Conn starts an HTTP/2 client connection on c with x/net/http2's
// client, which sends extended CONNECT (the :protocol field) once the
// server offers it; net/http's client refuses the field.
//
//lint:ignore SA1019 net/http's client cannot send an extended CONNECT
func xh2Conn(t testing.TB, c net.Conn) *http2.ClientConn {
	t.Helper()
	//lint:ignore SA1019 net/http's client cannot send an extended CONNECT
	cc, err := (&http2.Transport{}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
