package fwdproxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRefusalHints: a refusal that an option would lift says which one, in
// the body and in its log line (the same text): the library option and the
// example server's flag. A refusal by the operator's own rule names none.
func TestRefusalHints(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("origin reached")) })
	oAddr := o.Listener.Addr().String()
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	for _, tc := range []struct {
		name    string
		guarded bool // the default private-address guard and CONNECT ports
		opts    []Option
		do      func(t *testing.T, tp *testProxy) (int, string)
		status  int
		want    []string // in the body and the log line
		not     string
	}{
		{"private address, curl -x", true, nil, func(t *testing.T, tp *testProxy) (int, string) {
			return 403, curl(t, "-x", tp.URL.String(), o.URL+"/")
		}, 403, []string{"127.0.0.1 is loopback", "WithAllowPrivate", "WithAllowedCIDRs", "-allow-private"}, ""},
		{"CONNECT port", true, []Option{WithAllowPrivate()}, func(t *testing.T, tp *testProxy) (int, string) {
			status, body, _ := send(t, tp, connect(echoAddr))
			return status, body
		}, 403, []string{"not allowed for CONNECT", "WithAllowPorts", "-allow-port"}, ""},
		{"tunnel limit", false, []Option{WithMaxTunnels(1)}, func(t *testing.T, tp *testProxy) (int, string) {
			tp.connect(t, echoAddr, "") // holds the one tunnel until the test ends
			status, body, _ := send(t, tp, connect(echoAddr))
			return status, body
		}, 503, []string{"too many open tunnels", "WithMaxTunnels", "-max-tunnels"}, ""},
		{"request body stall", false, []Option{WithBodyIdleTimeout(100 * time.Millisecond)}, func(t *testing.T, tp *testProxy) (int, string) {
			status, body, _ := send(t, tp, "POST "+o.URL+"/ HTTP/1.1\r\nHost: "+oAddr+"\r\nContent-Length: 10\r\n\r\nabc")
			return status, body
		}, 408, []string{"request body stalled", "WithBodyIdleTimeout", "-body-idle-timeout"}, ""},
		{"deny rule: no hint", false, []Option{WithDenyHosts("127.0.0.1")}, func(t *testing.T, tp *testProxy) (int, string) {
			status, body, _ := send(t, tp, get(oAddr))
			return status, body
		}, 403, []string{"access denied"}, "allow with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			// Warn level: the access log is off and the refusal's own
			// line is its one record.
			opts := append([]Option{WithLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))}, tc.opts...)
			var tp *testProxy
			if tc.guarded {
				tp = startGuardedProxy(t, opts...)
			} else {
				tp = startProxy(t, opts...)
			}
			status, body := tc.do(t, tp)
			if status != tc.status {
				t.Fatalf("status %d %q, want %d", status, body, tc.status)
			}
			reason := strings.TrimSuffix(body, "\n")
			if strings.Contains(reason, "\n") {
				t.Errorf("reason is not one line: %q", body)
			}
			for _, w := range tc.want {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not say %q", reason, w)
				}
			}
			if tc.not != "" && strings.Contains(reason, tc.not) {
				t.Errorf("reason %q says %q", reason, tc.not)
			}
			rec := records(t, &buf, "request refused", 1)[0]
			if rec["reason"] != reason {
				t.Errorf("log line's reason %q, body %q", rec["reason"], reason)
			}
		})
	}
}

