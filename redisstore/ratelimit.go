package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript is the generic cell rate algorithm (GCRA) of one rate limit,
// in microseconds on Redis's clock, so that replicas with skewed clocks
// agree. The key holds the theoretical arrival time (TAT) of the next event
// and expires when the bucket is full again.
//
//	KEYS[1]  the limit's key
//	ARGV[1]  emission interval: microseconds between events at the rate
//	ARGV[2]  burst
//
// It returns {allowed (0/1), remaining, retry after in microseconds}.
var gcraScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local diff = now - (new_tat - interval * burst)
if diff < 0 then
  return {0, 0, math.ceil(-diff)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor(diff / interval), 0}
`)

// Limit is one rate-limit decision asked of AllowMany.
type Limit struct {
	Key  string
	Rate Rate
}

// validRate reports why r is not a usable rate.
func validRate(r Rate) error {
	if !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) {
		return fmt.Errorf("redisstore: rate %v must be positive and finite", r.PerSecond)
	}
	if r.Burst < 1 {
		return fmt.Errorf("redisstore: burst %d must be at least 1", r.Burst)
	}
	return nil
}

// gcraArgs returns the script's arguments for r.
func gcraArgs(r Rate) []any {
	return []any{strconv.FormatFloat(1e6/r.PerSecond, 'f', 3, 64), r.Burst}
}

// Allow decides whether one more event of key is allowed at rate r, shared
// by every Store on the same Redis and key prefix (a GCRA in one Lua
// script). Concurrent calls are pipelined: while one pipeline is in flight,
// the calls that arrive wait for the next, which carries them all, so that
// a busy proxy makes fewer round trips than decisions, and never more. A
// denied event gets the time after which one would be allowed. While Redis
// is unreachable the RateLimits policy decides (see Policy) and err is nil;
// err is non-nil only for an invalid rate, a closed Store or the caller's
// context ending. A call still waiting for its pipeline when the timeout
// passes is decided by the failure policy (its event may still count in
// Redis once the pipeline is through).
func (s *Store) Allow(ctx context.Context, key string, r Rate) (Decision, error) {
	if err := validRate(r); err != nil {
		return Decision{}, err
	}
	if s.closed.Load() {
		return Decision{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}
	req := &rateReq{limit: Limit{Key: key, Rate: r}, done: make(chan struct{})}
	b := &s.rates
	b.mu.Lock()
	b.queue = append(b.queue, req)
	lead := !b.busy
	b.busy = true
	b.mu.Unlock()
	if lead {
		s.runRateBatch()
	}
	// No call waits past the timeout, though a pipeline in flight and its
	// own may take one each: past it, the failure policy decides.
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-req.done:
		return req.d, req.err
	case <-t.C:
		s.stats.timeouts.Add(1)
		return s.rateFallback(key, r), nil
	case <-ctx.Done():
		return Decision{}, ctx.Err()
	}
}

// rateBatcher queues the calls of Allow for the next pipeline.
type rateBatcher struct {
	mu    sync.Mutex
	queue []*rateReq
	busy  bool // a pipeline is in flight, or about to be
}

// rateReq is one call of Allow waiting for its decision.
type rateReq struct {
	limit Limit
	d     Decision
	err   error
	done  chan struct{}
}

// runRateBatch sends the queued decisions in one pipeline (AllowMany) and
// delivers them; when more were queued meanwhile, a goroutine sends those,
// so that the caller that led goes on with its own decision at once.
func (s *Store) runRateBatch() {
	b := &s.rates
	b.mu.Lock()
	batch := b.queue
	b.queue = nil
	b.mu.Unlock()
	limits := make([]Limit, len(batch))
	for i, q := range batch {
		limits[i] = q.limit
	}
	ds, err := s.AllowMany(context.Background(), limits...)
	for i, q := range batch {
		if err != nil {
			q.err = err
		} else {
			q.d = ds[i]
		}
		close(q.done)
	}
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.busy = false
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	go s.runRateBatch()
}

// AllowMany decides several limits in one round trip (a pipeline of the
// script of Allow), for example a user's and a client address's. Each
// decision is independent: an allowed one counts even when another is
// denied. The decisions are in the order of limits.
func (s *Store) AllowMany(ctx context.Context, limits ...Limit) ([]Decision, error) {
	for _, l := range limits {
		if err := validRate(l.Rate); err != nil {
			return nil, err
		}
	}
	out := make([]Decision, len(limits))
	if len(limits) == 0 {
		return out, nil
	}
	cmds := make([]*redis.Cmd, len(limits))
	failed, err := s.call(ctx, func(ctx context.Context) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range limits {
				cmds[i] = gcraScript.EvalSha(ctx, p, []string{s.key("rl", l.Key)}, gcraArgs(l.Rate)...)
			}
			return nil
		})
		if err != nil && !isNoScript(err) {
			return err
		}
		// Redis lost its scripts (a restart, SCRIPT FLUSH): run those
		// that missed again, this once with their source.
		var again []int
		for i, c := range cmds {
			if isNoScript(c.Err()) {
				again = append(again, i)
			}
		}
		if len(again) == 0 {
			return nil
		}
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range again {
				cmds[i] = gcraScript.Eval(ctx, p, []string{s.key("rl", limits[i].Key)}, gcraArgs(limits[i].Rate)...)
			}
			return nil
		})
		return err
	})
	if !failed && err != nil {
		return nil, err
	}
	for i, l := range limits {
		if !failed {
			if res, err := cmds[i].Slice(); err == nil {
				if d, err := parseDecision(res); err == nil {
					out[i] = d
					continue
				}
			}
		}
		out[i] = s.rateFallback(l.Key, l.Rate)
	}
	return out, nil
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// parseDecision reads the script's reply.
func parseDecision(v []any) (Decision, error) {
	if len(v) != 3 {
		return Decision{}, fmt.Errorf("redisstore: rate script answered %d values", len(v))
	}
	var n [3]int64
	for i := range n {
		x, ok := v[i].(int64)
		if !ok {
			return Decision{}, fmt.Errorf("redisstore: rate script answered %T", v[i])
		}
		n[i] = x
	}
	return Decision{Allowed: n[0] == 1, Remaining: int(n[1]), RetryAfter: time.Duration(n[2]) * time.Microsecond}, nil
}

// rateFallback decides with the RateLimits policy.
func (s *Store) rateFallback(key string, r Rate) Decision {
	s.stats.fallbacks.Add(1)
	if s.policy[RateLimits] == FailClosed {
		return Decision{RetryAfter: s.probe}
	}
	return s.local.allow(key, r, s.share)
}

// takeScript is gcraScript taking up to n events at once: as many as the
// burst allows now (the GCRA of n events of cost one each), or none.
//
//	KEYS[1]  the limit's key
//	ARGV[1]  emission interval in microseconds
//	ARGV[2]  burst
//	ARGV[3]  n, the most events to take
//
// It returns {events taken (0..n), retry after in microseconds when none}.
var takeScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local avail = math.floor((now + interval * burst - tat) / interval)
if avail < 1 then
  return {0, math.ceil(tat + interval - interval * burst - now)}
end
local take = math.min(n, avail)
local new_tat = tat + interval * take
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {take, 0}
`)

