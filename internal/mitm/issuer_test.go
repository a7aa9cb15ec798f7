package mitm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLeaf(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example.com" // 72 bytes
	tests := []struct {
		host string
		name string     // normalised DNS name; "" for IP targets
		ip   netip.Addr // IP SAN, if any
	}{
		{host: "example.com", name: "example.com"},
		{host: "WWW.Example.COM.", name: "www.example.com"},
		{host: "xn--bcher-kva.example", name: "xn--bcher-kva.example"},
		{host: "under_score.example", name: "under_score.example"},
		{host: long, name: long},
		{host: "127.0.0.1", ip: netip.MustParseAddr("127.0.0.1")},
		{host: "192.0.2.1.", ip: netip.MustParseAddr("192.0.2.1")},
		{host: "::1", ip: netip.MustParseAddr("::1")},
		{host: "[2001:DB8::1]", ip: netip.MustParseAddr("2001:db8::1")},
		{host: "::ffff:192.0.2.2", ip: netip.MustParseAddr("192.0.2.2")},
		{host: "fe80::1%eth0", ip: netip.MustParseAddr("fe80::1")},
	}
	for caName, ca := range testCAs(t) {
		t.Run(caName, func(t *testing.T) {
			clk := &clock{t: time.Now().Truncate(time.Second)}
			iss, err := NewIssuer(ca)
			if err != nil {
				t.Fatal(err)
			}
			iss.now = clk.now
			serials := map[string]bool{}
			for _, tt := range tests {
				c, err := iss.Certificate(t.Context(), tt.host)
				if err != nil {
					t.Errorf("%s: %v", tt.host, err)
					continue
				}
				checkLeaf(t, tt.host, c, ca, clk.t, DefaultValidity)
				leaf := c.Leaf
				want := tt.name
				if tt.ip.IsValid() {
					want = tt.ip.String()
					if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(tt.ip.AsSlice()) {
						t.Errorf("%s: DNS SANs %v, IP SANs %v, want IP %v only", tt.host, leaf.DNSNames, leaf.IPAddresses, tt.ip)
					}
				} else if len(leaf.IPAddresses) != 0 || !slices.Equal(leaf.DNSNames, []string{tt.name}) {
					t.Errorf("%s: DNS SANs %v, IP SANs %v, want DNS %q only", tt.host, leaf.DNSNames, leaf.IPAddresses, tt.name)
				}
				if cn := leaf.Subject.CommonName; cn != want[:min(len(want), 64)] {
					t.Errorf("%s: CN %q", tt.host, cn)
				}
				opts := x509.VerifyOptions{Roots: caPool(ca), DNSName: want, CurrentTime: clk.t}
				if _, err := leaf.Verify(opts); err != nil {
					t.Errorf("%s: verify: %v", tt.host, err)
				}
				opts.DNSName = "other.example"
				if _, err := leaf.Verify(opts); err == nil {
					t.Errorf("%s: verifies for other.example", tt.host)
				}
				if s := leaf.SerialNumber.String(); serials[s] {
					t.Errorf("%s: serial %s repeated", tt.host, s)
				} else {
					serials[s] = true
				}
			}
		})
	}
}

