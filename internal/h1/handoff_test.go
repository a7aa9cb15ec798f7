package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoopHandoffConnReads: a handed-off connection yields the bytes
// parsing consumed, then those left in the buffer, then the socket's, by
// Read and by WriteTo (which io.Copy prefers, and which *net.TCPConn's
// own would take straight from the socket); the hand-off server gets it
// from the hand-off listener, and knows it for one (HandedOff).
func TestLoopHandoffConnReads(t *testing.T) {
	for _, viaWriteTo := range []bool{false, true} {
		client, server := tcpPair(t)
		mustWrite(t, client, "BUFFERED")
		br := srvReaders.Get().(*bufio.Reader)
		br.Reset(server)
		if _, err := br.Peek(len("BUFFERED")); err != nil {
			t.Fatal(err)
		}
		hl := newHandoffListener(server.LocalAddr())
		s := &Server{hls: map[*http.Server]*handoffListener{nil: hl}, settings: func() *ServerSettings { return &ServerSettings{} }}
		sc := &srvConn{s: s, c: server, tcp: server, br: br}
		sc.state.Store(connActive)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := hl.Accept()
			accepted <- c
		}()
		if !sc.handoff([]byte("CONSUMED ")) || sc.br != nil {
			t.Fatal("hand-off refused, or the reader kept")
		}
		hc := <-accepted
		if !HandedOff(hc) || HandedOff(server) {
			t.Errorf("HandedOff = %v for the hand-off, %v for the TCP connection", HandedOff(hc), HandedOff(server))
		}
		mustWrite(t, client, " SOCKET")
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		var err error
		if viaWriteTo {
			_, err = hc.(io.WriterTo).WriteTo(&got)
		} else {
			_, err = io.Copy(&got, struct{ io.Reader }{hc}) // Read only
		}
		if err != nil || got.String() != "CONSUMED BUFFERED SOCKET" {
			t.Errorf("WriteTo=%v: read %q, %v", viaWriteTo, got.String(), err)
		}
	}
}

// TestHandOffServerFromSettings: the connections handed off go to the
// server the settings in force name (ServerSettings.HandOff, else
// ServerConfig.HandOff); one already handed off stays with its server; Serve
// runs and stops every server it handed connections to.
func TestHandOffServerFromSettings(t *testing.T) {
	named := func(name string) *http.Server {
		return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, name)
		})}
	}
	a, b := named("A"), named("B")
	var cur atomic.Pointer[ServerSettings]
	cur.Store(defaultSettings())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(l, ServerConfig{Handler: http.HandlerFunc(pathHandler), HandOff: a, Settings: cur.Load})
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	ts := &testServer{Server: s, Addr: l.Addr().String()}

	post := "POST http://" + originHost + "/ HTTP/1.1\r\nHost: " + originHost + "\r\nContent-Length: 1\r\n\r\nx"
	ask := func(c net.Conn, br *bufio.Reader, want string) {
		t.Helper()
		mustWrite(t, c, post)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("answered by %q, want %q", body, want)
		}
	}
	c1, br1 := ts.rawConn(t)
	ask(c1, br1, "A")
	st := *cur.Load()
	st.HandOff = b
	cur.Store(&st)
	ask(c1, br1, "A") // handed off before: still A's
	c2, br2 := ts.rawConn(t)
	ask(c2, br2, "B")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	for _, srv := range []*http.Server{a, b} {
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}
}
