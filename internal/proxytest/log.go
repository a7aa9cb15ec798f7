package proxytest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Logger is the logger a test gives a Proxy: it discards everything, unless
// FWDPROXY_TEST_LOG is set, when it writes every level to the test log.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("FWDPROXY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// SyncBuffer is a bytes.Buffer safe for the log goroutine and the test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what the buffer holds.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset empties the buffer.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// Records waits until the buffer holds n JSON records with message msg and
// returns them.
func Records(t testing.TB, buf *SyncBuffer, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []map[string]any
		for line := range strings.Lines(buf.String()) {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("log line is not JSON: %q", line)
			}
			if m["msg"] == msg {
				out = append(out, m)
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q records, want %d; log:\n%s", len(out), msg, n, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ConnectRecords returns the access-log records of CONNECTs, once there are n.
func ConnectRecords(t testing.TB, buf *SyncBuffer, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []map[string]any
		for _, r := range Records(t, buf, "tunnel", 0) {
			if r["method"] == "CONNECT" {
				out = append(out, r)
			}
		}
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				t.Fatalf("%d CONNECT records, want %d; log:\n%s", len(out), n, buf.String())
			}
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}
