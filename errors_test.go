package fwdproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestSharedDenyConcurrent: hooks that return one shared Deny value (the
// natural way to write one) refuse many concurrent requests to different
// targets; each refusal's log record names its own target, and under -race
// nothing races on the shared error.
func TestSharedDenyConcurrent(t *testing.T) {
	const origins, perOrigin = 6, 8
	var targets []string
	for range origins {
		o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("origin reached")) })
		targets = append(targets, o.Listener.Addr().String())
	}
	for _, tc := range []struct {
		name    string
		connect bool
		hook    func(deny error) Option
	}{
		{"access hook", false, func(deny error) Option {
			return WithAccessHook(func(context.Context, Access) error { return deny })
		}},
		{"access hook, CONNECT", true, func(deny error) Option {
			return WithAccessHook(func(context.Context, Access) error { return deny })
		}},
		{"connect hook", true, func(deny error) Option {
			return WithConnectHook(func(context.Context, string, *http.Request) error { return deny })
		}},
		{"request hook", false, func(deny error) Option {
			return WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) { return nil, deny })
		}},
		{"response hook", false, func(deny error) Option {
			return WithResponseHook(func(context.Context, *http.Response) error { return deny })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deny := Deny(http.StatusForbidden, "not today")
			var buf syncBuffer
			// Warn level: the refusals' own log records, one per request.
			logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
			tp := startProxy(t, WithLogger(logger), tc.hook(deny))
			var mu sync.Mutex
			want := map[string]string{} // client address → target
			var wg sync.WaitGroup
			errs := make(chan error, origins*perOrigin)
			for i := range origins * perOrigin {
				target := targets[i%origins]
				c, br := tp.rawConn(t)
				mu.Lock()
				want[c.LocalAddr().String()] = target
				mu.Unlock()
				req, method := get(target), "GET"
				if tc.connect {
					req, method = connect(target), "CONNECT"
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := c.Write([]byte(req)); err != nil {
						errs <- err
						return
					}
					resp, err := http.ReadResponse(br, &http.Request{Method: method})
					if err != nil {
						errs <- err
						return
					}
					b := make([]byte, 64)
					n, _ := resp.Body.Read(b)
					resp.Body.Close()
					if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b[:n]), "not today") {
						errs <- fmt.Errorf("%s %s: %d %q", method, target, resp.StatusCode, b[:n])
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, rec := range records(t, &buf, "request refused", origins*perOrigin) {
				client, _ := rec["client"].(string)
				if rec["target"] != want[client] {
					t.Errorf("refusal of client %s logged with target %v, want %s", client, rec["target"], want[client])
				}
			}
			if e := deny.(*Error); e.Target != "" {
				t.Errorf("the shared Deny value was written into: Target = %q", e.Target)
			}
		})
	}
}
