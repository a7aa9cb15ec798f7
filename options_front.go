package fwdproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/fwdproxy/fwdproxy/internal/mitm"
	"github.com/fwdproxy/fwdproxy/internal/policy"
)

// Options for the front ends other than plain HTTP/1.1: TLS to the proxy
// (ServeTLS), HTTP/2 to the proxy, the PROXY protocol and SOCKS5
// (ServeSOCKS). Every front end feeds the one pipeline: the same rules,
// authentication, limits, hooks, telemetry and access log (front.go).

// Defaults of the front ends.
const (
	// DefaultHTTP2MaxStreams is the default of WithHTTP2MaxStreams.
	DefaultHTTP2MaxStreams = 100
)

// The HTTP/2 flow-control windows of the proxy's server side, sized for
// tunnels: a CONNECT stream carries a whole TCP connection, so a stream may
// take 1 MiB before the proxy has passed it on, and a connection 4 MiB in
// all (net/http's defaults are 1 MiB for both, which makes four busy
// tunnels on one connection wait for each other).
const (
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 4 << 20
)

// WithTLS makes ServeTLS serve TLS with conf: an HTTPS proxy, to which
// clients speak TLS (`curl -x https://…`, Go's client with an https:// proxy
// URL, Chromium's --proxy-server=https://…). conf must provide a
// certificate (Certificates or GetCertificate, which may return a
// certificate reloaded from files); it is cloned, and the clone is made to
// offer TLS 1.2 and 1.3 only, with AEAD cipher suites only (ECDHE with
// AES-GCM or ChaCha20-Poly1305), as the interception listener does; a
// CipherSuites list with any other suite is refused. Without NextProtos,
// it offers HTTP/2 and HTTP/1.1 by ALPN ("h2", "http/1.1"). A
// GetConfigForClient is refused: the proxy uses its own, to read the
// configuration in force at each handshake.
//
// Client certificates authenticate: with conf.ClientAuth set to
// tls.VerifyClientCertIfGiven or tls.RequireAndVerifyClientCert and
// conf.ClientCAs the CAs that issue them, a client whose certificate
// verified is the user its certificate names, for the rules, the access
// hooks, the quotas and the access log, without Proxy-Authorization. The
// name is the certificate's subject common name (CN), as smokescreen takes
// a client's role; a certificate without one is named by its first URI
// SAN (a SPIFFE ID), else its first DNS SAN, else its first e-mail
// address. A client without a verified certificate (VerifyClientCertIfGiven)
// is authenticated by WithBasicAuth or WithAuthenticator when one is
// given, and is anonymous otherwise. Other ClientAuth values ask for no
// verification, and a certificate they let through names nobody.
//
// Reload may change conf (a new certificate, new client CAs): the next
// handshake uses it, and connections already open keep theirs. A Reload
// without WithTLS is refused while ServeTLS runs.
func WithTLS(conf *tls.Config) Option {
	return optionFunc(func(s *settings) error {
		if conf == nil {
			return errors.New("WithTLS: nil *tls.Config")
		}
		if len(conf.Certificates) == 0 && conf.GetCertificate == nil {
			return errors.New("WithTLS: the configuration has no certificate: set Certificates or GetCertificate")
		}
		if conf.GetConfigForClient != nil {
			return errors.New("WithTLS: GetConfigForClient is not supported (the proxy uses its own to follow Reload); use GetCertificate")
		}
		for _, id := range conf.CipherSuites {
			if !slices.Contains(mitm.AEADSuites(), id) {
				return fmt.Errorf("WithTLS: cipher suite %s is not offered: only ECDHE suites with AES-GCM or ChaCha20-Poly1305 are (leave CipherSuites empty for all of them)", tls.CipherSuiteName(id))
			}
		}
		s.tls = conf.Clone()
		return nil
	})
}

// WithHTTP2MaxStreams bounds the streams a client may have open at once on
// one HTTP/2 connection to the proxy (SETTINGS_MAX_CONCURRENT_STREAMS): its
// requests and CONNECT tunnels together. Default DefaultHTTP2MaxStreams
// (100). Each stream may hold up to 1 MiB that the proxy has received and
// not yet passed on, and a connection 4 MiB in all (the flow-control
// windows, sized for tunnels). A change by Reload applies to the
// connections accepted after it.
func WithHTTP2MaxStreams(n int) Option {
	return optionFunc(func(s *settings) error {
		if n < 1 || n > 1<<20 {
			return fmt.Errorf("WithHTTP2MaxStreams: want 1 to %d, got %d", 1<<20, n)
		}
		s.h2MaxStreams = n
		return nil
	})
}

