package fwdproxy

import (
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/latency"
)

// Stats is a snapshot of a Proxy's counters, from Proxy.Stats. Counts are
// cumulative since New; gauges (Active…) are as of the call.
type Stats struct {
	// Requests is the number of client requests completed, CONNECT
	// requests (tunnels) included.
	Requests uint64
	// Errors counts the requests refused or failed, by kind.
	Errors ErrorCounts
	// Denials counts requests refused by access control: rules, the
	// private-address guard, authentication, the rate limit, the body
	// size limit and hooks (their 403, 407, 429 and 413 answers are also
	// counted in Errors). DeniedBy splits it by reason.
	Denials uint64
	// DeniedBy counts Denials by reason.
	DeniedBy DenialCounts
	// ActiveRequests is the number of requests being served, open
	// tunnels included.
	ActiveRequests int64
	// ActiveConnections is the number of client connections open on the
	// Proxy's own servers (Serve, ServeTLS, ServeSOCKS), not counting those
	// taken over by tunnels.
	ActiveConnections int64
	// RefusedConnections counts the client connections Serve, ServeTLS and
	// ServeSOCKS refused at accept (with 503, or SOCKS5's "no acceptable
	// methods") because WithMaxConns were open.
	RefusedConnections uint64
	// RefusedHandshakes counts the client connections closed before any
	// request because their front end's handshake failed, by front end.
	RefusedHandshakes HandshakeRefusals
	// ActiveTunnels is the number of open CONNECT and upgraded tunnels.
	ActiveTunnels int64
	// Latency is the distribution of request durations, from the request
	// headers to the end of the response, over the last minute. Tunnels
	// (CONNECT) are left out: they last as long as the client wants.
	Latency LatencyStats
	// Bytes counts the bytes relayed between clients and upstreams.
	Bytes ByteCounts
	// Reuse counts the requests sent upstream and the connections
	// opened for them: how well the upstream pools are reused.
	Reuse ReuseStats
	// LogDropped is the number of log records dropped because the log
	// queue was full (see WithLogQueueSize).
	LogDropped uint64
	// DNS are the counters of the Proxy's Resolver. When a Reload
	// replaced it, those the replaced ones had counted are included.
	DNS ResolverStats
	// Config describes the configuration in force and the reloads.
	Config ConfigStats
	// Upstreams are the health and counters of the upstreams of the routes
	// in force (WithUpstreams; with WithPAC, those its answers named so
	// far), nil without routes. Stats allocates this list only.
	Upstreams []UpstreamStats
	// Quotas counts what the policies' byte quotas and their store did
	// (WithPolicies, WithSharedState); their refusals are in DeniedBy.
	Quotas QuotaStats
}

// QuotaStats counts the enforcement of the policies' quotas.
type QuotaStats struct {
	// Cuts counts transfers (response or request bodies, tunnels) cut at
	// a byte quota.
	Cuts uint64
	// StoreErrors counts calls to the shared store (WithSharedState) that
	// failed and were decided by the Proxy's in-memory state instead.
	StoreErrors uint64
	// StoreFailing reports whether the last call to the store failed.
	StoreFailing bool
}

// HandshakeRefusals counts, by front end, the client connections closed
// before any request because their handshake failed. Each is a Warn line
// too (at most one a second, with the count of those held back); a client
// that closes before it sent anything (a TCP health check) is neither.
type HandshakeRefusals struct {
	// ProxyProtocol: a PROXY protocol header from an untrusted peer, or a
	// missing, malformed or late one from a trusted peer (WithProxyProtocol).
	ProxyProtocol uint64
	// TLS: a TLS handshake on ServeTLS's listener that failed.
	TLS uint64
	// SOCKS: a SOCKS5 handshake that failed (ServeSOCKS,
	// WithSOCKSOnHTTPListener).
	SOCKS uint64
}

