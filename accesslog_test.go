package fwdproxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

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
	if d, _ := r["duration_s"].(float64); d <= 0 {
		t.Errorf("duration_s = %v", r["duration_s"])
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

// TestDurationSeconds: the access record's duration text.
func TestDurationSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.000000"},
		{-time.Second, "0.000000"},
		{499 * time.Nanosecond, "0.000000"},
		{500 * time.Nanosecond, "0.000001"},
		{73469 * time.Nanosecond, "0.000073"},
		{1500 * time.Millisecond, "1.500000"},
		{61*time.Second + time.Microsecond, "61.000001"},
		{100 * time.Hour, "360000.000000"},
	} {
		var s durationSeconds
		s.set(tc.d)
		if got := s.String(); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.d, got, tc.want)
		}
	}
}
