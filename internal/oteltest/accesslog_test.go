package oteltest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestAccessLogFields: the access record's duration_s is a plain decimal
// number of seconds in the text and the JSON handler alike, and the record
// names the protocol version, the client's User-Agent when it sent one,
// and the trace id when tracing is on.
func TestAccessLogFields(t *testing.T) {
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	oAddr := o.Listener.Addr().String()
	echoAddr := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
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
			var buf proxytest.SyncBuffer
			h := slog.Handler(slog.NewTextHandler(&buf, nil))
			if tc.json {
				h = slog.NewJSONHandler(&buf, nil)
			}
			opts := []fwdproxy.Option{fwdproxy.WithLogger(slog.New(h)), allowPortOf(t, echoAddr)}
			var rec *tracetest.SpanRecorder
			if tc.tracing {
				var opt fwdproxy.Option
				opt, rec = tracing(t)
				opts = append(opts, opt)
			}
			msg := "request"
			if tc.h2 {
				msg = "tunnel"
				h2Tunnel(t, echoAddr, tc.ua, opts...)
			} else {
				tp := startProxy(t, opts...)
				c, br := proxytest.RawConn(t, tp.Addr)
				head := "GET " + o.URL + "/ HTTP/1.1\r\nHost: " + oAddr + "\r\n"
				if tc.ua != "" {
					head += "User-Agent: " + tc.ua + "\r\n"
				}
				proxytest.MustWrite(t, c, head+"\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				quiesce(t, tp.Proxy)
			}
			var line string
			proxytest.Eventually(t, "the access record", func() bool {
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
func h2Tunnel(t *testing.T, addr, ua string, opts ...fwdproxy.Option) {
	t.Helper()
	p, err := fwdproxy.New(append([]fwdproxy.Option{fwdproxy.WithAllowPrivate()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	tr, front := proxytest.H2Front(t, p)
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