// checkLeaf checks the properties every leaf minted at now must have.
func checkLeaf(t *testing.T, host string, c *tls.Certificate, ca tls.Certificate, now time.Time, validity time.Duration) {
	t.Helper()
	leaf := c.Leaf
	if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[0], leaf.Raw) || !bytes.Equal(c.Certificate[1], ca.Certificate[0]) {
		t.Errorf("%s: chain is not [leaf, CA]", host)
	}
	if !bytes.Equal(leaf.RawIssuer, ca.Leaf.RawSubject) {
		t.Errorf("%s: issuer %q, want %q", host, leaf.Issuer, ca.Leaf.Subject)
	}
	if err := leaf.CheckSignatureFrom(ca.Leaf); err != nil {
		t.Errorf("%s: signature: %v", host, err)
	}
	if !leaf.NotBefore.Equal(now.Add(-time.Hour)) || !leaf.NotAfter.Equal(now.Add(validity)) {
		t.Errorf("%s: valid %v..%v, want %v..%v", host, leaf.NotBefore, leaf.NotAfter, now.Add(-time.Hour), now.Add(validity))
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("%s: IsCA %v, KeyUsage %v, ExtKeyUsage %v", host, leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || !pub.Equal(c.PrivateKey.(crypto.Signer).Public()) {
		t.Errorf("%s: public key %T does not match an ECDSA P-256 private key", host, leaf.PublicKey)
	}
	if s := leaf.SerialNumber; s.Sign() <= 0 || s.BitLen() > 128 {
		t.Errorf("%s: serial %v is not a positive 128-bit number", host, s)
	}
}

func TestInvalidHost(t *testing.T) {
	iss, _ := newIssuer(t)
	for _, host := range []string{
		"", ".", "..", "a..b", ".example.com", "example.com..", "exa mple.com", "*.example.com",
		"example.com:443", "ex\x00ample.com", "bücher.example", "[::1", "[]", "1.2.3.4.5:",
		strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 126) + "aa", // 254 bytes
		"\u212aelvin.example", // KELVIN SIGN: strings.ToLower made it "kelvin.example"
		"ex\xffample.com",
	} {
		if c, err := iss.Certificate(t.Context(), host); !errors.Is(err, ErrInvalidHost) || c != nil {
			t.Errorf("%q: err %v, want ErrInvalidHost", host, err)
		}
	}
	// The limits themselves are valid.
	for _, host := range []string{strings.Repeat("a", 63) + ".com", strings.Repeat("a.", 126) + "a"} {
		if _, err := iss.Certificate(t.Context(), host); err != nil {
			t.Errorf("%d bytes: %v", len(host), err)
		}
	}
	if got := iss.Stats(); got != (Stats{Mints: 2}) {
		t.Errorf("stats %+v, want 2 mints", got)
	}
}

func TestCacheHit(t *testing.T) {
	iss, _ := newIssuer(t)
	first, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"example.com", "Example.COM."} {
		c, err := iss.Certificate(t.Context(), host)
		if err != nil {
			t.Fatal(err)
		}
		if c != first {
			t.Errorf("%s: new certificate, want the cached one", host)
		}
	}
	if got := iss.Stats(); got != (Stats{Mints: 1, Hits: 2}) {
		t.Errorf("stats %+v, want 1 mint, 2 hits", got)
	}
}

func TestCoalesce(t *testing.T) {
	iss, _ := newIssuer(t)
	iss.genKey = func() (crypto.Signer, error) {
		time.Sleep(100 * time.Millisecond) // so that all requests arrive during the mint
		return generateP256()
	}
	const n = 50
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		certs [n]*tls.Certificate
		errs  [n]error
	)
	for k := range n {
		wg.Go(func() {
			<-start
			certs[k], errs[k] = iss.Certificate(t.Context(), "example.com")
		})
	}
	close(start)
	wg.Wait()
	for k := range n {
		if errs[k] != nil || certs[k] != certs[0] {
			t.Fatalf("request %d: err %v, same certificate %v", k, errs[k], certs[k] == certs[0])
		}
	}
	got := iss.Stats()
	if got.Mints != 1 || got.Coalesced == 0 || got.Mints+got.Hits+got.Coalesced != n {
		t.Errorf("stats %+v, want 1 mint and %d requests in all, some coalesced", got, n)
	}
}

