package quota

import (
	"context"
	"sync"
	"time"
)

// Leaser holds concurrency leases: the root package's LeaseStore.
type Leaser interface {
	Acquire(ctx context.Context, key string, max int, ttl time.Duration) (id string, ok bool, err error)
	Renew(ctx context.Context, key, id string, ttl time.Duration) error
	Release(ctx context.Context, key, id string) error
}

// Lease is a lease that renews itself every third of its ttl until it is
// released, so that it lives as long as what it stands for (a tunnel) and
// ends within ttl of its holder dying. It starts no goroutine while
// waiting: each renewal runs from a timer. A failed renewal is tried again
// at the next; onErr (if not nil) is told of it, and Err returns it until a
// renewal succeeds.
type Lease struct {
	ls    Leaser
	key   string
	id    string
	ttl   time.Duration
	onErr func(error)

	mu       sync.Mutex
	timer    *time.Timer
	released bool
	running  sync.WaitGroup // a renewal in progress
	err      error          // the last renewal's
}

// NewLease starts renewing the lease id on key in ls.
func NewLease(ls Leaser, key, id string, ttl time.Duration, onErr func(error)) *Lease {
	l := &Lease{ls: ls, key: key, id: id, ttl: ttl, onErr: onErr}
	l.mu.Lock()
	l.timer = time.AfterFunc(ttl/3, l.renew)
	l.mu.Unlock()
	return l
}

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
	if err != nil && l.onErr != nil {
		l.onErr(err)
	}
	l.mu.Lock()
	l.err = err
	if !l.released {
		l.timer.Reset(l.ttl / 3)
	}
	l.mu.Unlock()
}

// Err returns the error of the last renewal, nil when it succeeded (or
// none ran yet).
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Release stops the renewals, waits for one in progress and gives the
// lease back, bounded by ctx. Later calls do nothing and return nil.
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
