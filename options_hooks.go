package fwdproxy

import "errors"

// Options that add hooks (hooks.go runs them).

// WithAccessHook sets a hook that decides on every request and tunnel the
// rules let through; it sees the authenticated user, the client address and
// the target.
func WithAccessHook(h AccessHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithAccessHook: nil hook")
		}
		c.accessHook = h
		return nil
	}
}

// WithConnectHook adds a hook that decides on every CONNECT request before
// the proxy dials. Hooks run in the order given; the first error denies.
func WithConnectHook(h ConnectHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithConnectHook: nil hook")
		}
		c.connectHooks = append(c.connectHooks, h)
		return nil
	}
}

// WithRequestHook adds a hook that sees every outgoing request before it is
// sent upstream; it may change the request or answer it itself. Hooks run
// in the order given.
func WithRequestHook(h RequestHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithRequestHook: nil hook")
		}
		c.requestHooks = append(c.requestHooks, h)
		return nil
	}
}

// WithResponseHook adds a hook that sees every response before it is sent
// to the client and may change it. Hooks run in the order given.
func WithResponseHook(h ResponseHook) Option {
	return func(c *config) error {
		if h == nil {
			return errors.New("WithResponseHook: nil hook")
		}
		c.responseHooks = append(c.responseHooks, h)
		return nil
	}
}
