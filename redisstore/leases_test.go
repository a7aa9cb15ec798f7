package redisstore

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A concurrent-lease limit of 10 holds across two replicas: 30 concurrent
// Acquires get exactly 10; a Release lets one more in.
func TestLeaseLimitAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	ctx := context.Background()
	var mu sync.Mutex
	held := map[string]*Store{}
	var wg sync.WaitGroup
	for i := range 30 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			id, ok, err := s.Acquire(ctx, "tunnels:alice", 10, 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				held[id] = s
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(held) != 10 {
		t.Fatalf("%d leases granted across both replicas, want 10", len(held))
	}
	if n, _ := r.cli("ZCARD", DefaultKeyPrefix+"lease:tunnels:alice"); n != "10" {
		t.Errorf("ZCARD %s, want 10", n)
	}
	if _, ok, _ := a.Acquire(ctx, "tunnels:alice", 10, 10*time.Second); ok {
		t.Fatal("an 11th lease")
	}
	for id, s := range held {
		if err := s.Release(ctx, "tunnels:alice", id); err != nil {
			t.Fatal(err)
		}
		break
	}
	if _, ok, _ := b.Acquire(ctx, "tunnels:alice", 10, 10*time.Second); !ok {
		t.Fatal("no lease after a Release")
	}
	if err := a.Release(ctx, "tunnels:alice", "not-a-lease"); err != nil {
		t.Errorf("Release of an unknown lease: %v", err)
	}
}

// A replica killed with -9 frees its leases within their ttl: replica a
// takes all 10 and is dropped without Release (its client closed, its
// renewals stopped); b gets a lease once the ttl has passed, not before.
func TestLeasesOfDeadReplicaFreeWithinTTL(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	ctx := context.Background()
	const ttl = time.Second
	var leases []*Lease
	for range 10 {
		l, ok, err := AcquireLease(ctx, a, "tunnels:bob", 10, ttl)
		if err != nil || !ok {
			t.Fatalf("AcquireLease: %v, %v", ok, err)
		}
		leases = append(leases, l)
	}
	// Renewed, the leases outlive their ttl several times over.
	time.Sleep(3 * ttl)
	if _, ok, _ := b.Acquire(ctx, "tunnels:bob", 10, ttl); ok {
		t.Fatal("b got a lease while a renews all 10")
	}
	// kill -9: a's connections close and its renewals fail from now on.
	killed := time.Now()
	a.Close()
	var freed time.Duration
	for {
		if _, ok, err := b.Acquire(ctx, "tunnels:bob", 10, ttl); err != nil {
			t.Fatal(err)
		} else if ok {
			freed = time.Since(killed)
			break
		}
		if time.Since(killed) > 3*ttl {
			t.Fatalf("no lease %v after the holder died (ttl %v)", time.Since(killed), ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("a dead replica's lease was free %v after it died (ttl %v)", freed.Round(time.Millisecond), ttl)
	if freed > ttl+250*time.Millisecond {
		t.Errorf("freed after %v, want within the ttl of %v", freed, ttl)
	}
	for _, l := range leases {
		if err := l.Release(ctx); err == nil {
			t.Error("Release on a closed store succeeded")
		}
	}
}

// Lease renews itself until Release, which removes it from Redis; it leaves
// no goroutine behind (TestMain's goleak).
func TestLeaseRenewsUntilReleased(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	l, ok, err := AcquireLease(ctx, s, "k", 1, 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("AcquireLease: %v, %v", ok, err)
	}
	time.Sleep(time.Second)
	if v, _ := r.cli("ZSCORE", DefaultKeyPrefix+"lease:k", l.ID()); v == "" {
		t.Fatal("the lease expired while it was renewed")
	}
	if l.Err() != nil {
		t.Errorf("renewal: %v", l.Err())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if v, _ := r.cli("EXISTS", DefaultKeyPrefix+"lease:k"); v != "0" {
		t.Error("the lease is still in Redis after Release")
	}
	l, ok, _ = AcquireLease(ctx, s, "k", 1, time.Hour)
	if !ok {
		t.Fatal("no lease after Release")
	}
	_ = l.Release(ctx)
}

// A lease that Redis lost (a restart without persistence) is added back
// by its next renewal: it stands for a tunnel that is still open.
func TestRenewAddsBackLostLease(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	id, ok, err := s.Acquire(ctx, "k", 2, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := r.cli("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, "k", id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.cli("ZCARD", DefaultKeyPrefix+"lease:k"); v != "1" {
		t.Errorf("ZCARD %s after Renew of a lost lease, want 1", v)
	}
}

func TestLeaseArguments(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	if _, _, err := s.Acquire(ctx, "k", 0, time.Second); err == nil {
		t.Error("max 0 accepted")
	}
	if _, _, err := s.Acquire(ctx, "k", 1, 0); err == nil {
		t.Error("ttl 0 accepted")
	}
	if _, _, err := AcquireLease(ctx, nil, "k", 1, time.Second); err == nil {
		t.Error("nil LeaseStore accepted")
	}
}