func TestCancelledWait(t *testing.T) {
	iss, _ := newIssuer(t)
	release := make(chan struct{})
	iss.genKey = func() (crypto.Signer, error) {
		<-release
		return generateP256()
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := iss.Certificate(ctx, "example.com"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request: err %v, want context.Canceled", err)
	}
	close(release)
	// The mint went on without its requester and serves this request.
	if _, err := iss.Certificate(t.Context(), "example.com"); err != nil {
		t.Fatal(err)
	}
	if got := iss.Stats(); got.Mints != 1 {
		t.Errorf("stats %+v, want 1 mint", got)
	}
}

func TestEviction(t *testing.T) {
	store, err := NewMemoryStore(2)
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := newIssuer(t, WithStore(store))
	get := func(host string) *tls.Certificate {
		t.Helper()
		c, err := iss.Certificate(t.Context(), host)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := get("a.example")
	get("b.example")
	get("c.example") // evicts a
	if _, ok := store.Get(t.Context(), "a.example"); ok {
		t.Error("a.example still stored")
	}
	if get("a.example") == a { // evicts b
		t.Error("a.example: evicted certificate served")
	}
	get("c.example")
	get("b.example")
	if got := iss.Stats(); got != (Stats{Mints: 5, Hits: 1}) {
		t.Errorf("stats %+v, want 5 mints, 1 hit", got)
	}
}

func TestRenewal(t *testing.T) {
	const validity = 24 * time.Hour
	clk := &clock{t: time.Now().Truncate(time.Second)}
	iss, ca := newIssuer(t, WithValidity(validity))
	iss.now = clk.now
	first, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	clk.add(validity - renewBefore - time.Minute)
	if c, err := iss.Certificate(t.Context(), "example.com"); err != nil || c != first {
		t.Fatalf("61 minutes before expiry: err %v, same certificate %v", err, c == first)
	}
	clk.add(2 * time.Minute)
	c, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if c == first {
		t.Fatal("59 minutes before expiry: the old certificate is still served")
	}
	checkLeaf(t, "renewed", c, ca, clk.now(), validity)
	if again, _ := iss.Certificate(t.Context(), "example.com"); again != c {
		t.Error("the renewed certificate is not cached")
	}
	if got := iss.Stats(); got != (Stats{Mints: 2, Hits: 2}) {
		t.Errorf("stats %+v, want 2 mints, 2 hits", got)
	}
}

func TestSharedStore(t *testing.T) {
	store, err := NewMemoryStore(8)
	if err != nil {
		t.Fatal(err)
	}
	ca, _, _, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	iss1, err := NewIssuer(ca, WithStore(store))
	if err != nil {
		t.Fatal(err)
	}
	iss2, err := NewIssuer(ca, WithStore(store))
	if err != nil {
		t.Fatal(err)
	}
	c1, err := iss1.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := iss2.Certificate(t.Context(), "EXAMPLE.com"); err != nil || c2 != c1 {
		t.Errorf("second issuer: err %v, same certificate %v", err, c2 == c1)
	}
	if got := iss2.Stats(); got != (Stats{Hits: 1}) {
		t.Errorf("second issuer stats %+v, want 1 hit", got)
	}

	// An entry without Leaf (e.g. from a store that keeps only DER) is replaced.
	store.Put(t.Context(), "noleaf.example", &tls.Certificate{Certificate: c1.Certificate, PrivateKey: c1.PrivateKey})
	c, err := iss1.Certificate(t.Context(), "noleaf.example")
	if err != nil || c.Leaf == nil || c.Leaf.DNSNames[0] != "noleaf.example" {
		t.Fatalf("entry without Leaf: err %v, cert %v", err, c)
	}
	if got := iss1.Stats(); got.Mints != 2 {
		t.Errorf("first issuer stats %+v, want 2 mints", got)
	}
}

func TestNewIssuerErrors(t *testing.T) {
	ca, _, _, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(ca)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	noLeaf := ca
	noLeaf.Leaf = nil
	otherCA, _, _, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	mismatched := ca
	mismatched.PrivateKey = otherCA.PrivateKey
	tests := []struct {
		name string
		ca   tls.Certificate
		opts []Option
		want string
	}{
		{"no certificate", tls.Certificate{}, nil, "no certificate"},
		{"garbage DER", tls.Certificate{Certificate: [][]byte{[]byte("junk")}}, nil, "x509:"},
		{"leaf, not a CA", *leaf, nil, "is not a CA"},
		{"no private key", tls.Certificate{Certificate: ca.Certificate}, nil, "cannot sign"},
		{"mismatched key", mismatched, nil, "does not match"},
		{"validity of an hour", ca, []Option{WithValidity(time.Hour)}, "must exceed 1h"},
		{"negative backdate", ca, []Option{WithBackdate(-time.Second)}, "must not be negative"},
		{"nil store", ca, []Option{WithStore(nil)}, "nil Store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := NewIssuer(tt.ca, tt.opts...)
			if err == nil || iss != nil || !strings.HasPrefix(err.Error(), "mitm: new issuer: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want 'mitm: new issuer: ...%s...'", err, tt.want)
			}
		})
	}
	// Valid: CA without Leaf set, and options at their limits.
	if _, err := NewIssuer(noLeaf, WithValidity(time.Hour+1), WithBackdate(0)); err != nil {
		t.Error(err)
	}
	if _, err := NewMemoryStore(0); err == nil || !strings.HasPrefix(err.Error(), "mitm: memory store of size 0: ") {
		t.Errorf("NewMemoryStore(0): err = %v", err)
	}
}

func TestBackdate(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	iss, _ := newIssuer(t, WithBackdate(0), WithValidity(2*time.Hour))
	iss.now = clk.now
	c, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotBefore.Equal(clk.t) || !c.Leaf.NotAfter.Equal(clk.t.Add(2*time.Hour)) {
		t.Errorf("valid %v..%v, want %v..%v", c.Leaf.NotBefore, c.Leaf.NotAfter, clk.t, clk.t.Add(2*time.Hour))
	}
}
