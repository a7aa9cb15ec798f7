package mitm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// File names that LoadOrCreateCA reads and writes in its directory.
const (
	CertFile = "ca.pem"     // the CA certificate, PEM
	KeyFile  = "ca-key.pem" // the CA private key, PEM, mode 0600
)

// CAName is the common name of a CA made by NewCA.
const CAName = "fwdproxy interception CA"

// serialLimit bounds random serial numbers to 128 bits.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// NewCA creates a self-signed interception CA: an ECDSA P-256 key, subject
// CAName, valid from an hour ago for ten years, CA:true with path length 0,
// key usage CertSign and CRLSign. It returns the CA with Leaf set, the
// certificate as PEM and the key as PKCS#8 PEM.
func NewCA() (ca tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("mitm: create CA: %w", err)
	}
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("mitm: create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CAName, Organization: []string{"fwdproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("mitm: create CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("mitm: create CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("mitm: create CA: %w", err)
	}
	ca = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return ca, certPEM, keyPEM, nil
}

// ParseCA parses a CA from PEM: the CA certificate first, optionally
// followed by intermediates up to a root (they are sent after every leaf),
// and its private key as PKCS#8, SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA
// PRIVATE KEY"). It fails unless the certificate is a currently valid CA
// allowed to sign certificates and the key matches it.
func ParseCA(certPEM, keyPEM []byte) (tls.Certificate, error) {
	ca, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil {
		_, _, err = checkCA(ca, time.Now())
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mitm: load CA: %w", err)
	}
	return ca, nil
}

// LoadCA reads a CA from PEM files as ParseCA does. On Unix it refuses a
// key file that group or others may access (like ssh does): the key can
// impersonate every site for clients that trust the CA. A key kept
// elsewhere, e.g. in a secret store, can be passed to ParseCA.
func LoadCA(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mitm: load CA: %w", err)
	}
	keyPEM, err := readPrivate(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mitm: load CA: %w", err)
	}
	return ParseCA(certPEM, keyPEM)
}

// readPrivate reads a key file after checking, on the open file, that only
// its owner may access it.
func readPrivate(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %#o: group and others must have no access (chmod 600)", name, perm)
	}
	return io.ReadAll(f)
}

// LoadOrCreateCA loads the CA in dir (files CertFile and KeyFile) or, when
// neither file exists, creates one with NewCA and writes it there: dir with
// mode 0700 if missing, the key created with mode 0600 and the certificate
// with 0644, neither overwriting an existing file. created reports whether
// the CA is new; its certificate must then be installed in clients. Exactly
// one of the two files existing is an error. Several processes creating the
// same CA at the same moment may fail; create it once beforehand.
func LoadOrCreateCA(dir string) (ca tls.Certificate, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certExists, keyExists := exists(certPath), exists(keyPath)
	switch {
	case certExists && keyExists:
		ca, err = LoadCA(certPath, keyPath)
		return ca, false, err
	case certExists || keyExists:
		return tls.Certificate{}, false, fmt.Errorf("mitm: load CA: %s holds only one of %s and %s; add the other or remove it", dir, CertFile, KeyFile)
	}
	ca, certPEM, keyPEM, err := NewCA()
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("mitm: create CA: %w", err)
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("mitm: create CA: %w", err)
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return tls.Certificate{}, false, fmt.Errorf("mitm: create CA: %w", err)
	}
	return ca, true, nil
}

// exists reports whether name exists, a dangling symbolic link included.
func exists(name string) bool {
	_, err := os.Lstat(name)
	return !errors.Is(err, fs.ErrNotExist)
}

// writeNew creates name with mode perm (less the umask) and writes data to
// it, failing if name exists. The mode applies from creation on, so a key
// is never readable by others, not even briefly. On failure name is removed.
func writeNew(name string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}

// checkCA returns the parsed CA certificate and its signer after checking
// that it is a CA allowed to sign certificates, valid at now, and that the
// private key matches it.
func checkCA(ca tls.Certificate, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if len(ca.Certificate) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	cert := ca.Leaf
	if cert == nil {
		var err error
		if cert, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
			return nil, nil, err
		}
	}
	name := cert.Subject.String()
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return nil, nil, fmt.Errorf("certificate %q is not a CA (basic constraints lack CA:true)", name)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, nil, fmt.Errorf("CA certificate %q may not sign certificates (key usage lacks CertSign)", name)
	case now.After(cert.NotAfter):
		return nil, nil, fmt.Errorf("CA certificate %q expired at %s", name, cert.NotAfter.Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		return nil, nil, fmt.Errorf("CA certificate %q is not valid before %s", name, cert.NotBefore.Format(time.RFC3339))
	}
	signer, ok := ca.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("CA private key of type %T cannot sign", ca.PrivateKey)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("CA private key does not match certificate %q", name)
	}
	return cert, signer, nil
}