// Take takes up to n events of key at rate r at once, in one round trip:
// as many as the limit allows now, on the same key and GCRA as Allow (a
// Proxy spends them one request at a time, see fwdproxy.RateTaker). When
// it takes none, retryAfter says when one would be allowed. While Redis is
// unreachable the RateLimits policy decides as for Allow (FailOpen: up to n
// from the local limit; FailClosed: none) and err is nil; err is non-nil
// only for an invalid rate or n, a closed Store or ctx ending.
func (s *Store) Take(ctx context.Context, key string, r Rate, n int) (taken int, retryAfter time.Duration, err error) {
	if err := validRate(r); err != nil {
		return 0, 0, err
	}
	if n < 1 {
		return 0, 0, fmt.Errorf("redisstore: Take of %d events", n)
	}
	rkey := []string{s.key("rl", key)}
	args := append(gcraArgs(r), n)
	var res []any
	failed, err := s.call(ctx, func(ctx context.Context) error {
		v, err := takeScript.EvalSha(ctx, s.rdb, rkey, args...).Slice()
		if isNoScript(err) {
			v, err = takeScript.Eval(ctx, s.rdb, rkey, args...).Slice()
		}
		res = v
		return err
	})
	if !failed && err != nil {
		return 0, 0, err
	}
	if !failed {
		if taken, retry, err := parseTake(res, n); err == nil {
			return taken, retry, nil
		}
	}
	s.stats.fallbacks.Add(1)
	if s.policy[RateLimits] == FailClosed {
		return 0, s.probe, nil
	}
	taken, retryAfter, _ = s.local.take(key, r, s.share, n)
	return taken, retryAfter, nil
}

// parseTake reads takeScript's reply.
func parseTake(v []any, n int) (taken int, retry time.Duration, err error) {
	if len(v) != 2 {
		return 0, 0, fmt.Errorf("redisstore: take script answered %d values", len(v))
	}
	a, ok1 := v[0].(int64)
	b, ok2 := v[1].(int64)
	if !ok1 || !ok2 || a < 0 || a > int64(n) {
		return 0, 0, fmt.Errorf("redisstore: take script answered %v", v)
	}
	return int(a), time.Duration(b) * time.Microsecond, nil
}
