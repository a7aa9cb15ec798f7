package redisstore

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"
)

// quotaScript adds to a usage counter of a fixed window aligned to the Unix
// epoch, on Redis's clock. The key is a hash of the window's start (w) and
// its usage (u), expiring when the window ends; a hash from an earlier
// window is started afresh, whether or not it has expired yet.
//
//	KEYS[1]  the quota's key
//	ARGV[1]  bytes to add
//	ARGV[2]  window length in milliseconds
//
// It returns {usage after the add, window end in Unix milliseconds}.
var quotaScript = newScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[2])
local start = now - (now % w)
local startS = string.format('%.0f', start)
local used
if redis.call('HGET', KEYS[1], 'w') == startS then
  used = redis.call('HINCRBY', KEYS[1], 'u', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'w', startS, 'u', ARGV[1])
  used = tonumber(ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', start + w))
return {used, start + w}
`)

// AddBytes adds n (at least 0; 0 reads the usage) to key's usage in the
// current fixed window of length window, a whole number of milliseconds
// aligned to the Unix epoch on Redis's clock, and returns the usage after
// the add and when the window resets, in one round trip (a Lua script:
// HINCRBY and PEXPIREAT). Each window length has its own counters.
//
// While Redis is unreachable the Quotas policy decides and err is nil:
// FailOpen counts locally and returns the usage last seen in Redis plus the
// bytes counted since, scaled by 1/the local share; those bytes are added in
// Redis with the next successful AddBytes of the same window. FailClosed
// returns math.MaxInt64 and a reset one probe interval away. err is non-nil
// only for invalid arguments, a closed Store or the caller's context ending.
func (s *Store) AddBytes(ctx context.Context, key string, n int64, window time.Duration) (used int64, reset time.Time, err error) {
	if n < 0 {
		return 0, time.Time{}, fmt.Errorf("redisstore: AddBytes of %d bytes", n)
	}
	if window < time.Millisecond || window%time.Millisecond != 0 {
		return 0, time.Time{}, fmt.Errorf("redisstore: quota window %v must be a whole number of milliseconds", window)
	}
	w := window.Milliseconds()
	rkey := s.key("q", strconv.FormatInt(w, 10)+":"+key)
	start, end := windowOf(s.local.now(), w)
	add := n + s.local.takePending(rkey, start)
	var res []any
	failed, err := s.call(ctx, func(ctx context.Context) error {
		v, err := quotaScript.Run(ctx, s.rdb, []string{rkey}, add, w).Slice()
		res = v
		return err
	})
	if !failed {
		if err == nil && len(res) == 2 {
			u, ok1 := res[0].(int64)
			e, ok2 := res[1].(int64)
			if ok1 && ok2 {
				s.local.sawQuota(rkey, start, u, 0)
				return u, time.UnixMilli(e), nil
			}
		}
		if err != nil {
			s.local.sawQuota(rkey, start, -1, add-n) // only the pending bytes: n was not counted
			return 0, time.Time{}, err
		}
	}
	s.stats.fallbacks.Add(1)
	s.local.sawQuota(rkey, start, -1, add-n)
	used = s.local.addQuota(rkey, start, n, s.share)
	if s.policy[Quotas] == FailClosed {
		return math.MaxInt64, time.Now().Add(s.probe), nil
	}
	return used, time.UnixMilli(end), nil
}
