package fwdproxy

import (
	"log/slog"
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
