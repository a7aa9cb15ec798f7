package fwdproxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Options for the upstream side: connecting, pooling, TLS and names.

// WithDialTimeout bounds how long connecting to an upstream may take
// (DNS lookup included). Default 10 s.
func WithDialTimeout(d time.Duration) Option {
	return durationOption("WithDialTimeout", d, func(s *settings) *time.Duration { return &s.dialTimeout })
}

// WithTLSHandshakeTimeout bounds the TLS handshake with an https upstream.
// Default 10 s.
func WithTLSHandshakeTimeout(d time.Duration) Option {
	return durationOption("WithTLSHandshakeTimeout", d, func(s *settings) *time.Duration { return &s.tlsHandshakeTimeout })
}

// WithResponseHeaderTimeout bounds the wait for an upstream's response
// headers after the request was sent; past it the client gets 504.
// Default 30 s.
func WithResponseHeaderTimeout(d time.Duration) Option {
	return durationOption("WithResponseHeaderTimeout", d, func(s *settings) *time.Duration { return &s.responseHeaderTimeout })
}

// WithIdleConnTimeout sets how long an idle upstream connection stays in the
// pool. Default 90 s.
func WithIdleConnTimeout(d time.Duration) Option {
	return durationOption("WithIdleConnTimeout", d, func(s *settings) *time.Duration { return &s.idleConnTimeout })
}

// WithMaxIdleConns sets the upstream pool size: idle connections kept per
// host and in total. Defaults 64 and 1024 (Go's own default per host is 2,
// which forces a new connection for most requests under load). For plain
// HTTP/1.1 upstreams the limits are enforced within about a second rather
// than the instant a connection goes idle, so that a burst of more
// concurrent requests than the limit reuses its connections instead of
// redialing them.
func WithMaxIdleConns(perHost, total int) Option {
	return optionFunc(func(s *settings) error {
		if perHost < 1 || total < perHost {
			return fmt.Errorf("WithMaxIdleConns: need 1 <= perHost <= total, got %d, %d", perHost, total)
		}
		s.maxIdleConnsPerHost, s.maxIdleConns = perHost, total
		return nil
	})
}

// WithMaxResponseHeaderBytes bounds the size of an upstream's response
// head (status line and header fields, each informational response
// counted on its own), on every upstream path: the proxy's own HTTP/1.1
// client and http.Transport over HTTP/1.1 and HTTP/2 (where the limit is
// advertised as SETTINGS_MAX_HEADER_LIST_SIZE and counted as HTTP/2 counts
// it). Past it the client gets 502 naming the limit. n must be from 1024
// to 1 GiB. Default DefaultMaxResponseHeaderBytes, 256 KiB: far above what
// real origins send (nginx and Envoy refuse more than 8 and 60 KiB by
// default) yet small enough that a thousand responses waiting upstream
// cannot hold more than a quarter of a GiB in heads (net/http's 10 MB
// would allow 10 GB).
func WithMaxResponseHeaderBytes(n int) Option {
	return optionFunc(func(s *settings) error {
		if n < 1024 || n > 1<<30 {
			return fmt.Errorf("WithMaxResponseHeaderBytes: need 1024 to %d bytes, got %d", 1<<30, n)
		}
		s.maxResponseHeader = n
		return nil
	})
}

// WithProxyFromEnvironment makes the proxy forward through the upstream
// proxy named by HTTP_PROXY, HTTPS_PROXY and NO_PROXY. By default those
// variables are ignored, so that a proxy never chains by surprise.
func WithProxyFromEnvironment() Option {
	return optionFunc(func(s *settings) error { s.proxyFromEnvironment = true; return nil })
}

// WithUpstreamRootCAs adds trusted roots for verifying https upstreams: a
// certificate is accepted when it verifies against the system roots or
// against pool. Verification itself is never turned off.
func WithUpstreamRootCAs(pool *x509.CertPool) Option {
	return optionFunc(func(s *settings) error {
		if pool == nil {
			return errors.New("WithUpstreamRootCAs: nil pool")
		}
		s.upstreamRoots = pool
		return nil
	})
}

// WithResolver makes the Proxy resolve every upstream name with r, which
// the caller owns: Shutdown does not close it, so one Resolver and its cache
// can serve several Proxies. Without it a Proxy creates its own Resolver,
// configured by the resolver options given to New (WithDNSServers,
// WithDNSTimeout …, dnsoptions.go), and closes it on Shutdown. It cannot be
// combined with those options: give them to NewResolver instead.
func WithResolver(r *Resolver) Option {
	return optionFunc(func(s *settings) error {
		if r == nil {
			return errors.New("WithResolver: nil Resolver")
		}
		s.resolver = r
		return nil
	})
}