// TestOneRecordPerRefusal: a refused or failed request leaves exactly one
// log record, with the access log on (its access record, carrying the
// reason) and off (the Warn line).
func TestOneRecordPerRefusal(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("origin reached")) })
	oAddr := o.Listener.Addr().String()
	slow := origin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	cut := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 5000))
		w.(http.Flusher).Flush()
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	stall := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 5000))
		w.(http.Flusher).Flush()
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := closed.Addr().String()
	closed.Close()
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	getURL := func(u string) string { return "GET " + u + " HTTP/1.1\r\nHost: x\r\n\r\n" }

	for _, tc := range []struct {
		name    string
		guarded bool
		opts    []Option
		warmup  string // a request sent first, on its own connection
		req     string
		status  int    // 0: the response is cut
		warn    string // the message of the Warn line
	}{
		{"403 rule", false, []Option{WithDenyHosts("127.0.0.1")}, "", get(oAddr), 403, "request refused"},
		{"403 private", true, nil, "", get(oAddr), 403, "request refused"},
		{"407", false, []Option{WithBasicAuth(StaticCredentials(map[string]string{"u": "p"}))}, "", get(oAddr), 407, "request refused"},
		{"429", false, []Option{WithRateLimit(0.001, 1)}, get(oAddr), get(oAddr), 429, "request refused"},
		{"413", false, []Option{WithMaxRequestBodyBytes(5)}, "",
			"POST http://" + oAddr + "/ HTTP/1.1\r\nHost: " + oAddr + "\r\nContent-Length: 10\r\n\r\n0123456789", 413, "request refused"},
		{"502", false, nil, "", getURL("http://" + refused + "/"), 502, "request refused"},
		{"504", false, []Option{WithResponseHeaderTimeout(100 * time.Millisecond)}, "", getURL(slow.URL + "/"), 504, "request refused"},
		{"tunnel 403", true, []Option{WithAllowPrivate()}, "", connect(echoAddr), 403, "request refused"},
		{"tunnel 502", false, nil, "", connect(refused), 502, "request refused"},
		{"upstream fails mid-body", false, nil, "", getURL(cut.URL + "/"), 0, "upstream body failed mid-stream"},
		{"upstream body stalls", false, []Option{WithBodyIdleTimeout(100 * time.Millisecond)}, "", getURL(stall.URL + "/"), 0, "upstream body stalled mid-stream"},
	} {
		for _, accessLog := range []bool{true, false} {
			name := tc.name + "/access log off"
			level := slog.LevelWarn
			if accessLog {
				name, level = tc.name+"/access log on", slog.LevelInfo
			}
			t.Run(name, func(t *testing.T) {
				var buf syncBuffer
				opts := append([]Option{WithLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})))}, tc.opts...)
				var tp *testProxy
				if tc.guarded {
					tp = startGuardedProxy(t, opts...)
				} else {
					tp = startProxy(t, opts...)
				}
				if tc.warmup != "" {
					if status, body, _ := send(t, tp, tc.warmup); status != 200 {
						t.Fatalf("warm-up: %d %q", status, body)
					}
				}
				c, br := tp.rawConn(t)
				client := c.LocalAddr().String()
				mustWrite(t, c, tc.req)
				method, _, _ := strings.Cut(tc.req, " ")
				var reason string
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					err = rerr
					reason = strings.TrimSuffix(string(b), "\n")
					if tc.status != 0 && resp.StatusCode != tc.status {
						t.Fatalf("status %d %q, want %d", resp.StatusCode, b, tc.status)
					}
				}
				if (tc.status == 0) != (err != nil) {
					t.Fatalf("read error %v, want one: %v", err, tc.status == 0)
				}
				c.Close()
				quiesce(t, tp.Proxy)
				// The log queue is first in, first out: once a record
				// logged now is out, every record before it is too.
				tp.log.Warn("sentinel")
				records(t, &buf, "sentinel", 1)
				var mine []map[string]any
				for line := range strings.Lines(buf.String()) {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("log line is not JSON: %q", line)
					}
					if m["client"] == client {
						mine = append(mine, m)
					}
				}
				if len(mine) != 1 {
					t.Fatalf("%d log records of the request, want 1:\n%s", len(mine), buf.String())
				}
				rec := mine[0]
				wantMsg := tc.warn
				if accessLog {
					wantMsg = "request" // a refused CONNECT opened no tunnel
				}
				if rec["msg"] != wantMsg {
					t.Errorf("msg %v, want %q", rec["msg"], wantMsg)
				}
				got, _ := rec["reason"].(string)
				if got == "" || (tc.status != 0 && got != reason) {
					t.Errorf("reason %q, body %q", got, reason)
				}
				if accessLog {
					if e, _ := rec["error"].(string); e == "" || e == "_OTHER" || rec["method"] != method {
						t.Errorf("access record without error or method %s: %v", method, rec)
					}
				}
			})
		}
	}
}
