package fwdproxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
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

// TestAccessLogFields: the access record's duration_s is a plain decimal
// number of seconds in the text and the JSON handler alike, and the record
// names the protocol version, the client's User-Agent when it sent one,
// and the trace id when tracing is on.
func TestAccessLogFields(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	oAddr := o.Listener.Addr().String()
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	textDur := regexp.MustCompile(`(^| )duration_s=([0-9]+\.[0-9]{6})( |$)`)
	jsonDur := regexp.MustCompile(`"duration_s":([0-9]+\.[0-9]{6})[,}]`)
	for _, tc := range []struct {
		name    string
		json    bool
		tracing bool
		h2      bool   // a CONNECT over HTTP/2 on a TLS server, not a request
		ua      string // the User-Agent sent; "" sends none
		proto   string
	}{
		{"text", false, false, false, "fieldtest/1.0", "HTTP/1.1"},
		{"json", true, false, false, "fieldtest/1.0", "HTTP/1.1"},
		{"json, no User-Agent", true, false, false, "", "HTTP/1.1"},
		{"text, tracing", false, true, false, "fieldtest/1.0", "HTTP/1.1"},
		{"json, tracing", true, true, false, "fieldtest/1.0", "HTTP/1.1"},
		{"json, CONNECT over HTTP/2", true, false, true, "fieldtest/2.0", "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			h := slog.Handler(slog.NewTextHandler(&buf, nil))
			if tc.json {
				h = slog.NewJSONHandler(&buf, nil)
			}
			opts := []Option{WithLogger(slog.New(h))}
			var rec *tracetest.SpanRecorder
			if tc.tracing {
				var opt Option
				opt, rec = tracing(t)
				opts = append(opts, opt)
			}
			msg := "request"
			if tc.h2 {
				msg = "tunnel"
				h2Tunnel(t, echoAddr, tc.ua, opts...)
			} else {
				tp := startProxy(t, opts...)
				c, br := tp.rawConn(t)
				head := "GET " + o.URL + "/ HTTP/1.1\r\nHost: " + oAddr + "\r\n"
				if tc.ua != "" {
					head += "User-Agent: " + tc.ua + "\r\n"
				}
				mustWrite(t, c, head+"\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				quiesce(t, tp.Proxy)
			}
			var line string
			eventually(t, "the access record", func() bool {
				for l := range strings.Lines(buf.String()) {
					if strings.Contains(l, `msg=`+msg+` `) || strings.Contains(l, `"msg":"`+msg+`"`) {
						line = strings.TrimSuffix(l, "\n")
						return true
					}
				}
				return false
			})
			fields := map[string]string{}
			if tc.json {
				m := jsonDur.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("no plain decimal duration_s in %s", line)
				}
				fields["duration_s"] = m[1]
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatal(err)
				}
				if _, ok := rec["duration_s"].(float64); !ok {
					t.Errorf("duration_s is not a JSON number: %s", line)
				}
				for k, v := range rec {
					if s, ok := v.(string); ok {
						fields[k] = s
					}
				}
			} else {
				m := textDur.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("no plain decimal duration_s in %s", line)
				}
				fields["duration_s"] = m[2]
				for _, kv := range strings.Fields(line) {
					if k, v, ok := strings.Cut(kv, "="); ok {
						fields[k] = v
					}
				}
			}
			if d, err := strconv.ParseFloat(fields["duration_s"], 64); err != nil || d <= 0 || d > 10 {
				t.Errorf("duration_s = %q", fields["duration_s"])
			}
			if _, ok := fields["duration"]; ok {
				t.Errorf("the record still has duration: %s", line)
			}
			if fields["proto"] != tc.proto {
				t.Errorf("proto = %q, want %q", fields["proto"], tc.proto)
			}
			if ua, ok := fields["user_agent"]; ua != tc.ua || ok != (tc.ua != "") {
				t.Errorf("user_agent = %q (present %v), want %q", ua, ok, tc.ua)
			}
			id, ok := fields["trace_id"]
			if tc.tracing {
				spans := endedSpans(t, rec, trace.SpanKindServer)
				if want := spans[0].SpanContext().TraceID().String(); id != want {
					t.Errorf("trace_id = %q, want the server span's %s", id, want)
				}
			} else if ok {
				t.Errorf("trace_id %q without tracing", id)
			}
		})
	}
}

// h2Tunnel opens a tunnel to addr with a CONNECT on an HTTP/2 stream to a
// Proxy made with opts and mounted on a TLS server, echoes through it and
// closes it.
func h2Tunnel(t *testing.T, addr, ua string, opts ...Option) {
	t.Helper()
	p, err := New(append([]Option{WithAllowPrivate(), allowAnyConnectPort()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	tr, front := h2Front(t, p) // intercept_sniff_test.go
	pr, pw := io.Pipe()
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: front}, Host: addr, Header: http.Header{}, Body: pr}
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("CONNECT over h2: %s %d", resp.Proto, resp.StatusCode)
	}
	_, _ = io.WriteString(pw, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q %v", b, err)
	}
	pw.Close()
	resp.Body.Close()
	quiesce(t, p)
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