// WithCleartextHTTP2 lets clients speak HTTP/2 without TLS to Serve's
// listener when they know it beforehand ("prior knowledge": the connection
// opens with the HTTP/2 preface, as `curl --http2-prior-knowledge` and
// h2load send it); it is off by default. The Upgrade: h2c dance of HTTP/1.1
// is not offered. A change by Reload applies to the connections accepted
// after it.
func WithCleartextHTTP2() Option {
	return optionFunc(func(s *settings) error {
		s.h2c = true
		return nil
	})
}

// WithProxyProtocol takes HAProxy's PROXY protocol (v1 and v2) on the
// listeners of Serve, ServeTLS and ServeSOCKS, from the peers in trusted
// (the load balancers in front of the proxy): a connection from a trusted
// address must open with a header, and the client address it carries is
// the client's address for the rules, the rate limit, the access hooks, the
// access log and telemetry. A connection from any other address is served
// with its own address, and closed, with a log line, if it opens with a
// header, which only a client forging its address would send. A malformed
// or missing header from a trusted peer closes the connection with a log
// line too. The header comes before TLS: ServeTLS reads it first.
//
// Reload may change the trusted ranges, for the connections accepted after
// it; a Reload without WithProxyProtocol leaves the listeners trusting
// nobody (a header is then refused). A listener that Serve, ServeTLS or
// ServeSOCKS started without WithProxyProtocol reads no header: Reload
// refuses to turn it on while one runs.
func WithProxyProtocol(trusted ...netip.Prefix) Option {
	return optionFunc(func(s *settings) error {
		if len(trusted) == 0 {
			return errors.New("WithProxyProtocol: give the ranges of the load balancers to trust (a bare address is a /32 or /128)")
		}
		ps := make([]netip.Prefix, 0, len(trusted))
		for _, p := range trusted {
			if !p.IsValid() {
				return fmt.Errorf("WithProxyProtocol: invalid range %v", p)
			}
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			ps = append(ps, p.Masked())
		}
		s.proxyProtocol = ps
		return nil
	})
}

// WithSOCKSOnHTTPListener makes Serve's listener speak SOCKS5 as well,
// to clients whose first byte is a SOCKS5 greeting (5; no HTTP request and
// no TLS record starts with it), as ServeSOCKS does on a listener of its
// own. It is off by default: a SOCKS client on the HTTP listener is
// refused ("no acceptable methods") with a log line, so that a port meant
// for HTTP speaks nothing else unless asked to. Reload may turn it on or
// off, for the connections accepted after it.
func WithSOCKSOnHTTPListener() Option {
	return optionFunc(func(s *settings) error {
		s.socksOnHTTP = true
		return nil
	})
}

// frontConfig is what a configuration derives for its front ends.
type frontConfig struct {
	tls          *tls.Config       // WithTLS's, hardened; nil without it
	certAuth     bool              // verified client certificates authenticate
	certRequired bool              // and one is required (RequireAndVerifyClientCert)
	proxyTrust   *policy.PrefixSet // WithProxyProtocol's ranges; nil without it
}

// buildFront derives the front ends' configuration from s (buildConfig
// calls it).
func buildFront(s *settings) (frontConfig, error) {
	var f frontConfig
	if s.tls != nil {
		conf := s.tls.Clone()
		conf.MinVersion = max(conf.MinVersion, tls.VersionTLS12)
		if len(conf.CipherSuites) == 0 {
			conf.CipherSuites = mitm.AEADSuites()
		}
		if len(conf.NextProtos) == 0 {
			conf.NextProtos = []string{"h2", "http/1.1"}
		}
		f.tls = conf
		f.certAuth = conf.ClientAuth >= tls.VerifyClientCertIfGiven
		f.certRequired = conf.ClientAuth == tls.RequireAndVerifyClientCert
	}
	if s.proxyProtocol != nil {
		ps, err := policy.NewPrefixSet(s.proxyProtocol...)
		if err != nil {
			return f, fmt.Errorf("WithProxyProtocol: %w", err)
		}
		f.proxyTrust = ps
	}
	return f, nil
}
