package main

import (
	"flag"
	"log/slog"

	"github.com/fwdproxy/fwdproxy"
)

// limitFlags are the limits that hold file descriptors: client
// connections, tunnels and the upstream pool. They must fit in the
// descriptor limit (fitLimits).
type limitFlags struct {
	maxConns, maxTunnels    int
	maxIdlePerHost, maxIdle int
}

// register defines the flags on fs; def records each in the flag order.
func (l *limitFlags) register(fs *flag.FlagSet, def func(name string)) {
	fs.IntVar(&l.maxConns, "max-conns", fwdproxy.DefaultMaxConns, "client connections served at once; past `N` new ones get 503 at accept (lowered to fit the descriptor limit)")
	def("max-conns")
	fs.IntVar(&l.maxTunnels, "max-tunnels", fwdproxy.DefaultMaxTunnels, "CONNECT and upgraded tunnels open at once; past `N` 503 (lowered to fit the descriptor limit)")
	def("max-tunnels")
	fs.IntVar(&l.maxIdlePerHost, "max-idle-conns-per-host", fwdproxy.DefaultMaxIdleConnsPerHost, "idle upstream connections kept per host, at most `N`")
	def("max-idle-conns-per-host")
	fs.IntVar(&l.maxIdle, "max-idle-conns", fwdproxy.DefaultMaxIdleConns, "idle upstream connections kept in all, at most `N` (lowered to fit the descriptor limit)")
	def("max-idle-conns")
}

// fdReserve is kept out of the budget for everything that is not a proxied
// connection: the listeners, the admin listener's connections, log and
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

// fitted is what the limits became in a descriptor budget.
type fitted struct {
	conns, tunnels, idle, idlePerHost int
	lowered                           bool
}

// fit lowers the limits to fit in the soft descriptor limit (fitLimits).
func (l *limitFlags) fit(soft uint64) fitted {
	conns, tunnels, idle, lowered := fitLimits(soft, l.maxConns, l.maxTunnels, l.maxIdle)
	perHost := l.maxIdlePerHost
	if lowered {
		perHost = min(perHost, idle)
	}
	return fitted{conns, tunnels, idle, perHost, lowered}
}

// options are the limit options.
func (f fitted) options() []fwdproxy.Option {
	return []fwdproxy.Option{
		fwdproxy.WithMaxConns(f.conns),
		fwdproxy.WithMaxTunnels(f.tunnels),
		fwdproxy.WithMaxIdleConns(f.idlePerHost, f.idle),
	}
}

// logFDLimit logs the descriptor limit and the limits in it, at Warn when
// they had to be lowered.
func (l *limitFlags) logFDLimit(logger *slog.Logger, soft, hard uint64, f fitted) {
	logger.Info("file descriptor limit", "soft", soft, "hard", hard,
		"max_conns", f.conns, "max_tunnels", f.tunnels, "max_idle_upstream", f.idle, "reserve", fdReserve)
	if f.lowered {
		logger.Warn("limits lowered to fit the file descriptor limit; raise it (ulimit -n, LimitNOFILE=) to allow more",
			"limit", soft, "needed", fdBudget(l.maxConns, l.maxTunnels, l.maxIdle),
			"max_conns", f.conns, "max_tunnels", f.tunnels, "max_idle_upstream", f.idle)
	}
}
