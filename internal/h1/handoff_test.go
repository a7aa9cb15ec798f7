package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
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
		s := &Server{hl: newHandoffListener(server.LocalAddr())}
		sc := &srvConn{s: s, c: server, tcp: server, br: br}
		sc.state.Store(connActive)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := s.hl.Accept()
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
