package fwdproxy

import (
	"context"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// TestHookRule: every kind of hook follows the one rule written on Option:
// each option adds a hook (WithAccessHook too, which used to replace the
// one before), the hooks run in the order given, and the first refusal
// decides: the hooks after it do not run.
func TestHookRule(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	target := o.Listener.Addr().String()
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	type hookFunc func(name string, refuse bool, note func(string)) Option
	for _, kind := range []struct {
		name string
		hook hookFunc
		req  string
	}{
		{"access", func(name string, refuse bool, note func(string)) Option {
			return WithAccessHook(func(context.Context, Access) error { note(name); return refusal(name, refuse) })
		}, get(target)},
		{"connect", func(name string, refuse bool, note func(string)) Option {
			return WithConnectHook(func(context.Context, string, *http.Request) error { note(name); return refusal(name, refuse) })
		}, connect(echoAddr)},
		{"request", func(name string, refuse bool, note func(string)) Option {
			return WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) {
				note(name)
				return nil, refusal(name, refuse)
			})
		}, get(target)},
		{"response", func(name string, refuse bool, note func(string)) Option {
			return WithResponseHook(func(context.Context, *http.Response) error { note(name); return refusal(name, refuse) })
		}, get(target)},
	} {
		t.Run(kind.name, func(t *testing.T) {
			for _, tc := range []struct {
				refuse []bool // per hook, in the order given
				status int
				body   string
				calls  []string
			}{
				{[]bool{false, false}, 200, "", []string{"1", "2"}},
				{[]bool{false, true, false}, 451, "2 says no", []string{"1", "2"}},
				{[]bool{true, true}, 451, "1 says no", []string{"1"}},
			} {
				var mu sync.Mutex
				var calls []string
				note := func(name string) {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, name)
				}
				var opts []Option
				for i, refuse := range tc.refuse {
					opts = append(opts, kind.hook(string(rune('1'+i)), refuse, note))
				}
				status, body, _ := send(t, startProxy(t, opts...), kind.req)
				mu.Lock()
				got := calls
				mu.Unlock()
				if status != tc.status || !strings.Contains(body, tc.body) || !reflect.DeepEqual(got, tc.calls) {
					t.Errorf("hooks refusing %v: %d %q, calls %v; want %d %q, calls %v", tc.refuse, status, body, got, tc.status, tc.body, tc.calls)
				}
			}
		})
	}
	t.Run("request hook answers", func(t *testing.T) {
		var later bool
		tp := startProxy(t,
			WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 203, Body: io.NopCloser(strings.NewReader("answered")), ContentLength: 8}, nil
			}),
			WithRequestHook(func(context.Context, *http.Request) (*http.Response, error) {
				later = true
				return nil, nil
			}))
		if status, body, _ := send(t, tp, get(target)); status != 203 || body != "answered" || later {
			t.Errorf("got %d %q, later hook run: %v; want the first hook's 203 and no later hook", status, body, later)
		}
	})
}

// refusal is a hook's answer: a refusal naming the hook, or nil.
func refusal(name string, refuse bool) error {
	if refuse {
		return Deny(http.StatusUnavailableForLegalReasons, name+" says no")
	}
	return nil
}
