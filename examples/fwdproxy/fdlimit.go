package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// limitFlags are the connection limits and the body idle timeout, and the
// descriptor budget they must fit in.
type limitFlags struct {
	maxConns, maxTunnels int
	bodyIdle             time.Duration
}

func (l *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&l.maxConns, "max-conns", fwdproxy.DefaultMaxConns, "client connections served at once; past it new ones get 503 at accept (lowered to fit the descriptor limit)")
	fs.IntVar(&l.maxTunnels, "max-tunnels", fwdproxy.DefaultMaxTunnels, "CONNECT and upgraded tunnels open at once; past it 503 (lowered to fit the descriptor limit)")
	fs.DurationVar(&l.bodyIdle, "body-idle-timeout", fwdproxy.DefaultBodyIdleTimeout, "give up on a request or response body that moves no byte for this long (408 to a stalled upload, a cut connection for a stalled download)")
}

// fdReserve is kept out of the budget for everything that is not a proxied
// connection: the listeners, the metrics listener's connections, log and
// trace files, DNS sockets, a CA file read at start.
const fdReserve = 64

// fdBudget is what the limits need in descriptors at most: a client
// connection in flight holds one upstream connection, a tunnel two
// descriptors, the upstream pool its idle connections.
func fdBudget(conns, tunnels, idle int) uint64 {
	return 2*uint64(conns) + 2*uint64(tunnels) + uint64(idle) + fdReserve
}

// fitLimits lowers the limits, in proportion, until they fit in limit
// descriptors with fdReserve to spare; limit 0 (unknown) changes nothing.
// Lowering rather than only warning is on purpose: a proxy past its
// descriptor limit fails accept on every listener, the metrics one
// included, while one within it refuses the excess cleanly with 503.
func fitLimits(limit uint64, conns, tunnels, idle int) (int, int, int, bool) {
	need := fdBudget(conns, tunnels, idle)
	if limit == 0 || need <= limit {
		return conns, tunnels, idle, false
	}
	avail := uint64(0)
	if limit > fdReserve {
		avail = limit - fdReserve
	}
	scale := func(n int) int { return max(1, int(uint64(n)*avail/(need-fdReserve))) }
	return scale(conns), scale(tunnels), scale(idle), true
}

// options raises the soft descriptor limit to the hard one where allowed
// (Go does so at start on most systems already), logs the limit, and
// returns the limit options, lowered to fit it if need be.
func (l *limitFlags) options(logger *slog.Logger) []fwdproxy.Option {
	soft, hard := raiseFDLimit() // fdlimit_unix.go, fdlimit_other.go
	conns, tunnels, idle, lowered := fitLimits(soft, l.maxConns, l.maxTunnels, fwdproxy.DefaultMaxIdleConns)
	logger.Info("file descriptor limit", "soft", soft, "hard", hard,
		"max_conns", conns, "max_tunnels", tunnels, "max_idle_upstream", idle, "reserve", fdReserve)
	if lowered {
		logger.Warn("limits lowered to fit the file descriptor limit; raise it (ulimit -n, LimitNOFILE=) to allow more",
			"limit", soft, "needed", fdBudget(l.maxConns, l.maxTunnels, fwdproxy.DefaultMaxIdleConns),
			"max_conns", conns, "max_tunnels", tunnels, "max_idle_upstream", idle)
	}
	return []fwdproxy.Option{
		fwdproxy.WithMaxConns(conns),
		fwdproxy.WithMaxTunnels(tunnels),
		fwdproxy.WithMaxIdleConns(min(fwdproxy.DefaultMaxIdleConnsPerHost, idle), idle),
		fwdproxy.WithBodyIdleTimeout(l.bodyIdle),
	}
}
