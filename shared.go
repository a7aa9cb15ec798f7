package fwdproxy

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/quota"
)

// Shared state: what replicas of a proxy share so that they behave as one
// (certificates minted for interception, per-user rate limits, byte quotas
// and concurrent-tunnel counts). The interfaces below are implemented by a
// store outside the library, such as the redisstore module on Redis;
// without one (WithSharedState) a Proxy keeps all of it in memory, so
// per-user quotas work on one machine alone.

// CertLocker is optional on a CertStore (WithCertStore): when the store has
// it, a Proxy that misses a host's certificate asks for the mint lock
// before minting, so that replicas sharing the store mint each host once.
type CertLocker interface {
	// LockMint tries to become the one minter of host's certificate for
	// ttl. If another replica holds the lock, it waits (up to ctx) for that
	// replica's Put and returns the certificate it stored (cert != nil,
	// unlock nil). Otherwise it returns unlock (cert nil), which the minter
	// calls after its Put. An error lets the caller mint alone.
	LockMint(ctx context.Context, host string, ttl time.Duration) (cert *tls.Certificate, unlock func(), err error)
}

// Rate is a rate limit: PerSecond events a second on average, and bursts of
// up to Burst events.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Decision is the answer of a RateLimitStore: whether the event is allowed,
// when to retry when it is not, and how many more events the burst allows
// right now when it is.
type Decision struct {
	Allowed    bool
	RetryAfter time.Duration
	Remaining  int
}

// RateLimitStore decides rate limits shared by every replica using it.
// Implementations must be safe for concurrent use and answer within a short
// timeout: a Proxy asks it once per request of a user whose Policy has a
// rate.
type RateLimitStore interface {
	// Allow decides whether one more event of key is allowed at rate r. An
	// error means no decision: the Proxy then decides with its in-memory
	// limit and counts a store failure.
	Allow(ctx context.Context, key string, r Rate) (Decision, error)
}

// RateTaker is optional on a RateLimitStore (redisstore.Store has it): with
// it, a Proxy takes a shared rate limit's events in batches and spends them
// locally, one a request, so that a request does not wait for the store
// while the batch lasts. A batch is the events of RateBatchWindow at the
// rate (at least 1, at most the burst); the next is taken in the
// background when half of it is left, and a request waits for the store
// (at most DefaultStoreTimeout) only when the batch is used up. With
// batches of one (rates under 20 a second, or a burst of 1) every request
// asks the store's Allow, as without RateTaker.
//
// The bound: events taken but not yet spent stay with the replica that
// took them, at most one batch per replica and limit. Over any span of
// time, a limit shared by N replicas admits at most N batches more than
// the rate and burst allow (events taken before the span, spent in it),
// and may refuse a request while up to N batches wait unspent elsewhere.
type RateTaker interface {
	// Take takes up to n events of key at rate r at once: as many as the
	// limit allows now (0 to n). When it takes none, retryAfter says when
	// one would be allowed. An error means no decision (as for Allow).
	Take(ctx context.Context, key string, r Rate, n int) (taken int, retryAfter time.Duration, err error)
}

// RateBatchWindow sizes the batches of a RateTaker: the events of this
// span at the limit's rate.
const RateBatchWindow = 100 * time.Millisecond

// QuotaStore counts usage, such as bytes, in fixed windows shared by every
// replica using it.
type QuotaStore interface {
	// AddBytes adds n (0: none, to learn the usage) to key's usage in the
	// current fixed window of length window (aligned to the Unix epoch) and
	// returns the usage after the add and when the window resets.
	AddBytes(ctx context.Context, key string, n int64, window time.Duration) (used int64, reset time.Time, err error)
}

// LeaseStore holds concurrency leases, such as one per open tunnel, shared
// by every replica using it. A lease not renewed within its ttl ends, so
// the leases of a replica that died are freed within the ttl.
type LeaseStore interface {
	// Acquire takes one of max concurrent leases on key for ttl; ok is
	// false when all are taken.
	Acquire(ctx context.Context, key string, max int, ttl time.Duration) (id string, ok bool, err error)
	// Renew extends the lease id on key by ttl from now.
	Renew(ctx context.Context, key, id string, ttl time.Duration) error
	// Release gives the lease id on key back.
	Release(ctx context.Context, key, id string) error
}

// SharedState is what WithSharedState takes: a store of rate limits, byte
// quotas and leases, as redisstore.Store is.
type SharedState interface {
	RateLimitStore
	QuotaStore
	LeaseStore
}

// DefaultStoreTimeout bounds how long a request waits for the shared
// store (WithSharedState) on each call; DefaultLeaseTTL is how long a
// tunnel's lease lives unless renewed (a third of it between renewals).
const (
	DefaultStoreTimeout = 50 * time.Millisecond
	DefaultLeaseTTL     = 30 * time.Second
)

// memoryState is the in-memory SharedState a Proxy uses without
// WithSharedState: one per Proxy, kept across reloads.
type memoryState struct{ m *quota.Memory }

func (s memoryState) Allow(_ context.Context, key string, r Rate) (Decision, error) {
	d := s.m.Allow(key, r.PerSecond, r.Burst)
	return Decision(d), nil
}

func (s memoryState) AddBytes(_ context.Context, key string, n int64, window time.Duration) (int64, time.Time, error) {
	used, reset := s.m.AddBytes(key, n, window)
	return used, reset, nil
}

func (s memoryState) Acquire(_ context.Context, key string, max int, ttl time.Duration) (string, bool, error) {
	id, ok := s.m.Acquire(key, max, ttl)
	return id, ok, nil
}

func (s memoryState) Renew(_ context.Context, key, id string, ttl time.Duration) error {
	s.m.Renew(key, id, ttl)
	return nil
}

func (s memoryState) Release(_ context.Context, key, id string) error {
	s.m.Release(key, id)
	return nil
}
