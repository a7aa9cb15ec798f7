package redisstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// testCA is one interception CA for the package's tests, as replicas share
// one.
var testCA = sync.OnceValue(func() tls.Certificate {
	ca, _, _, err := fwdproxy.NewCA()
	if err != nil {
		panic(err)
	}
	if ca.Leaf == nil {
		ca.Leaf, _ = x509.ParseCertificate(ca.Certificate[0])
	}
	return ca
})

// mintLeaf mints a leaf for host signed by the test CA, valid for validity,
// as fwdproxy's issuer does.
func mintLeaf(t testing.TB, host string, validity time.Duration) *tls.Certificate {
	t.Helper()
	ca := testCA()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, key.Public(), ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der, ca.Certificate[0]}, PrivateKey: key, Leaf: leaf}
}

// A certificate Put by one replica is Get by the other: the same serial,
// the whole chain, a private key that matches, Leaf set.
func TestCertSharedAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	ctx := context.Background()
	if _, ok := b.Get(ctx, "example.com"); ok {
		t.Fatal("a certificate before any Put")
	}
	c := mintLeaf(t, "example.com", 72*time.Hour)
	a.Put(ctx, "example.com", c)
	got, ok := b.Get(ctx, "example.com")
	if !ok {
		t.Fatal("replica b misses the certificate replica a stored")
	}
	if got.Leaf == nil || got.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Fatalf("b got serial %v, a stored %v", got.Leaf.SerialNumber, c.Leaf.SerialNumber)
	}
	if len(got.Certificate) != 2 {
		t.Errorf("chain of %d certificates, want leaf and CA", len(got.Certificate))
	}
	if k, ok := got.PrivateKey.(*ecdsa.PrivateKey); !ok || !k.Equal(c.PrivateKey) {
		t.Errorf("b's private key does not match a's")
	}
	// The second Get is served from b's memory: no round trip.
	trips := b.Stats().RoundTrips
	if _, ok := b.Get(ctx, "example.com"); !ok || b.Stats().RoundTrips != trips {
		t.Errorf("cached Get: ok=%v, %d round trips", ok, b.Stats().RoundTrips-trips)
	}
	// The key lives until an hour (the margin) before the leaf's NotAfter.
	pttl, err := r.cli("PTTL", DefaultKeyPrefix+"cert:example.com")
	if err != nil {
		t.Fatal(err)
	}
	if ms := mustAtoi(t, pttl); ms > int((71*time.Hour).Milliseconds()) || ms < int((71*time.Hour-time.Minute).Milliseconds()) {
		t.Errorf("PTTL %d ms, want about 71 h", ms)
	}
	// A certificate within the margin of its end is not stored.
	a.Put(ctx, "short.example", mintLeaf(t, "short.example", 30*time.Minute))
	if _, ok := b.Get(ctx, "short.example"); ok {
		t.Error("a certificate that ends within the margin was stored")
	}
}

// 50 concurrent first requests for one host across two replicas mint once:
// each does what the issuer will (Get, LockMint, mint, Put, unlock) and all
// end with the one certificate.
func TestLockMintOnceAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	stores := []*Store{openStore(t, r, WithCertCache(0)), openStore(t, r, WithCertCache(0))}
	const host = "once.example"
	var mints atomic.Int32
	serials := make([]string, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range serials {
		s := stores[i%2]
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, ok := s.Get(ctx, host)
			if !ok {
				var unlock func()
				var err error
				c, unlock, err = s.LockMint(ctx, host, 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if c == nil {
					mints.Add(1)
					time.Sleep(20 * time.Millisecond) // a slow mint: the others must wait for it
					c = mintLeaf(t, host, 72*time.Hour)
					s.Put(ctx, host, c)
					unlock()
				}
			}
			serials[i] = c.Leaf.SerialNumber.String()
		})
	}
	close(start)
	wg.Wait()
	if n := mints.Load(); n != 1 {
		t.Fatalf("%d mints for 50 concurrent requests on 2 replicas, want 1", n)
	}
	for i, s := range serials {
		if s != serials[0] {
			t.Fatalf("request %d got serial %s, request 0 %s", i, s, serials[0])
		}
	}
	if v, _ := r.cli("EXISTS", DefaultKeyPrefix+"mint:"+host); v != "0" {
		t.Error("the mint lock is still held after Put")
	}
}

// A minter that dies holds the lock for its ttl only; a minter that fails
// and unlocks frees it at once.
func TestLockMintHolderDiesOrUnlocks(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	ctx := context.Background()

	c, unlock, err := a.LockMint(ctx, "dies.example", 300*time.Millisecond)
	if err != nil || c != nil || unlock == nil {
		t.Fatalf("first LockMint: %v, unlock nil %v, %v", c, unlock == nil, err)
	}
	a.Close() // dies without Put or unlock
	start := time.Now()
	c, unlockB, err := b.LockMint(ctx, "dies.example", time.Second)
	if err != nil || c != nil || unlockB == nil {
		t.Fatalf("LockMint after the holder died: %v, %v", c, err)
	}
	if waited := time.Since(start); waited > 600*time.Millisecond {
		t.Errorf("waited %v for a dead holder's lock of 300ms", waited)
	}
	t.Logf("waited %v for the lock of a dead holder (ttl 300ms)", time.Since(start).Round(time.Millisecond))
	unlockB()
	unlockB() // twice is fine
	start = time.Now()
	if c, unlock, err := b.LockMint(ctx, "dies.example", time.Second); err != nil || c != nil || unlock == nil {
		t.Fatalf("LockMint after unlock: %v, %v", c, err)
	} else {
		unlock()
	}
	if waited := time.Since(start); waited > 250*time.Millisecond {
		t.Errorf("waited %v for an unlocked lock", waited)
	}

	// A waiter gives up when its context ends.
	_, unlock, _ = b.LockMint(ctx, "held.example", 10*time.Second)
	defer unlock()
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if c, u, err := b.LockMint(ctx2, "held.example", time.Second); err == nil || c != nil || u != nil {
		t.Errorf("LockMint on a held lock with a 50ms context: %v, %v", c, err)
	}
}
