// Package fwdproxy is an embeddable forward proxy: mount the *Proxy returned
// by New as an http.Handler, or run it with ListenAndServe.
//
// A Proxy forwards absolute-form HTTP/1.1 and HTTP/2 requests through one
// shared, pooled upstream transport and relays CONNECT tunnels (with
// splice(2) on Linux), following the RFC 9110/9112 intermediary rules.
// Bodies are streamed, never buffered whole. Every upstream connection
// resolves its host through one caching Resolver.
//
// It is safe with zero configuration: destinations in loopback, private,
// link-local and other special-purpose ranges are refused (checked on the
// resolved address that is dialed, so DNS rebinding cannot get around it),
// CONNECT goes to port 443 only, and client connections, tunnels, header
// sizes and every wait are bounded. Options open what a deployment needs
// (WithAllowPrivate, WithAllowPorts) and add proxy authentication
// (WithBasicAuth), allow/deny rules (WithDenyHosts, WithAllowHosts) and
// limits (WithRateLimit, WithMaxRequestBodyBytes).
package fwdproxy
