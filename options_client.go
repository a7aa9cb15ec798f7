package fwdproxy

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// Options for the client side: the Proxy's own server, tunnels, bodies and
// what the Proxy answers itself.

// WithReadHeaderTimeout bounds how long a client may take to send request
// headers when the Proxy runs its own server (Serve, ListenAndServe); it cuts
// slowloris clients. Default 10 s.
func WithReadHeaderTimeout(d time.Duration) Option {
	return durationOption("WithReadHeaderTimeout", d, func(s *settings) *time.Duration { return &s.readHeaderTimeout })
}

// WithClientIdleTimeout bounds how long an idle keep-alive client connection
// is kept open when the Proxy runs its own server. Default 120 s.
func WithClientIdleTimeout(d time.Duration) Option {
	return durationOption("WithClientIdleTimeout", d, func(s *settings) *time.Duration { return &s.clientIdleTimeout })
}

// WithMaxHeaderBytes bounds the size of a client's request headers when the
// Proxy runs its own server. Default 64 KiB.
func WithMaxHeaderBytes(n int) Option {
	return optionFunc(func(s *settings) error {
		if n < 1024 {
			return fmt.Errorf("WithMaxHeaderBytes: need at least 1024, got %d", n)
		}
		s.maxHeaderBytes = n
		return nil
	})
}

// WithTunnelIdleTimeout closes a CONNECT tunnel or upgraded connection after
// no byte has moved in either direction for d. Default 5 min.
func WithTunnelIdleTimeout(d time.Duration) Option {
	return durationOption("WithTunnelIdleTimeout", d, func(s *settings) *time.Duration { return &s.tunnelIdleTimeout })
}

// WithBodyIdleTimeout gives up on a plain request or response body that
// moves no byte for d (default DefaultBodyIdleTimeout, 60 s, as nginx's
// client_body_timeout and proxy_read_timeout). A client that stops sending
// its request body gets 408 and its connection is closed (cut instead, if
// the response has begun); an upstream that stops sending its response
// body has the client connection cut, the only honest signal once the
// status line is gone, with a log line naming the upstream. A client that
// stops reading a response stalls it too. Only the time without progress
// counts: a slow body that keeps moving is never cut. Tunnels have
// WithTunnelIdleTimeout instead. A request body is watched through
// http.ResponseController, so behind a server of your own the
// ResponseWriter must support SetReadDeadline (net/http's does).
func WithBodyIdleTimeout(d time.Duration) Option {
	return durationOption("WithBodyIdleTimeout", d, func(s *settings) *time.Duration { return &s.bodyIdleTimeout })
}

// WithVia sets the pseudonym the proxy puts in the Via header of requests
// and responses ("1.1 <pseudonym>") and by which it recognises a request
// that has already passed through it (a loop, answered with 508). Proxies
// chained to one another need distinct pseudonyms. The default is
// "fwdproxy-" and six random hex digits chosen by New, distinct per Proxy.
func WithVia(pseudonym string) Option {
	return optionFunc(func(s *settings) error {
		if !httpx.ValidToken(pseudonym) {
			return fmt.Errorf("WithVia: pseudonym %q must be a non-empty HTTP token", pseudonym)
		}
		s.pseudonym = pseudonym
		return nil
	})
}

// WithFallback sets the handler for requests that are not proxy requests
// (origin-form, such as "GET /healthz"), so a service can serve its own
// endpoints on the proxy's port. Proxy requests never reach it, whatever
// their path. Without a fallback such requests get 400.
func WithFallback(h http.Handler) Option {
	return optionFunc(func(s *settings) error {
		if h == nil {
			return errors.New("WithFallback: nil handler")
		}
		s.fallback = h
		return nil
	})
}
