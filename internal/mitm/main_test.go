package mitm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rsaKey is one RSA-2048 key for the tests, generated once because it is slow.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// makeCA returns a self-signed CA certificate for key as PEM, after tweak
// (if not nil) has changed its template.
func makeCA(t testing.TB, key crypto.Signer, tweak func(*x509.Certificate)) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if tweak != nil {
		tweak(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pkcs8PEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// testCAs returns an ECDSA CA from NewCA and an RSA-2048 CA, by name.
func testCAs(t testing.TB) map[string]tls.Certificate {
	t.Helper()
	ecCA, _, _, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	rsaCA, err := ParseCA(makeCA(t, rsaKey(), nil), pkcs8PEM(t, rsaKey()))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]tls.Certificate{"ecdsa": ecCA, "rsa": rsaCA}
}

func newIssuer(t testing.TB, opts ...Option) (*Issuer, tls.Certificate) {
	t.Helper()
	ca, _, _, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(ca, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return iss, ca
}

func caPool(ca tls.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	return pool
}

// clock is a settable clock for Issuer.now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
