package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fwdproxy/fwdproxy"
)

// tlsOptions turns -mitm-ca-dir, -mitm-bypass and -upstream-ca into
// options.
func tlsOptions(f *flags, logger *slog.Logger) ([]fwdproxy.Option, error) {
	var opts []fwdproxy.Option
	if f.upstreamCA != "" {
		pemData, err := os.ReadFile(f.upstreamCA)
		if err != nil {
			return nil, fmt.Errorf("-upstream-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("-upstream-ca: no PEM certificate in %s", f.upstreamCA)
		}
		opts = append(opts, fwdproxy.WithUpstreamRootCAs(pool))
	}
	if f.mitmCADir == "" {
		if len(f.mitmBypass) > 0 {
			return nil, errors.New("-mitm-bypass needs -mitm-ca-dir")
		}
		return opts, nil
	}
	ca, created, err := fwdproxy.LoadOrCreateCA(f.mitmCADir)
	if err != nil {
		return nil, fmt.Errorf("-mitm-ca-dir: %w", err)
	}
	certFile := filepath.Join(f.mitmCADir, "ca.pem")
	if created {
		logger.Warn("created a TLS interception CA: clients must trust its certificate", "cert", certFile)
	}
	logger.Info("TLS interception on", "ca", certFile, "bypass", []string(f.mitmBypass))
	var iopts []fwdproxy.InterceptOption
	if len(f.mitmBypass) > 0 {
		iopts = append(iopts, fwdproxy.WithInterceptBypass(f.mitmBypass...))
	}
	return append(opts, fwdproxy.WithInterception(ca, iopts...)), nil
}
