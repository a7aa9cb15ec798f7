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

// newH1Transport builds the own HTTP/1.1 transport. It outlives
// configurations, as its pool does, and reads its limits and timeouts from
// the configuration in force (h1Settings).
func (p *Proxy) newH1Transport() *h1.Transport {
	return h1.NewTransport(h1.TransportConfig{Dial: p.dial, Settings: p.h1Settings})
}

// h1Settings returns the own transport's settings in force: those
// buildConfig made for the configuration in force.
func (p *Proxy) h1Settings() *h1.TransportSettings { return &p.cfg.Load().h1tr }
