package fwdproxy

import (
	"github.com/fwdproxy/fwdproxy/internal/h1"
)

// The proxy's own HTTP/1.1 transport (internal/h1's Transport): a bodyless
// request to a plain-http upstream is sent by the handler goroutine itself
// on a connection from its pool, written in one system call, its response
// head parsed by a short parser, and a Content-Length body spliced to the
// client by the kernel. The router (route, transport.go) chooses it per
// request; everything else takes the shared http.Transport.
//
// Its pool keeps idle connections per host, most recently used first, and
// enforces WithMaxIdleConns by trimming within a second rather than at
// hand-back, so that a burst of more concurrent requests than the limit
// reuses its connections instead of redialing them. It dials through p.dial,
// like every other upstream connection.

// newH1Transport builds the own HTTP/1.1 transport with the settings st,
// which are fixed for its life: it serves every configuration that leaves
// them unchanged, with its pool, and Reload builds a new one when they
// change (upstream.go).
func (p *Proxy) newH1Transport(st *h1.TransportSettings) *h1.Transport {
	return h1.NewTransport(h1.TransportConfig{Dial: p.dial, Settings: func() *h1.TransportSettings { return st }})
}
