package mitm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca, certPEM, keyPEM, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Leaf
	if c == nil {
		t.Fatal("Leaf not set")
	}
	if !c.BasicConstraintsValid || !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: valid %v, CA %v, MaxPathLen %d, zero %v", c.BasicConstraintsValid, c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
	}
	if c.Subject.CommonName != CAName || !bytes.Equal(c.RawSubject, c.RawIssuer) {
		t.Errorf("subject %q, issuer %q", c.Subject, c.Issuer)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if years := c.NotAfter.Sub(c.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("validity %.2f years, want 10", years)
	}
	if age := time.Since(c.NotBefore); age < 59*time.Minute || age > 61*time.Minute {
		t.Errorf("NotBefore %v ago, want 1h", age)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key PEM is not PKCS#8: %q", keyPEM)
	}
	parsed, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Certificate[0], ca.Certificate[0]) {
		t.Error("PEM does not round-trip")
	}
}

func TestParseCAKeyFormats(t *testing.T) {
	ecKey := newP256(t)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})
	tests := []struct {
		name            string
		certPEM, keyPEM []byte
	}{
		{"EC PKCS#8", makeCA(t, ecKey, nil), pkcs8PEM(t, ecKey)},
		{"EC SEC 1", makeCA(t, ecKey, nil), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{"EC SEC 1 after EC PARAMETERS", makeCA(t, ecKey, nil), append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
		{"RSA PKCS#1", makeCA(t, rsaKey(), nil), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey())})},
		{"RSA PKCS#8", makeCA(t, rsaKey(), nil), pkcs8PEM(t, rsaKey())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := ParseCA(tt.certPEM, tt.keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			iss, err := NewIssuer(ca)
			if err != nil {
				t.Fatal(err)
			}
			c, err := iss.Certificate(t.Context(), "example.com")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: caPool(ca), DNSName: "example.com"}); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "ca")
	ca, created, err := LoadOrCreateCA(dir)
	if err != nil || !created {
		t.Fatalf("first call: created %v, err %v", created, err)
	}
	for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, KeyFile): 0o600, filepath.Join(dir, CertFile): 0o644 &^ umask(t)} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", name, got, want)
		}
	}
	again, created, err := LoadOrCreateCA(dir)
	if err != nil || created {
		t.Fatalf("second call: created %v, err %v", created, err)
	}
	if !bytes.Equal(again.Certificate[0], ca.Certificate[0]) || !again.PrivateKey.(*ecdsa.PrivateKey).Equal(ca.PrivateKey) {
		t.Error("loaded CA differs from the created one")
	}

	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("with the key alone: err %v, want 'only one of'", err)
	}
}

// umask returns the process umask as observed on a new file.
func umask(t *testing.T) os.FileMode {
	name := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(name, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ fi.Mode().Perm()
}

func TestLoadCAErrors(t *testing.T) {
	caKey, otherKey := newP256(t), newP256(t)
	goodCert, goodKey := makeCA(t, caKey, nil), pkcs8PEM(t, caKey)
	iss, err := NewIssuer(mustParseCA(t, goodCert, goodKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Certificate(t.Context(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})

	tests := []struct {
		name            string
		certPEM, keyPEM []byte
		keyMode         os.FileMode
		want            string
	}{
		{"garbage cert", []byte("not PEM"), goodKey, 0o600, "failed to find any PEM data in certificate input"},
		{"garbage key", goodCert, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600, "failed to parse private key"},
		{"not a CA", leafPEM, pkcs8PEM(t, leaf.PrivateKey.(*ecdsa.PrivateKey)), 0o600, "is not a CA"},
		{"no CertSign", makeCA(t, caKey, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), goodKey, 0o600, "may not sign certificates"},
		{"expired", makeCA(t, caKey, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Hour) }), goodKey, 0o600, "expired at"},
		{"not yet valid", makeCA(t, caKey, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(time.Hour) }), goodKey, 0o600, "not valid before"},
		{"mismatched key", goodCert, pkcs8PEM(t, otherKey), 0o600, "private key does not match"},
		{"key readable by group", goodCert, goodKey, 0o640, "group and others must have no access"},
		{"key readable by others", goodCert, goodKey, 0o604, "group and others must have no access"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
			if err := os.WriteFile(certFile, tt.certPEM, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, tt.keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(keyFile, tt.keyMode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCA(certFile, keyFile)
			if err == nil || !strings.HasPrefix(err.Error(), "mitm: load CA: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want 'mitm: load CA: ...%s...'", err, tt.want)
			}
			if _, _, err2 := LoadOrCreateCA(dir); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("LoadOrCreateCA: err = %v, want %v", err2, err)
			}
		})
	}

	if _, err := LoadCA(filepath.Join(t.TempDir(), "missing.pem"), "x"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: err = %v", err)
	}
}

func mustParseCA(t *testing.T, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
