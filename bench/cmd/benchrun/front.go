package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// frontFlags are the example server's flags that put scenario s's front
// end on port: -listen itself for plain HTTP/1.1 (with -h2c for cleartext
// HTTP/2), else -tls-listen or -socks-listen, -listen then taking any free
// port.
func (h *harness) frontFlags(port int, s scenario) []string {
	switch s.front {
	case "tls", "h2":
		return []string{"-listen", "127.0.0.1:0", "-tls-listen", addr(port), "-tls-cert", h.proxyCert, "-tls-key", h.proxyKey}
	case "socks":
		return []string{"-listen", "127.0.0.1:0", "-socks-listen", addr(port)}
	case "h2c":
		return []string{"-listen", addr(port), "-h2c"}
	}
	return []string{"-listen", addr(port)}
}

// frontName names a front end in notes.
func frontName(front string) string {
	switch front {
	case "tls":
		return "HTTPS"
	case "socks":
		return "SOCKS5"
	case "h2c":
		return "cleartext HTTP/2"
	case "h2":
		return "HTTP/2 over TLS"
	}
	return front
}

// writeProxyCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// its key into dir, for fwdproxy's HTTPS listener; loadgen trusts the
// certificate.
func writeProxyCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fwdproxy bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "proxy-cert.pem"), filepath.Join(dir, "proxy-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}
