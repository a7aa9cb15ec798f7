package netx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func mustWrite(t testing.TB, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

// TestConnReads: a Conn yields the bytes given, then those left in the
// reader's buffer, then the socket's, by Read and by WriteTo (which io.Copy
// prefers, and which *net.TCPConn's own would take straight from the
// socket); the reader is released once, when its buffer is empty.
func TestConnReads(t *testing.T) {
	for _, viaWriteTo := range []bool{false, true} {
		client, server := tcpPair(t)
		mustWrite(t, client, "BUFFERED")
		br := bufio.NewReaderSize(server, 4096)
		if _, err := br.Peek(len("BUFFERED")); err != nil {
			t.Fatal(err)
		}
		released := 0
		c := NewBufferedConn(server, []byte("CONSUMED "), br, func(r *bufio.Reader) {
			if r != br {
				t.Error("released another reader")
			}
			released++
		})
		if n := c.Buffered(); n != len("CONSUMED BUFFERED") {
			t.Errorf("Buffered = %d", n)
		}
		mustWrite(t, client, " SOCKET")
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		var err error
		if viaWriteTo {
			_, err = c.WriteTo(&got)
		} else {
			_, err = io.Copy(&got, struct{ io.Reader }{c}) // Read only
		}
		if err != nil || got.String() != "CONSUMED BUFFERED SOCKET" {
			t.Errorf("WriteTo=%v: read %q, %v", viaWriteTo, got.String(), err)
		}
		if released != 1 || c.Buffered() != 0 {
			t.Errorf("WriteTo=%v: reader released %d times, %d bytes still buffered", viaWriteTo, released, c.Buffered())
		}
	}
}

// TestConnSmallReads: the bytes read ahead come out in order through reads
// smaller than them, and NewConn without a reader works the same.
func TestConnSmallReads(t *testing.T) {
	client, server := tcpPair(t)
	c := NewConn(server, []byte("ahead:"))
	mustWrite(t, client, "socket")
	client.CloseWrite()
	var got []byte
	p := make([]byte, 4)
	for {
		n, err := c.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "ahead:socket" {
		t.Errorf("read %q", got)
	}
}

// recorder is a net.Conn whose ReadFrom and WriteTo record what they were
// given.
type recorder struct {
	net.Conn
	from io.Reader
	to   io.Writer
	cw   int
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) { r.from = src; return 0, nil }
func (r *recorder) WriteTo(w io.Writer) (int64, error)    { r.to = w; return 0, nil }
func (r *recorder) CloseWrite() error                     { r.cw++; return nil }

// TestConnForwards: ReadFrom, WriteTo (once the bytes read ahead are out)
// and CloseWrite reach the connection's own methods with the reader or
// writer given unwrapped, so that *net.TCPConn sees an io.LimitedReader
// over a TCP connection as one it can splice from.
func TestConnForwards(t *testing.T) {
	_, tcp := tcpPair(t)
	rec := &recorder{}
	c := NewConn(rec, []byte("early"))
	src := &io.LimitedReader{R: tcp, N: 10}
	if _, err := c.ReadFrom(src); err != nil || rec.from != src {
		t.Errorf("ReadFrom passed %T (%v), want the *io.LimitedReader given", rec.from, err)
	}
	var dst bytes.Buffer
	if n, err := c.WriteTo(&dst); err != nil || n != 5 || dst.String() != "early" || rec.to != &dst {
		t.Errorf("WriteTo: %d, %v, wrote %q, forwarded %T", n, err, dst.String(), rec.to)
	}
	if err := c.CloseWrite(); err != nil || rec.cw != 1 {
		t.Errorf("CloseWrite: %v, forwarded %d times", err, rec.cw)
	}
	plain := NewConn(struct{ net.Conn }{tcp}, nil)
	if err := plain.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite on a connection without it: %v", err)
	}
}

// TestConnCopyTCP: a megabyte crosses io.Copy between two TCP connections
// through a Conn, in each direction, intact and after the bytes read ahead.
func TestConnCopyTCP(t *testing.T) {
	payload := strings.Repeat("0123456789abcdef", 64<<10)
	for _, connIsSource := range []bool{true, false} {
		aClient, aServer := tcpPair(t)
		bClient, bServer := tcpPair(t)
		c := NewConn(aServer, []byte("early:"))
		done := make(chan error, 1)
		go func() {
			var err error
			if connIsSource {
				_, err = io.Copy(bServer, c)
				bServer.CloseWrite()
			} else {
				_, err = io.Copy(c, bServer)
				c.CloseWrite()
			}
			done <- err
		}()
		src, dst := aClient, bClient
		want := "early:" + payload
		if !connIsSource {
			src, dst = bClient, aClient
			want = payload
		}
		go func() {
			_, _ = io.WriteString(src, payload)
			src.CloseWrite()
		}()
		got, err := io.ReadAll(dst)
		if err != nil || string(got) != want {
			t.Errorf("source=%v: read %d bytes, %v; want %d", connIsSource, len(got), err, len(want))
		}
		if err := <-done; err != nil {
			t.Errorf("source=%v: copy: %v", connIsSource, err)
		}
	}
}

// TestConnDetach: Detach returns the connection and every byte still read
// ahead (those given, then the reader's), releasing the reader once;
// reading the connection after them gives the rest of the stream.
func TestConnDetach(t *testing.T) {
	for _, tc := range []struct {
		name, ahead, buffered, want string
		partial                     int // bytes read through the Conn first
	}{
		{"nothing ahead", "", "", "", 0},
		{"given and buffered", "GIVEN ", "BUFFERED", "GIVEN BUFFERED", 0},
		{"partly read", "GIVEN ", "BUFFERED", "EN BUFFERED", 3},
		{"buffered only", "", "BUFFERED", "BUFFERED", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			br := bufio.NewReaderSize(server, 4096)
			if tc.buffered != "" {
				mustWrite(t, client, tc.buffered)
				if _, err := br.Peek(len(tc.buffered)); err != nil {
					t.Fatal(err)
				}
			}
			released := 0
			c := NewBufferedConn(server, []byte(tc.ahead), br, func(*bufio.Reader) { released++ })
			if tc.partial > 0 {
				if _, err := io.ReadFull(c, make([]byte, tc.partial)); err != nil {
					t.Fatal(err)
				}
			}
			inner, ahead := c.Detach()
			if inner != server || string(ahead) != tc.want || released != 1 {
				t.Fatalf("Detach = %v, %q, released %d; want the server side, %q, released once", inner, ahead, released, tc.want)
			}
			mustWrite(t, client, "REST")
			got := make([]byte, 4)
			if _, err := io.ReadFull(inner, got); err != nil || string(got) != "REST" {
				t.Fatalf("after Detach: %q %v", got, err)
			}
		})
	}
}
