package redisstore

import (
	"github.com/fwdproxy/fwdproxy"

	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lease is a lease held in a LeaseStore that renews itself every third of
// its ttl until it is released, so that it lives as long as what it stands
// for (a tunnel) and ends within ttl of its holder dying. It starts no
// goroutine while waiting: each renewal runs from a timer. A renewal that
// fails is tried again at the next one; the lease is then at risk only if
// every renewal of a whole ttl fails.
type Lease struct {
	ls  fwdproxy.LeaseStore
	key string
	id  string
	ttl time.Duration

	mu       sync.Mutex
	timer    *time.Timer
	released bool
	running  sync.WaitGroup // a renewal in progress
	err      error          // the last renewal's error
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
	l = &Lease{ls: ls, key: key, id: id, ttl: ttl}
	l.mu.Lock()
	l.timer = time.AfterFunc(ttl/3, l.renew)
	l.mu.Unlock()
	return l, true, nil
}

// ID returns the lease's id in its store.
func (l *Lease) ID() string { return l.id }

// Err returns the error of the last renewal, nil when it succeeded.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// renew runs from the timer: it renews the lease and sets the timer for the
// next renewal.
func (l *Lease) renew() {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return
	}
	l.running.Add(1)
	l.mu.Unlock()
	defer l.running.Done()

	ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
	err := l.ls.Renew(ctx, l.key, l.id, l.ttl)
	cancel()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
	if !l.released {
		l.timer.Reset(l.ttl / 3)
	}
}

// Release stops the renewals, waits for one in progress, and releases the
// lease. Later calls do nothing and return nil.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.timer.Stop()
	l.mu.Unlock()
	l.running.Wait()
	return l.ls.Release(ctx, l.key, l.id)
}
