// Package mitm holds the certificate side of TLS interception: loading or
// creating the interception CA, and an Issuer that mints, caches and serves
// leaf certificates for intercepted hosts.
package mitm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Leaf certificate defaults.
const (
	DefaultValidity = 72 * time.Hour // how long a leaf is valid after minting
	DefaultBackdate = time.Hour      // how long before minting its validity starts
)

// renewBefore is how long before its NotAfter a cached leaf is replaced.
const renewBefore = time.Hour

// Issuer mints ECDSA P-256 leaf certificates signed by a CA, on demand and
// once per host, and caches them in a Store. It is safe for concurrent use.
type Issuer struct {
	ca       *x509.Certificate
	caKey    crypto.Signer
	caChain  [][]byte // the CA certificate and any intermediates, sent after each leaf
	store    Store
	validity time.Duration
	backdate time.Duration

	now    func() time.Time              // clock; replaced in tests
	genKey func() (crypto.Signer, error) // leaf key generator; replaced in benchmarks

	flight                 singleflight.Group
	mints, hits, coalesced atomic.Uint64
}

// Option configures an Issuer.
type Option func(*Issuer) error

// WithStore makes the Issuer cache certificates in s instead of a
// MemoryStore of DefaultCacheSize entries of its own.
func WithStore(s Store) Option {
	return func(i *Issuer) error {
		if s == nil {
			return errors.New("nil Store")
		}
		i.store = s
		return nil
	}
}

// WithValidity sets how long a leaf is valid after it is minted (default
// DefaultValidity). It must exceed one hour, the time before expiry at which
// a cached leaf is replaced.
func WithValidity(d time.Duration) Option {
	return func(i *Issuer) error {
		if d <= renewBefore {
			return fmt.Errorf("validity %v must exceed %v", d, renewBefore)
		}
		i.validity = d
		return nil
	}
}

// WithBackdate sets how long before minting a leaf's validity starts, for
// clients whose clocks run behind (default DefaultBackdate; may be 0).
func WithBackdate(d time.Duration) Option {
	return func(i *Issuer) error {
		if d < 0 {
			return fmt.Errorf("backdate %v must not be negative", d)
		}
		i.backdate = d
		return nil
	}
}

// NewIssuer returns an Issuer signing with ca, which must be a valid CA
// allowed to sign certificates with a matching crypto.Signer private key
// (ECDSA, RSA or Ed25519); any further certificates in ca.Certificate are
// sent after each leaf.
func NewIssuer(ca tls.Certificate, opts ...Option) (*Issuer, error) {
	caCert, caKey, err := checkCA(ca, time.Now())
	if err != nil {
		return nil, fmt.Errorf("mitm: new issuer: %w", err)
	}
	i := &Issuer{
		ca:       caCert,
		caKey:    caKey,
		caChain:  ca.Certificate,
		validity: DefaultValidity,
		backdate: DefaultBackdate,
		now:      time.Now,
		genKey:   generateP256,
	}
	for _, opt := range opts {
		if err := opt(i); err != nil {
			return nil, fmt.Errorf("mitm: new issuer: %w", err)
		}
	}
	if i.store == nil {
		i.store, _ = NewMemoryStore(DefaultCacheSize) // fails only for sizes below 1
	}
	return i, nil
}

