package fwdproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the log goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records waits until the buffer holds n JSON records with message msg and
// returns them.
func records(t testing.TB, buf *syncBuffer, msg string, n int) []map[string]any {
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

// TestAccessLogAndCapture: one record per request and per tunnel with the
// documented fields, captures of headers and body prefixes, and every
// sensitive header value redacted.
func TestAccessLogAndCapture(t *testing.T) {
	secrets := map[string]string{
		"Authorization":       "Bearer origin-secret-1",
		"Proxy-Authorization": "Basic cHJveHktc2VjcmV0LTI=",
		"Cookie":              "session=cookie-secret-3",
	}
	const setCookie = "id=set-cookie-secret-4"
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Set-Cookie", setCookie)
		w.Header().Set("X-Visible", "shown")
		_, _ = io.WriteString(w, "response body: "+string(b))
	})
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	tp := startProxy(t, WithLogger(logger), WithCapture(8))
	req, _ := http.NewRequest("POST", o.URL+"/upload", strings.NewReader("0123456789abcdef"))
	for k, v := range secrets {
		req.Header.Set(k, v)
	}
	resp, err := tp.client(t, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tunnelRoundTrip(t, tp, echoAddr, 500)

	recs := records(t, &buf, "request", 1)
	r := recs[0]
	want := map[string]any{
		"method":        "POST",
		"target":        o.Listener.Addr().String(),
		"status":        float64(200),
		"bytes_in":      float64(16),
		"bytes_out":     float64(len(body)),
		"upstream":      o.Listener.Addr().String(),
		"url":           o.URL + "/upload",
		"request_body":  "01234567",
		"response_body": "response",
		"user":          "",
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("request record %s = %v, want %v", k, r[k], v)
		}
	}
	if c, _ := r["client"].(string); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("client = %v", r["client"])
	}
	if d, _ := r["duration"].(float64); d <= 0 {
		t.Errorf("duration = %v", r["duration"])
	}
	reqH, _ := r["request_headers"].(map[string]any)
	respH, _ := r["response_headers"].(map[string]any)
	for k := range secrets {
		if reqH[k] != "[REDACTED]" {
			t.Errorf("captured request header %s = %v", k, reqH[k])
		}
	}
	if respH["Set-Cookie"] != "[REDACTED]" || respH["X-Visible"] != "shown" {
		t.Errorf("captured response headers %v", respH)
	}

	tun := records(t, &buf, "tunnel", 1)[0]
	for k, v := range map[string]any{"method": "CONNECT", "target": echoAddr, "status": float64(200),
		"bytes_in": float64(500), "bytes_out": float64(500), "upstream": echoAddr} {
		if tun[k] != v {
			t.Errorf("tunnel record %s = %v, want %v", k, tun[k], v)
		}
	}
	all := buf.String()
	for _, v := range append([]string{setCookie, "secret"}, secretsValues(secrets)...) {
		if strings.Contains(all, v) {
			t.Errorf("log contains secret %q:\n%s", v, all)
		}
	}
}

func secretsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestAccessLogNeverBlocks: with a log writer that blocks, requests are
// still served promptly and the records that do not fit are dropped and
// counted.
func TestAccessLogNeverBlocks(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	bw := blockingWriter{release: make(chan struct{})}
	tp := startProxy(t, WithLogger(slog.New(slog.NewTextHandler(bw, nil))), WithLogQueueSize(2))
	t.Cleanup(func() { close(bw.release) }) // runs before the proxy's Shutdown
	c := tp.client(t, nil)
	c.Timeout = 5 * time.Second
	const n = 20
	start := time.Now()
	for range n {
		if resp, body := mustGet(t, c, o.URL+"/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	quiesce(t, tp.Proxy)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("%d requests took %v with a blocked log", n, d)
	}
	// One record is with the blocked writer, two are queued: the rest drop.
	if got := tp.Stats().LogDropped; got < n-3 {
		t.Errorf("LogDropped = %d, want at least %d", got, n-3)
	}
}

// TestAccessLogUser: the record names the user that authentication put in
// the request context.
func TestAccessLogUser(t *testing.T) {
	var buf syncBuffer
	answer := WithRequestHook(func(ctx context.Context, out *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 204, Body: http.NoBody, ProtoMajor: 1, ProtoMinor: 1}, nil
	})
	p, err := New(WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))), answer)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	for _, user := range []string{"alice", ""} {
		req := httptest.NewRequest("GET", "http://example.com/", nil)
		if user != "" {
			req = req.WithContext(withAuthUser(req.Context(), user))
		}
		p.ServeHTTP(httptest.NewRecorder(), req)
	}
	recs := records(t, &buf, "request", 2)
	if recs[0]["user"] != "alice" || recs[1]["user"] != "" || recs[0]["status"] != float64(204) {
		t.Errorf("records %v", recs)
	}
}
