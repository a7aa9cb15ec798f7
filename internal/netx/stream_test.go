package netx

import (
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// readString reads once from c and fails the test on an error.
func readString(t *testing.T, c net.Conn) string {
	t.Helper()
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// TestStreamConnDirect: without a read deadline, reads go straight to the
// request body (no reading ahead), and writes are flushed at once.
func TestStreamConnDirect(t *testing.T) {
	pr, pw := io.Pipe()
	rec := httptest.NewRecorder()
	s := NewStreamConn(pr, rec, nil, "192.0.2.1:1234")
	defer s.Close()
	go func() { _, _ = io.WriteString(pw, "hello") }()
	if got := readString(t, s); got != "hello" {
		t.Errorf("read %q", got)
	}
	if s.ahead {
		t.Error("reading ahead without a deadline")
	}
	if _, err := io.WriteString(s, "back"); err != nil || rec.Body.String() != "back" || !rec.Flushed {
		t.Errorf("write: %v, body %q, flushed %v", err, rec.Body.String(), rec.Flushed)
	}
	if s.RemoteAddr().String() != "192.0.2.1:1234" || s.LocalAddr().String() != "" {
		t.Errorf("addresses %q %q", s.LocalAddr(), s.RemoteAddr())
	}
}

// TestStreamConnDeadlines: a read deadline in the past fails the read
// pending and the next ones, and reading goes on once it is lifted, with
// no byte lost or reordered; a Read already waiting when the first
// deadline is set gets the first bytes.
func TestStreamConnDeadlines(t *testing.T) {
	pr, pw := io.Pipe()
	s := NewStreamConn(pr, httptest.NewRecorder(), nil, "")
	defer s.Close()

	first := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := s.Read(b) // waits on the body directly
		first <- string(b[:n])
	}()
	time.Sleep(10 * time.Millisecond)
	_ = s.SetReadDeadline(time.Now().Add(time.Hour)) // starts reading ahead
	mustWrite(t, pw, "one")
	if got := <-first; got != "one" {
		t.Fatalf("the waiting Read got %q", got)
	}
	go func() { _, _ = io.WriteString(pw, "two") }()
	if got := readString(t, s); got != "two" {
		t.Fatalf("then %q", got)
	}

	_ = s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = s.SetReadDeadline(time.Unix(1, 0))
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a deadline in the past: %v", err)
	}
	_ = s.SetReadDeadline(time.Time{})
	go func() { _, _ = io.WriteString(pw, "three") }()
	if got := readString(t, s); got != "three" {
		t.Fatalf("after the deadline was lifted: %q", got)
	}
	pw.Close()
	if _, err := s.Read(make([]byte, 8)); err != io.EOF {
		t.Errorf("at the body's end: %v", err)
	}
}

// TestStreamConnClose: Close ends a Read waiting for a chunk and stops the
// reading ahead (goleak checks that its goroutine is gone).
func TestStreamConnClose(t *testing.T) {
	pr, _ := io.Pipe()
	s := NewStreamConn(pr, httptest.NewRecorder(), nil, "")
	_ = s.SetReadDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if err := <-done; err == nil {
		t.Error("Read after Close succeeded")
	}
}
