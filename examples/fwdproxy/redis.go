package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/redisstore"
)

// -redis: the Redis that replicas share (the redisstore module). With it,
// the certificates minted for interception, the policies' rate limits,
// byte quotas and tunnel counts are kept there, so that every replica on
// the same Redis enforces them together; /readyz checks that Redis
// answers. It is fixed: opened once at start.

// openRedis opens the Store of -redis, or returns nil without it. Redis
// need not answer yet: until it does, the Store decides in memory (and
// /readyz says it is not ready).
func openRedis(l *loaded, logger *slog.Logger) (*redisstore.Store, error) {
	if l.s.redis == "" {
		return nil, nil
	}
	s, err := redisstore.Open(l.s.redis, redisstore.WithLogger(logger))
	if err != nil {
		return nil, l.problem("redis", strings.TrimPrefix(err.Error(), "redisstore: "))
	}
	logger.Info("sharing state through Redis", "addr", redactedRedis(l.s.redis))
	return s, nil
}

// redactedRedis is the Redis URL without its password, for the log.
func redactedRedis(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(unparsable)"
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}

// readyChecks are the server's checks of /readyz beyond the Proxy's own:
// Redis answering, when -redis is set.
func readyChecks(s *redisstore.Store) []fwdproxy.ReadyCheck {
	if s == nil {
		return nil
	}
	return []fwdproxy.ReadyCheck{{Name: "redis", Check: func(ctx context.Context) error { return s.Ping(ctx) }}}
}
