package redisstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
)

// putScript stores a certificate and, when the storing Store holds the
// host's mint lock, releases it, so that the replicas waiting on the lock
// find the certificate at their next poll.
//
//	KEYS[1]  the certificate's key, KEYS[2] the mint lock's key
//	ARGV[1]  the PEM, ARGV[2] its ttl in milliseconds, ARGV[3] the lock token or ""
var putScript = newScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
`)

// lockScript returns the stored certificate or, when there is none, tries
// to take the mint lock.
//
//	KEYS[1]  the certificate's key, KEYS[2] the mint lock's key
//	ARGV[1]  the lock token, ARGV[2] the lock's ttl in milliseconds
//
// It returns {1, PEM} for a stored certificate, {2, 0} when the lock was
// taken, {0, the lock's remaining ttl in milliseconds} when another holds it.
var lockScript = newScript(`
local c = redis.call('GET', KEYS[1])
if c then
  return {1, c}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, 0}
end
return {0, redis.call('PTTL', KEYS[2])}
`)

// unlockScript releases a mint lock if the token still holds it.
var unlockScript = newScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Polling of LockMint's waiters: the first wait, doubled up to the last.
const (
	mintPollFirst = 2 * time.Millisecond
	mintPollMax   = 50 * time.Millisecond
)

// WithCertExpiryMargin sets how long before a certificate's NotAfter the
// Store stops returning it (default DefaultCertExpiryMargin, one hour, the
// time before expiry at which fwdproxy's issuer renews a leaf): the Redis
// key expires then, and so do entries of the in-memory cache.
func WithCertExpiryMargin(d time.Duration) Option {
	return func(s *Store) error {
		if d < 0 {
			return fmt.Errorf("certificate expiry margin %v must not be negative", d)
		}
		s.certMargin = d
		return nil
	}
}

// Get returns the certificate stored for host, from the in-memory cache or
// from Redis (one GET), with Leaf set. Failures, Redis unreachable
// included, are misses.
func (s *Store) Get(ctx context.Context, host string) (*tls.Certificate, bool) {
	if c, ok := s.certs.get(host); ok {
		return c, true
	}
	var pemBytes []byte
	failed, err := s.call(ctx, func(ctx context.Context) error {
		b, err := s.rdb.Get(ctx, s.key("cert", host)).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		pemBytes = b
		return err
	})
	if failed || err != nil || pemBytes == nil {
		return nil, false
	}
	return s.decodeAndCache(host, pemBytes)
}

func (s *Store) decodeAndCache(host string, pemBytes []byte) (*tls.Certificate, bool) {
	c, err := decodeCert(pemBytes)
	if err != nil {
		return nil, false
	}
	s.certs.add(host, c, c.Leaf.NotAfter.Add(-s.certMargin))
	return c, true
}

// Put stores cert for host in Redis as PEM (the chain, then the private key
// as PKCS#8) until certificate expiry margin before its NotAfter, and in the
// in-memory cache, in one round trip. When this Store holds host's mint lock
// (LockMint), the same round trip releases it. Failures are dropped: the
// certificate is then only in this replica's cache.
func (s *Store) Put(ctx context.Context, host string, cert *tls.Certificate) {
	token := s.takeMintToken(host)
	if cert == nil || len(cert.Certificate) == 0 {
		s.unlockMint(host, token)
		return
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			s.unlockMint(host, token)
			return
		}
	}
	expires := leaf.NotAfter.Add(-s.certMargin)
	ttl := time.Until(expires)
	pemBytes, err := encodeCert(cert)
	if err != nil || ttl < time.Millisecond {
		s.unlockMint(host, token)
		return
	}
	if cert.Leaf != nil {
		s.certs.add(host, cert, expires)
	}
	_, _ = s.call(ctx, func(ctx context.Context) error {
		return putScript.Run(ctx, s.rdb, []string{s.key("cert", host), s.key("mint", host)},
			pemBytes, ttl.Milliseconds(), token).Err()
	})
}

// LockMint makes one caller among all replicas the minter of host's
// certificate: it returns the certificate another replica stored
// meanwhile, or makes the caller the minter (SET NX PX ttl on a lock key)
// and returns unlock. The minter then mints and calls Put, which releases
// the lock in the same round trip; unlock releases it without a Put (a
// failed mint) and may be called after Put too. A minter that dies holds
// the lock until ttl passes. While another holds the lock, LockMint polls
// Redis (every 2 ms at first, then up to every 50 ms) until the certificate
// is stored, the lock is free (it then takes it) or ctx ends (it returns
// ctx's error). Callers whose own context is never cancelled must give one
// with a deadline.
//
// While Redis is unreachable, or when a stored certificate cannot be
// decoded, it returns an unlock that does nothing: the caller mints for
// itself, and its Put may or may not reach Redis.
func (s *Store) LockMint(ctx context.Context, host string, ttl time.Duration) (cert *tls.Certificate, unlock func(), err error) {
	if err := validTTL(ttl); err != nil {
		return nil, nil, err
	}
	token := newID()
	keys := []string{s.key("cert", host), s.key("mint", host)}
	wait := mintPollFirst
	for {
		var res []any
		failed, err := s.call(ctx, func(ctx context.Context) error {
			v, err := lockScript.Run(ctx, s.rdb, keys, token, ttl.Milliseconds()).Slice()
			res = v
			return err
		})
		if err != nil && !failed {
			return nil, nil, err
		}
		state := int64(-1)
		if !failed && len(res) == 2 {
			state, _ = res[0].(int64)
		}
		switch state {
		case 1: // stored
			if p, ok := res[1].(string); ok {
				if c, ok := s.decodeAndCache(host, []byte(p)); ok {
					return c, nil, nil
				}
			}
			s.stats.fallbacks.Add(1)
			return nil, func() {}, nil
		case 2: // ours
			s.mintMu.Lock()
			s.mints[host] = token
			s.mintMu.Unlock()
			var once sync.Once
			return nil, func() {
				once.Do(func() { s.unlockMint(host, s.takeMintTokenIf(host, token)) })
			}, nil
		case 0: // another's: wait for its Put, or for the lock to expire
			d := wait
			if left, _ := res[1].(int64); left > 0 && time.Duration(left)*time.Millisecond < d {
				d = time.Duration(left) * time.Millisecond
			}
			wait = min(2*wait, mintPollMax)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, nil, fmt.Errorf("redisstore: waiting for the certificate of %q: %w", host, context.Cause(ctx))
			case <-t.C:
			}
		default: // Redis failed
			s.stats.fallbacks.Add(1)
			return nil, func() {}, nil
		}
	}
}

// takeMintToken removes and returns the token of host's mint lock held by
// this Store, or "".
func (s *Store) takeMintToken(host string) string {
	s.mintMu.Lock()
	defer s.mintMu.Unlock()
	t := s.mints[host]
	delete(s.mints, host)
	return t
}

// takeMintTokenIf removes host's token if it is token, and returns it; ""
// when Put already took it.
func (s *Store) takeMintTokenIf(host, token string) string {
	s.mintMu.Lock()
	defer s.mintMu.Unlock()
	if s.mints[host] != token {
		return ""
	}
	delete(s.mints, host)
	return token
}

// unlockMint releases host's mint lock if token ("" for none) still holds
// it.
func (s *Store) unlockMint(host, token string) {
	if token == "" {
		return
	}
	_, _ = s.call(context.Background(), func(ctx context.Context) error {
		return unlockScript.Run(ctx, s.rdb, []string{s.key("mint", host)}, token).Err()
	})
}

// encodeCert returns cert's chain and private key as PEM.
func encodeCert(cert *tls.Certificate) ([]byte, error) {
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, der := range cert.Certificate {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: key})
	return b.Bytes(), nil
}

// decodeCert parses what encodeCert wrote, with Leaf set.
func decodeCert(b []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// certCache is the in-memory cache of certificates in front of Redis.
type certCache struct {
	lru *lru.Cache[string, certEntry] // nil when off
	now func() time.Time
}

type certEntry struct {
	cert    *tls.Certificate
	expires time.Time
}

func newCertCache(size int) (*certCache, error) {
	c := &certCache{now: time.Now}
	if size > 0 {
		l, err := lru.New[string, certEntry](size)
		if err != nil {
			return nil, err
		}
		c.lru = l
	}
	return c, nil
}

func (c *certCache) get(host string) (*tls.Certificate, bool) {
	if c.lru == nil {
		return nil, false
	}
	e, ok := c.lru.Get(host)
	if !ok {
		return nil, false
	}
	if !c.now().Before(e.expires) {
		c.lru.Remove(host)
		return nil, false
	}
	return e.cert, true
}

func (c *certCache) add(host string, cert *tls.Certificate, expires time.Time) {
	if c.lru != nil && c.now().Before(expires) {
		c.lru.Add(host, certEntry{cert, expires})
	}
}
