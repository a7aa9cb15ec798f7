package fwdproxy

import (
	"net/http"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// config is one configuration of a Proxy: the settings the options made
// (options.go) and everything buildConfig derives from them that a request
// reads. It is immutable once built. The Proxy holds the one in force
// behind an atomic pointer (Proxy.cfg); a request or tunnel loads it once,
// when it starts, and keeps that snapshot to its end, passed along as a
// parameter and, for the dial, in the context (dialPolicy, access.go). So a
// request is judged by one configuration, never by parts of two, and a new
// one (swap) applies from the next request on.
//
// What must outlive a configuration stays on the Proxy: the counters that
// limits are checked against (open connections and tunnels), the tunnel
// registry, telemetry instruments, the log queue and Stats. The limits
// themselves (maxConns, maxTunnels) are the snapshot's, so a new limit
// applies at once to what is already counted. The transports, their pools
// and the resolver (upstream.go) are shared by the configurations that
// leave their settings unchanged, and replaced by Reload when those change,
// so a request reaches them through its snapshot too (c.up).
type config struct {
	settings

	via       viaValues           // the Via field values, per protocol version
	guard     *policy.PrefixSet   // ranges WithAllowedCIDRs opens
	rules     *policy.Rules       // compiled allow and deny rules, CONNECT ports
	limiter   *policy.RateLimiter // nil without WithRateLimit; its state is this configuration's
	intercept *interceptor        // nil: interception off
	front     frontConfig         // TLS to the proxy, PROXY protocol (options_front.go)
	routing   *routing            // nil: every request goes directly (route.go)
	users     *userPolicies       // nil: no WithPolicies (userpolicy.go)

	// What the own HTTP/1.1 server and transport (internal/h1) read
	// through Proxy.serverSettings and Proxy.h1Settings, made once here
	// so that reading them costs no allocation.
	h1srv h1.ServerSettings
	h1tr  h1.TransportSettings

	// The net/http servers that read this configuration's timeouts and
	// limits from their fields: the hand-off server (h1srv.HandOff) and
	// isrv, which serves intercepted connections (intercept.go). Shared
	// with the configurations that keep those settings (netServers).
	isrv *http.Server

	// Set by New and Reload (reload.go) once buildConfig has made the
	// rest, before the configuration is put in force.
	up   *upstream  // the transports and the resolver its requests use (upstream.go)
	meta configMeta // its generation, hash and description
}

// swap makes c the configuration in force and returns the one it
// replaces (nil for New's first). Requests and tunnels that started before
// keep theirs; every one that starts after swap returns reads c.
func (p *Proxy) swap(c *config) *config { return p.cfg.Swap(c) }
