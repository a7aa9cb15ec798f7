package redisstore

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// The interfaces below are the ones the core library will define for shared
// state (issue 19). They live here, as documentation, until the core has
// them; the assertions at the end keep *Store in step with them. When the
// core gains them, these declarations move there (Rate and Decision with
// them) and this file keeps only the assertions.

// CertStore caches minted leaf certificates by host. It has the method set
// of fwdproxy.CertStore: Get returns certificates with Leaf set and reports
// failures as misses; Put never fails visibly.
type CertStore interface {
	Get(ctx context.Context, host string) (*tls.Certificate, bool)
	Put(ctx context.Context, host string, cert *tls.Certificate)
}

// CertLocker is optional on a CertStore: it lets replicas mint a host's
// certificate once.
type CertLocker interface {
	// LockMint tries to become the one minter of host's certificate for ttl. If another
	// replica holds the lock, it waits (up to ctx) for that replica's Put and returns the
	// certificate it stored (cert != nil, unlock nil). Otherwise it returns unlock (cert nil).
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
type RateLimitStore interface {
	Allow(ctx context.Context, key string, r Rate) (Decision, error)
}

// QuotaStore counts usage, such as bytes, in fixed windows shared by every
// replica using it.
type QuotaStore interface {
	// AddBytes adds n to key's usage in the current fixed window of length window
	// (aligned to the Unix epoch) and returns the usage after the add and when the window resets.
	AddBytes(ctx context.Context, key string, n int64, window time.Duration) (used int64, reset time.Time, err error)
}

// LeaseStore holds concurrency leases, such as one per open tunnel, shared
// by every replica using it.
type LeaseStore interface {
	// Acquire takes one of max concurrent leases on key for ttl; ok is false when all are taken.
	Acquire(ctx context.Context, key string, max int, ttl time.Duration) (id string, ok bool, err error)
	Renew(ctx context.Context, key, id string, ttl time.Duration) error
	Release(ctx context.Context, key, id string) error
}

var (
	_ fwdproxy.CertStore = (*Store)(nil) // the core's interface, as it is today
	_ CertStore          = (*Store)(nil)
	_ CertLocker         = (*Store)(nil)
	_ RateLimitStore     = (*Store)(nil)
	_ QuotaStore         = (*Store)(nil)
	_ LeaseStore         = (*Store)(nil)
)
