package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/fwdproxy/fwdproxy"
)

// The front ends besides -listen's plain HTTP: the HTTPS listener
// (-tls-listen, with -tls-cert and -tls-key, whose files are watched and
// read again when they change), SOCKS5 (-socks-listen, and on -listen with
// -socks-on-http-listener), cleartext HTTP/2 (-h2c), the PROXY protocol
// (-proxy-protocol-from) and client certificates (-tls-client-ca,
// -tls-require-client-cert).

// frontOptions turns the front-end settings into options. The -tls-client-ca
// file is read each time, so a reload picks up a new one; the certificate
// pair is sh.cert's, which reads its files again too.
func frontOptions(l *loaded, sh *shared) ([]fwdproxy.Option, error) {
	s := l.s
	var opts []fwdproxy.Option
	var errs []error
	bad := func(key, msg string) { errs = append(errs, l.problem(key, msg)) }
	switch {
	case sh.cert != nil:
		if err := sh.cert.load(); err != nil {
			bad("tls-cert", err.Error())
			break
		}
		conf := &tls.Config{GetCertificate: sh.cert.getCertificate}
		if s.tlsClientCA != "" {
			pemData, err := os.ReadFile(s.tlsClientCA)
			if err != nil {
				bad("tls-client-ca", err.Error())
				break
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemData) {
				bad("tls-client-ca", "no PEM certificate in "+s.tlsClientCA)
				break
			}
			conf.ClientCAs, conf.ClientAuth = pool, tls.VerifyClientCertIfGiven
			if s.tlsRequireClientCert {
				conf.ClientAuth = tls.RequireAndVerifyClientCert
			}
		} else if s.tlsRequireClientCert {
			bad("tls-require-client-cert", "needs -tls-client-ca (the CAs that issue the client certificates)")
		}
		opts = append(opts, fwdproxy.WithTLS(conf))
	case s.tlsClientCA != "":
		bad("tls-client-ca", "needs -tls-listen, -tls-cert and -tls-key: client certificates come over TLS")
	}
	if s.h2MaxStreams != fwdproxy.DefaultHTTP2MaxStreams {
		opts = append(opts, fwdproxy.WithHTTP2MaxStreams(s.h2MaxStreams))
	}
	if s.h2c {
		opts = append(opts, fwdproxy.WithCleartextHTTP2())
	}
	if s.socksOnHTTP {
		opts = append(opts, fwdproxy.WithSOCKSOnHTTPListener())
	}
	if len(s.proxyProtocolFrom) > 0 {
		prefixes := make([]netip.Prefix, 0, len(s.proxyProtocolFrom))
		for _, v := range s.proxyProtocolFrom {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				a, aerr := netip.ParseAddr(v)
				if aerr != nil {
					bad("proxy-protocol-from", fmt.Sprintf("%q is not a CIDR range or an IP address", v))
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			prefixes = append(prefixes, p)
		}
		opts = append(opts, fwdproxy.WithProxyProtocol(prefixes...))
	}
	return opts, errors.Join(errs...)
}

// checkFront checks the front-end settings that are used once, at start:
// the listen addresses, and that TLS has its certificate.
func checkFront(l *loaded) []error {
	s := l.s
	var errs []error
	for _, k := range []struct{ key, addr string }{{"tls-listen", s.tlsListen}, {"socks-listen", s.socksListen}} {
		if k.addr == "" {
			continue
		}
		if err := checkAddr(k.addr); err != nil {
			errs = append(errs, l.problem(k.key, err.Error()))
		}
	}
	switch {
	case s.tlsListen != "" && (s.tlsCert == "" || s.tlsKey == ""):
		errs = append(errs, l.problem("tls-listen", "needs -tls-cert and -tls-key (the proxy's certificate and key, PEM)"))
	case s.tlsListen == "" && (s.tlsCert != "" || s.tlsKey != ""):
		key := "tls-cert"
		if s.tlsCert == "" {
			key = "tls-key"
		}
		errs = append(errs, l.problem(key, "needs -tls-listen (the address of the HTTPS listener)"))
	}
	return errs
}

// certFiles is the proxy's certificate, from a PEM certificate (chain) and
// key file: load reads them again, and the TLS listener's handshakes get
// the last pair that loaded (getCertificate). A pair that does not load
// leaves the one before in use.
type certFiles struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
	mu                sync.Mutex // one load at a time
	// getCertificate is the method value given to WithTLS, made once so
	// that every configuration built names the same function (Reload
	// describes a function by its identity).
	getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// newCertFiles returns the certificate of certFile and keyFile, not loaded.
func newCertFiles(certFile, keyFile string) *certFiles {
	c := &certFiles{certFile: certFile, keyFile: keyFile}
	c.getCertificate = c.get
	return c
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// load reads the pair and, when it is valid, puts it in use. It reports
// whether the certificate changed.
func (c *certFiles) load() error {
	_, err := c.reload()
	return err
}

func (c *certFiles) reload() (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return false, fmt.Errorf("the certificate %s and key %s do not load: %w", c.certFile, c.keyFile, err)
	}
	if old := c.cur.Load(); old != nil && string(old.Certificate[0]) == string(pair.Certificate[0]) {
		return false, nil
	}
	c.cur.Store(&pair)
	return true, nil
}

// describe names the certificate in use, for log lines.
func (c *certFiles) describe() []any {
	cur := c.cur.Load()
	if cur == nil || cur.Leaf == nil {
		return nil
	}
	return []any{"subject", cur.Leaf.Subject.String(), "serial", cur.Leaf.SerialNumber.String(),
		"not_after", cur.Leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "dns_names", cur.Leaf.DNSNames}
}

// watchCert reads c's files again when either changes (watch.go's
// watcher: an editor's save, cert-manager's or a ConfigMap's swap) and
// logs the outcome, until the function it returns is called.
func watchCert(c *certFiles, logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, file := range []string{c.certFile, c.keyFile} {
		fw, err := newFileWatcher(file, watchDebounce)
		if err != nil {
			logger.Warn("cannot watch the TLS certificate; reload it with SIGHUP (with -config) or a restart", "file", file, "error", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fw.run(ctx, func() {
				switch changed, err := c.reload(); {
				case err != nil:
					logger.Warn("TLS certificate not reloaded; the one before stays in use", "file", file, "error", err)
				case changed:
					logger.Info("TLS certificate reloaded", append([]any{"file", file}, c.describe()...)...)
				}
			}, func(err error) {
				logger.Warn("watching the TLS certificate", "file", file, "error", err)
			})
		}()
	}
	return sync.OnceFunc(func() { cancel(); wg.Wait() })
}
