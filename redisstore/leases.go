package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// The lease scripts keep a key's leases in a sorted set: member the lease
// id, score its expiry in Unix milliseconds on Redis's clock. The set
// expires with its last lease, so a key whose holders all died leaves
// nothing behind.

// acquireScript removes expired leases, counts the rest and adds one when
// fewer than max are held.
//
//	KEYS[1]  the leases' key
//	ARGV[1]  lease id
//	ARGV[2]  max
//	ARGV[3]  ttl in milliseconds
//
// It returns {granted (0/1), leases held after the call}.
var acquireScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
  return {0, n}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return {1, n + 1}
`)

// renewScript sets a lease's expiry to now + ttl, adding it back when it
// had expired or Redis lost it.
//
//	KEYS[1]  the leases' key
//	ARGV[1]  lease id
//	ARGV[2]  ttl in milliseconds
//
// It returns 1 when the lease was added back, 0 when it was extended.
var renewScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
if old == nil or old <= now then
  return 1
end
return 0
`)

// newID returns a random lease or lock id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func validTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("redisstore: ttl %v must be at least 1ms", ttl)
	}
	return nil
}

// Acquire takes one of max concurrent leases on key for ttl, shared by
// every Store on the same Redis and key prefix, in one round trip (a Lua
// script on a sorted set: remove the expired, count, add when under max).
// ok is false when all max are taken. Keep a lease with Renew before its ttl
// passes (see Lease, which does it) and Release it when done; a lease whose
// holder dies, killed or cut off, is free once its ttl passes.
//
// While Redis is unreachable the Leases policy decides and err is nil:
// FailOpen grants a local lease when this Store holds fewer than the local
// share of max on key (leases it holds in Redis included), FailClosed grants
// none. A local lease stays local: Renew and Release handle it without
// Redis. err is non-nil only for invalid arguments, a closed Store or the
// caller's context ending.
func (s *Store) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (id string, ok bool, err error) {
	if max < 1 {
		return "", false, fmt.Errorf("redisstore: lease max %d must be at least 1", max)
	}
	if err := validTTL(ttl); err != nil {
		return "", false, err
	}
	id = newID()
	rkey := s.key("lease", key)
	var res []any
	failed, err := s.call(ctx, func(ctx context.Context) error {
		v, err := acquireScript.Run(ctx, s.rdb, []string{rkey}, id, max, ttl.Milliseconds()).Slice()
		res = v
		return err
	})
	if !failed {
		if err != nil {
			return "", false, err
		}
		if len(res) == 2 {
			if granted, _ := res[0].(int64); granted == 1 {
				s.local.held(key, id, time.Now().Add(ttl))
				return id, true, nil
			}
			return "", false, nil
		}
	}
	s.stats.fallbacks.Add(1)
	if s.policy[Leases] == FailClosed {
		return "", false, nil
	}
	id, ok = s.local.acquireLocal(key, s.localLimit(max), ttl)
	return id, ok, nil
}

// ErrUnavailable is returned by Renew and Release when Redis could not be
// reached in time. A lease that could not be renewed stays valid in Redis
// until its ttl passes; one that could not be released is freed then.
var ErrUnavailable = errors.New("redisstore: redis unavailable")

// Renew extends lease id on key to ttl from now, in one round trip. A lease
// that had expired, or that Redis lost in a restart, is added back even if
// max leases are now held: it stands for something, a tunnel, that is still
// open. Local leases (granted while Redis was unreachable) are renewed
// locally.
func (s *Store) Renew(ctx context.Context, key, id string, ttl time.Duration) error {
	if err := validTTL(ttl); err != nil {
		return err
	}
	if isLocalLease(id) {
		if !s.local.renewLocal(key, id, ttl) {
			return fmt.Errorf("redisstore: renew: no local lease %q on %q", id, key)
		}
		return nil
	}
	failed, err := s.call(ctx, func(ctx context.Context) error {
		return renewScript.Run(ctx, s.rdb, []string{s.key("lease", key)}, id, ttl.Milliseconds()).Err()
	})
	if failed {
		return fmt.Errorf("%w: renew: %w", ErrUnavailable, err)
	}
	if err == nil {
		s.local.held(key, id, time.Now().Add(ttl))
	}
	return err
}

// Release gives lease id on key back, in one round trip (ZREM); releasing a
// lease that is not held is not an error.
func (s *Store) Release(ctx context.Context, key, id string) error {
	s.local.released(key, id)
	if isLocalLease(id) {
		return nil
	}
	failed, err := s.call(ctx, func(ctx context.Context) error {
		return s.rdb.ZRem(ctx, s.key("lease", key), id).Err()
	})
	if failed {
		return fmt.Errorf("%w: release: %w", ErrUnavailable, err)
	}
	return err
}
