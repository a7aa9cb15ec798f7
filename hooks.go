package fwdproxy

import (
	"context"
	"net/http"
)

// ConnectHook decides on a CONNECT request before the proxy dials target
// ("host:port"). Return nil to allow the tunnel. Return an error to refuse
// it: an error made by Deny sets the status and reason, any other error is
// answered with 403 and the error's text.
type ConnectHook func(ctx context.Context, target string, r *http.Request) error

// RequestHook sees each outgoing request just before it is sent upstream:
// hop-by-hop headers are already removed and Via added. It may change the
// request in place (URL, headers, body). Returning a non-nil response
// answers the client with it instead of going upstream; the proxy closes
// its Body. Returning an error refuses the request: an error made by Deny
// sets the status, any other error is answered with 403.
type RequestHook func(ctx context.Context, out *http.Request) (*http.Response, error)

// ResponseHook sees each response before its headers reach the client
// (hop-by-hop headers are already removed and Via added; resp.Request is the
// outgoing request). It may change the status, headers and body; a hook
// that replaces resp.Body should set resp.ContentLength to match (or -1).
// Returning an error discards the response: the client gets 502, or the
// status of an error made by Deny.
type ResponseHook func(ctx context.Context, resp *http.Response) error

// runHooks is the one rule of hooks (see Option), for every kind: the hooks
// run in the order given until one refuses the request (call returns an
// error) or answers it (call returns a response; only request hooks do),
// and that one decides. A refusal becomes an *Error for target (hookError),
// of kind unless the hook used Deny, and a response that came with it is
// closed.
func runHooks[H any](hooks []H, target string, kind error, call func(H) (*http.Response, error)) (*http.Response, *Error) {
	for _, h := range hooks {
		resp, err := call(h)
		if err != nil {
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			return nil, hookError(target, err, kind)
		}
		if resp != nil {
			return resp, nil
		}
	}
	return nil, nil
}

func runAccessHooks(ctx context.Context, hooks []AccessHook, target string, a Access) *Error {
	_, e := runHooks(hooks, target, ErrForbidden, func(h AccessHook) (*http.Response, error) { return nil, h(ctx, a) })
	return e
}

func runConnectHooks(ctx context.Context, hooks []ConnectHook, target string, r *http.Request) *Error {
	_, e := runHooks(hooks, target, ErrForbidden, func(h ConnectHook) (*http.Response, error) { return nil, h(ctx, target, r) })
	return e
}

func runRequestHooks(ctx context.Context, hooks []RequestHook, target string, out *http.Request) (*http.Response, *Error) {
	return runHooks(hooks, target, ErrForbidden, func(h RequestHook) (*http.Response, error) { return h(ctx, out) })
}

func runResponseHooks(ctx context.Context, hooks []ResponseHook, target string, resp *http.Response) *Error {
	_, e := runHooks(hooks, target, ErrUpstream, func(h ResponseHook) (*http.Response, error) { return nil, h(ctx, resp) })
	return e
}

// hookError turns a hook's error into an *Error: Deny's errors keep their
// status, others get the given kind with the error's text as reason. The
// result is always the caller's own: a hook's *Error is copied, never
// written into, as hooks may return one shared value.
func hookError(target string, err error, kind error) *Error {
	if e, ok := err.(*Error); ok {
		return e.withTarget(target)
	}
	return newError(kind, target, err.Error(), err)
}
