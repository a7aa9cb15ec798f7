package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records each Write it gets.
type countingWriter struct {
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func (c *countingWriter) state() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.buf.String()
}

// TestBufferedLog: lines written close together reach the underlying writer
// in one write, after the flush delay at the latest; a full buffer is
// written at once; Close writes the rest, and later lines go straight
// through.
func TestBufferedLog(t *testing.T) {
	cw := &countingWriter{}
	b := newBufferedLog(cw)
	for i := range 100 {
		_, _ = b.Write([]byte("line " + strings.Repeat("x", i%7) + "\n"))
	}
	if n, _ := cw.state(); n != 0 {
		t.Fatalf("%d writes before the flush delay, want 0", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, s := cw.state()
		if n == 1 && strings.Count(s, "\n") == 100 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("after the delay: %d writes holding %d lines, want 1 write of 100", n, strings.Count(s, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}

	big := bytes.Repeat([]byte("y"), logBufferSize/2+1)
	_, _ = b.Write(big)
	_, _ = b.Write(big) // does not fit: the first half is written now
	if n, _ := cw.state(); n != 2 {
		t.Errorf("a full buffer: %d writes in all, want 2", n)
	}

	_, _ = b.Write([]byte("before close\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	n, s := cw.state()
	if !strings.HasSuffix(s, "before close\n") {
		t.Errorf("Close did not write the buffered line: %q", s[len(s)-20:])
	}
	_, _ = b.Write([]byte("after close\n"))
	if n2, s := cw.state(); n2 != n+1 || !strings.HasSuffix(s, "after close\n") {
		t.Errorf("a write after Close: %d writes (want %d), tail %q", n2, n+1, s[len(s)-20:])
	}
	time.Sleep(2 * logFlushDelay) // no timer is left to write again
	if n3, _ := cw.state(); n3 != n+1 {
		t.Errorf("%d writes after Close, want %d", n3, n+1)
	}
}
