package fwdproxy

import "errors"

// Options that add hooks (hooks.go runs them).

// WithAccessHook sets a hook that decides on every request and tunnel the
// rules let through; it sees the authenticated user, the client address and
// the target.
func WithAccessHook(h AccessHook) Option {
	return optionFunc(func(s *settings) error {
		if h == nil {
			return errors.New("WithAccessHook: nil hook")
		}
		s.accessHook = h
		return nil
	})
}

// WithConnectHook adds a hook that decides on every CONNECT request before
// the proxy dials. Hooks run in the order given; the first error denies.
func WithConnectHook(h ConnectHook) Option {
	return optionFunc(func(s *settings) error {
		if h == nil {
			return errors.New("WithConnectHook: nil hook")
		}
		s.connectHooks = append(s.connectHooks, h)
		return nil
	})
}

// WithRequestHook adds a hook that sees every outgoing request before it is
// sent upstream; it may change the request or answer it itself. Hooks run
// in the order given.
func WithRequestHook(h RequestHook) Option {
	return optionFunc(func(s *settings) error {
		if h == nil {
			return errors.New("WithRequestHook: nil hook")
		}
		s.requestHooks = append(s.requestHooks, h)
		return nil
	})
}

// WithResponseHook adds a hook that sees every response before it is sent
// to the client and may change it. Hooks run in the order given.
func WithResponseHook(h ResponseHook) Option {
	return optionFunc(func(s *settings) error {
		if h == nil {
			return errors.New("WithResponseHook: nil hook")
		}
		s.responseHooks = append(s.responseHooks, h)
		return nil
	})
}