func generateP256() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Certificate returns a leaf certificate for host, a DNS name or an IP
// address (brackets allowed), from the Store or newly minted. Concurrent
// calls for one host share one mint; a call whose ctx ends stops waiting
// while the mint completes for the others. The result holds the chain (leaf,
// then the CA's certificates) and the parsed Leaf; it is shared and must not
// be modified.
func (i *Issuer) Certificate(ctx context.Context, host string) (*tls.Certificate, error) {
	name, ip, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	if c, ok := i.lookup(ctx, name); ok {
		i.hits.Add(1)
		return c, nil
	}
	led := false // set only when this call runs the mint
	ch := i.flight.DoChan(name, func() (any, error) {
		led = true
		ctx := context.WithoutCancel(ctx)
		// A mint for name may have finished since the lookup above.
		if c, ok := i.lookup(ctx, name); ok {
			i.hits.Add(1)
			return c, nil
		}
		if lk, ok := i.store.(Locker); ok {
			// Another process may be minting it: wait for its certificate,
			// or take the lock and mint.
			lctx, cancel := context.WithTimeout(ctx, MintLockWait)
			c, unlock, err := lk.LockMint(lctx, name, MintLockTTL)
			cancel()
			if err == nil && c != nil && c.Leaf != nil {
				i.hits.Add(1)
				return c, nil
			}
			if unlock != nil {
				defer unlock()
			}
		}
		c, err := i.mint(name, ip)
		if err != nil {
			return nil, err
		}
		i.mints.Add(1)
		i.store.Put(ctx, name, c)
		return c, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		if !led {
			i.coalesced.Add(1)
		}
		return r.Val.(*tls.Certificate), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("mitm: certificate for %q: %w", name, context.Cause(ctx))
	}
}

// lookup returns the stored certificate for name unless it is missing,
// lacks Leaf or is due for renewal.
func (i *Issuer) lookup(ctx context.Context, name string) (*tls.Certificate, bool) {
	c, ok := i.store.Get(ctx, name)
	if !ok || c == nil || c.Leaf == nil || !i.now().Before(c.Leaf.NotAfter.Add(-renewBefore)) {
		return nil, false
	}
	return c, true
}

// mint creates a leaf certificate for name, normalised, whose address is ip
// if it is an IP address.
func (i *Issuer) mint(name string, ip netip.Addr) (*tls.Certificate, error) {
	key, err := i.genKey()
	if err != nil {
		return nil, fmt.Errorf("mitm: mint certificate for %q: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, fmt.Errorf("mitm: mint certificate for %q: %w", name, err)
	}
	now := i.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name[:min(len(name), 64)]},
		NotBefore:             now.Add(-i.backdate),
		NotAfter:              now.Add(i.validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip.IsValid() {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca, key.Public(), i.caKey)
	if err != nil {
		return nil, fmt.Errorf("mitm: mint certificate for %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mitm: mint certificate for %q: %w", name, err)
	}
	chain := append(make([][]byte, 0, 1+len(i.caChain)), der)
	return &tls.Certificate{Certificate: append(chain, i.caChain...), PrivateKey: key, Leaf: leaf}, nil
}

type connectHostKey struct{}

// WithConnectHost returns a copy of ctx carrying host, the CONNECT target's
// host without port, for GetCertificate to use when a ClientHello has no
// SNI (clients omit it for IP addresses). Pass the result to
// tls.Conn.HandshakeContext.
func WithConnectHost(ctx context.Context, host string) context.Context {
	return context.WithValue(ctx, connectHostKey{}, host)
}

// GetCertificate returns the certificate for the ClientHello's SNI or,
// without SNI, for the host stored by WithConnectHost in the handshake's
// context. It suits tls.Config.GetCertificate.
func (i *Issuer) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx := hello.Context()
	if ctx == nil { // a ClientHelloInfo not made by crypto/tls
		ctx = context.Background()
	}
	host := hello.ServerName
	if host == "" {
		if host, _ = ctx.Value(connectHostKey{}).(string); host == "" {
			return nil, errors.New("mitm: client sent no SNI and the handshake context has no CONNECT host")
		}
	}
	return i.Certificate(ctx, host)
}

// TLSConfig returns a server configuration that presents i's certificates
// and offers nextProtos through ALPN in order of preference, e.g. "h2",
// "http/1.1"; none disables ALPN. Run the handshake with HandshakeContext
// and a context from WithConnectHost so that clients without SNI are
// served. The result may be shared by all intercepted connections.
//
// It offers AEAD suites only, as Mozilla's "intermediate" profile does: TLS
// 1.3 (whose suites are all AEAD), and TLS 1.2 with ECDHE and AES-GCM or
// ChaCha20-Poly1305 (aeadSuites). Go's defaults would also offer the CBC
// suites (ECDHE-ECDSA-AES128-SHA and -AES256-SHA), which TLS scanners flag
// for LUCKY13; a client that offers nothing better fails the handshake.
func (i *Issuer) TLSConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		GetCertificate: i.GetCertificate,
		NextProtos:     slices.Clone(nextProtos),
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   slices.Clone(aeadSuites),
	}
}

// AEADSuites returns the TLS 1.2 cipher suites the proxy's TLS servers
// offer (aeadSuites): the interception listener's, and the HTTPS proxy
// listener's. The slice is the caller's.
func AEADSuites() []uint16 { return slices.Clone(aeadSuites) }

// aeadSuites are the TLS 1.2 cipher suites an intercepting server offers, in
// order of preference (crypto/tls reorders them by the client's hardware):
// ECDHE key exchange with AES-GCM or ChaCha20-Poly1305, for ECDSA leaves (the
// ones minted here) and RSA ones.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Stats counts an Issuer's certificate requests since it was created.
type Stats struct {
	Mints     uint64 // leaf certificates minted
	Hits      uint64 // requests served from the Store
	Coalesced uint64 // requests that waited for another request's mint
}

// Stats returns the Issuer's counters. Each request that returns a
// certificate counts once: as the mint it ran, a hit or a coalesced wait. A
// mint counts even when its requester stopped waiting.
func (i *Issuer) Stats() Stats {
	return Stats{Mints: i.mints.Load(), Hits: i.hits.Load(), Coalesced: i.coalesced.Load()}
}