// ErrorCounts counts failed requests by the kind of their error.
type ErrorCounts struct {
	Malformed       uint64 // ErrMalformed, 400
	AuthRequired    uint64 // ErrAuthRequired, 407
	Forbidden       uint64 // ErrForbidden (and Deny from hooks)
	Unavailable     uint64 // ErrUnavailable, 503
	Upstream        uint64 // ErrUpstream, 502
	UpstreamTimeout uint64 // ErrUpstreamTimeout, 504
	Loop            uint64 // ErrLoop, 508
	RateLimited     uint64 // ErrRateLimited, 429
	TooLarge        uint64 // ErrTooLarge, 413
	ClientTimeout   uint64 // ErrClientTimeout, 408
}

// DenialCounts counts refusals by access control by reason; the names in
// parentheses are those of the fwdproxy.denials metric's reason attribute.
type DenialCounts struct {
	Rule           uint64 // WithDenyHosts, WithAllowHosts, WithAllowPorts ("rule")
	PrivateAddress uint64 // the private-address guard ("private_address")
	Auth           uint64 // missing or rejected proxy credentials ("auth")
	RateLimit      uint64 // WithRateLimit ("rate_limit")
	BodySize       uint64 // WithMaxRequestBodyBytes ("body_size")
	Hook           uint64 // an AccessHook ("hook")
	Forbidden      uint64 // other 403 answers: a ConnectHook's or RequestHook's Deny ("forbidden")
	AuthRequired   uint64 // other 407 answers, from hooks ("auth_required")
	Policy         uint64 // a policy's hosts or ports (WithPolicies, "policy")
	QuotaRate      uint64 // a policy's Rate ("quota_rate")
	QuotaBytes     uint64 // a policy's BytesPerDay ("quota_bytes")
	QuotaTunnels   uint64 // a policy's MaxTunnels ("quota_tunnels")
}

// ByteCounts counts the bytes of bodies and tunnels relayed, each
// direction apart. Headers are not counted, nor the TLS records of an
// intercepted connection (its requests' bodies are). A tunnel's bytes are
// counted when it closes.
type ByteCounts struct {
	RequestBodies  uint64 // request body bytes read from clients
	ResponseBodies uint64 // response body bytes written to clients
	TunnelUp       uint64 // tunnel bytes from clients to upstreams
	TunnelDown     uint64 // tunnel bytes from upstreams to clients
}

// ReuseStats counts the requests the Proxy sent upstream (tunnels left
// out) and the connections it dialed for them; the requests that did not
// need a new connection took one from the pool (or an HTTP/2 connection
// already open). A connection the shared transport dials for a request
// that then takes an idle one is counted, and kept for the next.
type ReuseStats struct {
	Requests uint64 // requests sent upstream, failed ones included
	NewConns uint64 // connections dialed for them
}

// LatencyStats summarises request durations over a sliding window.
type LatencyStats struct {
	Count         uint64        // requests in the window
	P50, P95, P99 time.Duration // quantiles, within about 3%
	Max           time.Duration // the longest request in the window
}

// latencyWindow and latencySlots shape Stats.Latency's window.
const (
	latencyWindow = time.Minute
	latencySlots  = 12
)

func newLatencyWindow() *latency.Window { return latency.New(latencyWindow, latencySlots) }

// proxyStats are the always-on counters behind Stats: atomics only, so
// that they cost a request next to nothing.
type proxyStats struct {
	requests, denials atomic.Uint64
	refusedConns      atomic.Uint64
	// HandshakeRefusals' counters: the PROXY protocol's,
	// TLS's and SOCKS5's (front.go, socks.go).
	refusedProxyHeader, refusedTLS, refusedSOCKS atomic.Uint64
	active                                       atomic.Int64
	tunnels                                      atomic.Int64
	errors                                       [10]atomic.Uint64 // indexed by errorIndex
	deniedBy                                     [12]atomic.Uint64 // indexed by denialIndex
	latency                                      *latency.Window

	// Bytes and upstream requests (ByteCounts, ReuseStats).
	reqBytes, respBytes atomic.Uint64
	tunUp, tunDown      atomic.Uint64
	upRequests, upConns atomic.Uint64
}

