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
	fs.IntVar(&l.maxConns, "max-conns", autoLimit, "client connections served at once; past `N` new ones get 503 at accept (0: as many as the descriptor limit holds; lowered to fit it)")
	def("max-conns")
	fs.IntVar(&l.maxTunnels, "max-tunnels", autoLimit, "CONNECT and upgraded tunnels open at once; past `N` 503 (0: as many as the descriptor limit holds; lowered to fit it)")
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

// autoLimit, the default of -max-conns and -max-tunnels, sizes the limit
// from the descriptor limit (resolveAuto), so that the default is not what
// stops a user first: 9,000 idle tunnels or 9,000 connections under a hard
// limit of 20,000.
const autoLimit = 0

// fdBudget is what the limits need in descriptors at most: a client
// connection in flight holds one upstream connection, a tunnel two
// descriptors (its client and upstream connections; a parked tunnel holds
// nothing else), the upstream pool its idle connections. With shared
// (both connections and tunnels sized automatically) the two share the
// budget: it counts the larger of them only.
func fdBudget(conns, tunnels, idle int, shared bool) uint64 {
	if shared {
		return 2*uint64(max(conns, tunnels)) + uint64(idle) + fdReserve
	}
	return 2*uint64(conns) + 2*uint64(tunnels) + uint64(idle) + fdReserve
}

// minAutoLimit is the least an automatic limit beside a given one gets.
const minAutoLimit = 64

// resolveAuto gives the limits set to autoLimit their value in limit
// descriptors (0: unknown): what the budget leaves them after the reserve,
// the upstream pool and the limit given, two descriptors each. When both
// are automatic, each may take all of what is left (shared), and at least
// the library's default (fitLimits lowers them to fit, when it must): a mix
// of connections and tunnels may then reach the descriptor limit before
// either limit, and accept waits for a descriptor; set them to share it out
// instead. Beside a limit given, the automatic one gets at least
// minAutoLimit.
func resolveAuto(limit uint64, conns, tunnels, idle int) (int, int, bool) {
	autoC, autoT := conns == autoLimit, tunnels == autoLimit
	if !autoC && !autoT {
		return conns, tunnels, false
	}
	rest := int64(limit) - fdReserve - int64(idle)
	if !autoC {
		rest -= 2 * int64(max(conns, 0))
	}
	if !autoT {
		rest -= 2 * int64(max(tunnels, 0))
	}
	share := int(max(rest/2, 0))
	if limit == 0 {
		share = 0
	}
	switch {
	case autoC && autoT:
		conns, tunnels = max(share, fwdproxy.DefaultMaxConns), max(share, fwdproxy.DefaultMaxTunnels)
	case autoC:
		conns = max(share, minAutoLimit)
	default:
		tunnels = max(share, minAutoLimit)
	}
	return conns, tunnels, autoC && autoT
}

// fitLimits sizes the automatic limits (resolveAuto) and lowers the
// limits, in proportion, until they fit in limit descriptors with
// fdReserve to spare; limit 0 (unknown) lowers nothing. Lowering rather
// than only warning is on purpose: a proxy past its descriptor limit fails
// accept on every listener, the metrics one included, while one within it
// refuses the excess cleanly with 503. A negative limit is left for the
// library to refuse.
func fitLimits(limit uint64, conns, tunnels, idle int) (int, int, int, bool) {
	conns, tunnels, shared := resolveAuto(limit, conns, tunnels, idle)
	if conns < 0 || tunnels < 0 || idle < 0 {
		return conns, tunnels, idle, false
	}
	need := fdBudget(conns, tunnels, idle, shared)
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
			"limit", soft, "needed", l.needed(soft),
			"max_conns", f.conns, "max_tunnels", f.tunnels, "max_idle_upstream", f.idle)
	}
}

// needed is what the limits as given need in soft descriptors, the
// automatic ones at their value before any lowering.
func (l *limitFlags) needed(soft uint64) uint64 {
	conns, tunnels, shared := resolveAuto(soft, l.maxConns, l.maxTunnels, l.maxIdle)
	return fdBudget(conns, tunnels, l.maxIdle, shared)
}
