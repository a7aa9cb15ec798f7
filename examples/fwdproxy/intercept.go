package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/mitm"
)

// tlsOptions turns -upstream-ca and -mitm-bypass, with the CA loaded at
// start from -mitm-ca-dir, into options. The -upstream-ca file is read
// each time, so a reload picks up a new one.
func tlsOptions(l *loaded, sh *shared) ([]fwdproxy.Option, error) {
	s := l.s
	var opts []fwdproxy.Option
	if s.upstreamCA != "" {
		pemData, err := os.ReadFile(s.upstreamCA)
		if err != nil {
			return nil, l.problem("upstream-ca", err.Error())
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, l.problem("upstream-ca", "no PEM certificate in "+s.upstreamCA)
		}
		opts = append(opts, fwdproxy.WithUpstreamRootCAs(pool))
	}
	if sh.ca == nil {
		if len(s.mitmBypass) > 0 {
			return nil, l.problem("mitm-bypass", "needs -mitm-ca-dir")
		}
		return opts, nil
	}
	var iopts []fwdproxy.InterceptOption
	if len(s.mitmBypass) > 0 {
		iopts = append(iopts, fwdproxy.WithInterceptBypass(s.mitmBypass...))
	}
	if sh.certs != nil {
		iopts = append(iopts, fwdproxy.WithCertStore(sh.certs))
	}
	return append(opts, fwdproxy.WithInterception(*sh.ca, iopts...)), nil
}

// loadCA loads the interception CA from -mitm-ca-dir, creating it there if
// both files are missing, and says so; it returns the CA and a store for
// the leaf certificates it signs, which every configuration built since
// shares, so that a reload keeps them. Both are nil without -mitm-ca-dir.
func loadCA(l *loaded, logger *slog.Logger) (*tls.Certificate, fwdproxy.CertStore, error) {
	dir := l.s.mitmCADir
	if dir == "" {
		return nil, nil, nil
	}
	ca, created, err := fwdproxy.LoadOrCreateCA(dir)
	if err != nil {
		return nil, nil, l.problem("mitm-ca-dir", err.Error())
	}
	certs, err := fwdproxy.NewMemoryCertStore(mitm.DefaultCacheSize)
	if err != nil {
		return nil, nil, err
	}
	certFile := filepath.Join(dir, mitm.CertFile)
	if created {
		logger.Warn("created a TLS interception CA: clients must trust its certificate", "cert", certFile)
	}
	logger.Info("TLS interception on", "ca", certFile, "bypass", []string(l.s.mitmBypass))
	return &ca, certs, nil
}

// checkCA is loadCA for -check-config: it reads the CA but writes nothing.
// When both files are missing, a CA made in memory stands in for the one
// the server would create, and note says so.
func checkCA(l *loaded) (ca *tls.Certificate, note string, err error) {
	dir := l.s.mitmCADir
	if dir == "" {
		return nil, "", nil
	}
	certFile, keyFile := filepath.Join(dir, mitm.CertFile), filepath.Join(dir, mitm.KeyFile)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		c, err := fwdproxy.LoadCA(certFile, keyFile)
		if err != nil {
			return nil, "", l.problem("mitm-ca-dir", err.Error())
		}
		return &c, "", nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		c, _, _, err := fwdproxy.NewCA()
		if err != nil {
			return nil, "", err
		}
		return &c, fmt.Sprintf("the server would create a TLS interception CA in %s", dir), nil
	case certErr == nil || keyErr == nil:
		return nil, "", l.problem("mitm-ca-dir", fmt.Sprintf("%s holds only one of %s and %s; add the other or remove it", dir, mitm.CertFile, mitm.KeyFile))
	}
	return nil, "", l.problem("mitm-ca-dir", errors.Join(certErr, keyErr).Error())
}
