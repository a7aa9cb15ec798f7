package mitm

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultCacheSize is the number of hosts an Issuer's default MemoryStore
// holds.
const DefaultCacheSize = 1024

// Store caches minted certificates by host so that several Issuers, e.g.
// in several proxy processes, can share them. Hosts are normalised:
// lowercase, no trailing dot, IP addresses in canonical form. Issuers that
// share a Store must share the CA.
//
// A Store must be safe for concurrent use. Get must return certificates
// with Leaf set (others count as misses); the Issuer replaces entries that
// are near expiry by calling Put again. Certificates are shared and must not
// be modified. A Store reports failures as misses: the Issuer then mints.
// During a mint, shared by all its waiters, Get and Put receive a context
// that is never cancelled, so a remote Store must apply its own timeouts.
type Store interface {
	Get(ctx context.Context, host string) (*tls.Certificate, bool)
	Put(ctx context.Context, host string, cert *tls.Certificate)
}

// Locker is optional on a Store shared by several processes: an Issuer
// whose Store has it takes the host's mint lock before minting, so that
// concurrent misses across the processes mint once (the root package's
// CertLocker).
type Locker interface {
	// LockMint returns the certificate another process stored while this
	// one waited (unlock nil), or unlock when this one is to mint; an
	// error lets this one mint without the lock.
	LockMint(ctx context.Context, host string, ttl time.Duration) (cert *tls.Certificate, unlock func(), err error)
}

// Mint lock: how long a minter holds it at most, and how long the others
// wait for its certificate before minting themselves.
const (
	MintLockTTL  = 10 * time.Second
	MintLockWait = 5 * time.Second
)

// MemoryStore is an in-process Store that keeps the most recently used
// certificates.
type MemoryStore struct {
	lru *lru.Cache[string, *tls.Certificate]
}

// NewMemoryStore returns a MemoryStore holding up to size certificates; size
// must be at least 1.
func NewMemoryStore(size int) (*MemoryStore, error) {
	c, err := lru.New[string, *tls.Certificate](size)
	if err != nil {
		return nil, fmt.Errorf("mitm: memory store of size %d: %w", size, err)
	}
	return &MemoryStore{lru: c}, nil
}

// Get returns the certificate cached for host.
func (s *MemoryStore) Get(_ context.Context, host string) (*tls.Certificate, bool) {
	return s.lru.Get(host)
}

// Put caches cert for host, evicting the least recently used entry when
// full.
func (s *MemoryStore) Put(_ context.Context, host string, cert *tls.Certificate) {
	s.lru.Add(host, cert)
}
