// Package dashboard serves the admin listener's live dashboard: it samples
// the proxy's counters once a second through a [Source], keeps 15 minutes
// of per-second rates and latencies, counts the top destinations with a
// small space-saving counter, and serves the page (/), the JSON
// (/api/stats) and a Server-Sent Events stream (/api/stats/stream).
package dashboard

import "time"

// Sample is one reading of the proxy's counters. Counters are cumulative
// since the proxy started (the dashboard computes the rates); gauges
// (Active…) and latencies are as of the reading.
type Sample struct {
	// Requests counts the requests completed, tunnels included.
	Requests uint64
	// Errors counts failed or refused requests by kind, with the kinds of
	// the access log ("malformed", "upstream_timeout", …).
	Errors map[string]uint64
	// Denials counts requests refused by access control, by reason
	// ("forbidden", "auth_required", a rule's name, …).
	Denials map[string]uint64
	// ActiveConnections, ActiveRequests and ActiveTunnels are the client
	// connections, requests being served (tunnels included) and tunnels
	// open now.
	ActiveConnections, ActiveRequests, ActiveTunnels int64
	// BytesIn counts the bytes received from clients and passed on:
	// request bodies and tunnel bytes from clients. BytesOut counts the
	// bytes sent to clients: response bodies and tunnel bytes to them.
	BytesIn, BytesOut uint64
	// DNSHits and DNSMisses count the resolver's lookups answered from its
	// cache and those that waited for a query.
	DNSHits, DNSMisses uint64
	// UpstreamNew and UpstreamReused count the upstream connections taken
	// for requests: newly dialed, or reused from the pool.
	UpstreamNew, UpstreamReused uint64
	// P50, P95 and P99 are request latency quantiles over a recent window
	// (the proxy's Stats().Latency).
	P50, P95, P99 time.Duration
}

// Source gives the dashboard its readings. The proxy implements it from
// its Stats; Sample is called once a second from one goroutine, and may
// allocate (the maps).
type Source interface {
	Sample() Sample
}

// SourceFunc adapts a function to [Source].
type SourceFunc func() Sample

// Sample calls f.
func (f SourceFunc) Sample() Sample { return f() }
