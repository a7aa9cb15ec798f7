package fwdproxy

import "errors"

// Options that add hooks. Every one follows the rule written on Option:
// each call adds a hook, hooks of a kind run in the order given, and the
// first refusal wins (hooks.go runs them, in runHooks).

// WithAccessHook adds a hook that decides on every request and tunnel the
// rules let through; it sees the authenticated user, the client address and
// the target. Access hooks run as Option says: in the order given, the
// first refusal wins.
func WithAccessHook(h AccessHook) Option {
	return hookOption("WithAccessHook", h, h == nil, func(s *settings) *[]AccessHook { return &s.accessHooks })
}

// WithConnectHook adds a hook that decides on every CONNECT request before
// the proxy dials. Connect hooks run as Option says: in the order given,
// the first refusal wins.
func WithConnectHook(h ConnectHook) Option {
	return hookOption("WithConnectHook", h, h == nil, func(s *settings) *[]ConnectHook { return &s.connectHooks })
}

// WithRequestHook adds a hook that sees every outgoing request before it is
// sent upstream; it may change the request or answer it itself. Request
// hooks run as Option says: in the order given, and the first that refuses
// or answers the request ends the run.
func WithRequestHook(h RequestHook) Option {
	return hookOption("WithRequestHook", h, h == nil, func(s *settings) *[]RequestHook { return &s.requestHooks })
}

// WithResponseHook adds a hook that sees every response before it is sent
// to the client and may change it. Response hooks run as Option says: in
// the order given, the first refusal wins.
func WithResponseHook(h ResponseHook) Option {
	return hookOption("WithResponseHook", h, h == nil, func(s *settings) *[]ResponseHook { return &s.responseHooks })
}

// hookOption is every hook option: it appends h (nil when isNil, which is
// an error) to the hooks of its kind, the list that list chooses.
func hookOption[H any](name string, h H, isNil bool, list func(*settings) *[]H) Option {
	return optionFunc(func(s *settings) error {
		if isNil {
			return errors.New(name + ": nil hook")
		}
		l := list(s)
		*l = append(*l, h)
		return nil
	})
}