// denialIndex is the index in deniedBy of a denial reason (countDenial).
func denialIndex(reason string) int {
	switch reason {
	case "rule":
		return 0
	case "private_address":
		return 1
	case "auth":
		return 2
	case "rate_limit":
		return 3
	case "body_size":
		return 4
	case "hook":
		return 5
	case "auth_required":
		return 7
	case "policy":
		return 8
	case "quota_rate":
		return 9
	case "quota_bytes":
		return 10
	case "quota_tunnels":
		return 11
	}
	return 6 // "forbidden" and anything else
}

func errorIndex(kind error) int {
	switch kind {
	case ErrMalformed:
		return 0
	case ErrAuthRequired:
		return 1
	case ErrForbidden:
		return 2
	case ErrUnavailable:
		return 3
	case ErrUpstreamTimeout:
		return 5
	case ErrLoop:
		return 6
	case ErrRateLimited:
		return 7
	case ErrTooLarge:
		return 8
	case ErrClientTimeout:
		return 9
	}
	return 4 // ErrUpstream and anything else
}

func (s *proxyStats) countError(kind error) { s.errors[errorIndex(kind)].Add(1) }

// Stats returns a snapshot of the Proxy's counters. It takes no lock that
// requests take and, but for Stats.Upstreams, does not allocate, so it can
// be called every second.
func (p *Proxy) Stats() Stats {
	s := &p.stats
	q := s.latency.Snapshot()
	e := &s.errors
	d := &s.deniedBy
	return Stats{
		Requests: s.requests.Load(),
		Errors: ErrorCounts{
			Malformed:       e[0].Load(),
			AuthRequired:    e[1].Load(),
			Forbidden:       e[2].Load(),
			Unavailable:     e[3].Load(),
			Upstream:        e[4].Load(),
			UpstreamTimeout: e[5].Load(),
			Loop:            e[6].Load(),
			RateLimited:     e[7].Load(),
			TooLarge:        e[8].Load(),
			ClientTimeout:   e[9].Load(),
		},
		Denials: s.denials.Load(),
		DeniedBy: DenialCounts{
			Rule:           d[0].Load(),
			PrivateAddress: d[1].Load(),
			Auth:           d[2].Load(),
			RateLimit:      d[3].Load(),
			BodySize:       d[4].Load(),
			Hook:           d[5].Load(),
			Forbidden:      d[6].Load(),
			AuthRequired:   d[7].Load(),
			Policy:         d[8].Load(),
			QuotaRate:      d[9].Load(),
			QuotaBytes:     d[10].Load(),
			QuotaTunnels:   d[11].Load(),
		},
		Bytes: ByteCounts{
			RequestBodies:  s.reqBytes.Load(),
			ResponseBodies: s.respBytes.Load(),
			TunnelUp:       s.tunUp.Load(),
			TunnelDown:     s.tunDown.Load(),
		},
		Reuse:              ReuseStats{Requests: s.upRequests.Load(), NewConns: s.upConns.Load()},
		ActiveRequests:     s.active.Load(),
		ActiveConnections:  p.conns.Load(),
		RefusedConnections: s.refusedConns.Load(),
		RefusedHandshakes: HandshakeRefusals{ProxyProtocol: s.refusedProxyHeader.Load(),
			TLS: s.refusedTLS.Load(), SOCKS: s.refusedSOCKS.Load()},
		ActiveTunnels: s.tunnels.Load(),
		Latency:       LatencyStats{Count: q.Count, P50: q.P50, P95: q.P95, P99: q.P99, Max: q.Max},
		LogDropped:    p.logDropped(),
		DNS:           p.dnsStats(),      // upstream.go
		Config:        p.configStats(),   // reload.go
		Upstreams:     p.upstreamStats(), // routestats.go
		Quotas: QuotaStats{Cuts: p.quotas.cuts.Load(), StoreErrors: p.quotas.storeErrors.Load(),
			StoreFailing: p.quotas.storeDown.Load()},
	}
}
