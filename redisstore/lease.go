package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/quota"
)

// Lease is a lease held in a LeaseStore that renews itself every third of
// its ttl until it is released, so that it lives as long as what it stands
// for (a tunnel) and ends within ttl of its holder dying. It starts no
// goroutine while waiting: each renewal runs from a timer. A renewal that
// fails is tried again at the next one; the lease is then at risk only if
// every renewal of a whole ttl fails. It is the lease the fwdproxy core
// keeps for a policy's tunnel (internal/quota), for callers of their own.
type Lease struct {
	l  *quota.Lease
	id string
}

// AcquireLease takes one of max concurrent leases on key in ls for ttl (see
// LeaseStore.Acquire) and, when one is granted, keeps it renewed until
// Release. ok is false when all max are taken.
func AcquireLease(ctx context.Context, ls fwdproxy.LeaseStore, key string, max int, ttl time.Duration) (l *Lease, ok bool, err error) {
	if ls == nil {
		return nil, false, errors.New("redisstore: AcquireLease: nil LeaseStore")
	}
	if ttl < 3*time.Millisecond {
		return nil, false, fmt.Errorf("redisstore: AcquireLease: ttl %v must be at least 3ms", ttl)
	}
	id, ok, err := ls.Acquire(ctx, key, max, ttl)
	if err != nil || !ok {
		return nil, false, err
	}
	return &Lease{l: quota.NewLease(ls, key, id, ttl, nil), id: id}, true, nil
}

// ID returns the lease's id in its store.
func (l *Lease) ID() string { return l.id }

// Err returns the error of the last renewal, nil when it succeeded.
func (l *Lease) Err() error { return l.l.Err() }

// Release stops the renewals, waits for one in progress, and releases the
// lease. Later calls do nothing and return nil.
func (l *Lease) Release(ctx context.Context) error { return l.l.Release(ctx) }
