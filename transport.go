package fwdproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// Buffer sizes for the upstream connections. Larger buffers than Go's 4 KiB
// default cut the number of read and write system calls on large bodies.
const (
	upstreamReadBufferSize  = 32 << 10
	upstreamWriteBufferSize = 32 << 10
)

// newTransport builds the one upstream transport a Proxy shares across all
// requests. Every connection it opens goes through p.dial, so the resolver,
// the address guard and loop detection apply to all of them.
func (p *Proxy) newTransport() *http.Transport {
	c := &p.cfg
	t := &http.Transport{
		DialContext:            p.dial,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           c.maxIdleConns,
		MaxIdleConnsPerHost:    c.maxIdleConnsPerHost,
		IdleConnTimeout:        c.idleConnTimeout,
		TLSHandshakeTimeout:    c.tlsHandshakeTimeout,
		ResponseHeaderTimeout:  c.responseHeaderTimeout,
		MaxResponseHeaderBytes: int64(c.maxResponseHeader),
		ExpectContinueTimeout:  c.expectContinueTimeout,
		DisableCompression:     true, // a proxy passes bodies through untouched
		ReadBufferSize:         upstreamReadBufferSize,
		WriteBufferSize:        upstreamWriteBufferSize,
		TLSClientConfig:        upstreamTLSConfig(c.upstreamRoots),
	}
	if c.proxyFromEnvironment {
		t.Proxy = http.ProxyFromEnvironment
	}
	return t
}

// upstreamTLSConfig verifies upstream certificates against the system roots
// and, when given, the extra roots: crypto/tls checks one pool only, so the
// extra pool is tried in VerifyConnection when the system roots fail.
func upstreamTLSConfig(extra *x509.CertPool) *tls.Config {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if extra == nil {
		return conf
	}
	// Verification moves from the handshake's built-in check into
	// VerifyConnection, which fails the handshake unless a pool accepts the
	// chain for the server name; it is not skipped.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("upstream sent no certificate")
		}
		opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		_, sysErr := leaf.Verify(opts) // nil Roots: the system pool
		if sysErr == nil {
			return nil
		}
		opts.Roots = extra
		if _, err := leaf.Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	return conf
}

// viaValues holds the Via field values a Proxy adds, prebuilt per protocol
// version so the request path does not format them.
type viaValues struct {
	v10, v11, v2 string
}

func newViaValues(pseudonym string) viaValues {
	return viaValues{v10: "1.0 " + pseudonym, v11: "1.1 " + pseudonym, v2: "2 " + pseudonym}
}

func (v *viaValues) forProto(major, minor int) string {
	switch {
	case major == 2:
		return v.v2
	case major == 1 && minor == 0:
		return v.v10
	}
	return v.v11
}

// dropped reports whether filterHeader drops the field k: a hop-by-hop
// field, or a look-alike of a framing or routing field, which a recipient
// reading '_' as '-' would take for the real one. (Requests carrying a
// look-alike are refused before this; responses are cleaned here.)
func dropped(k string) bool {
	if httpx.IsHopByHop(k) {
		return true
	}
	_, lookAlike := httpx.FramingLookAlike(k)
	return lookAlike
}

// filterHeader copies the end-to-end fields of src into dst, dropping the
// hop-by-hop fields, look-alikes of framing and routing fields, and every
// field named in src's Connection header, then
// appends via to the Via field (to none if Connection names Via). Values
// are shared with src, not copied; field order within a name is kept.
func filterHeader(dst, src http.Header, via string) {
	for k, vv := range src {
		if !dropped(k) {
			dst[k] = vv
		}
	}
	dropListed(dst, src["Connection"])
	setVia(dst, priorVia(src["Via"], src["Connection"]), via)
}

// filterHeaderInPlace is filterHeader with the header its own source.
func filterHeaderInPlace(h http.Header, via string) {
	conn, prior := h["Connection"], h["Via"]
	for k := range h {
		if dropped(k) {
			delete(h, k)
		}
	}
	dropListed(h, conn)
	setVia(h, priorVia(prior, conn), via)
}

// headerAdopter is a ResponseWriter that can take a header map as its own
// (srvResponse, and reqState around one).
type headerAdopter interface {
	adoptHeader(http.Header) bool
}

// dropListed deletes from h the fields that the Connection values conn
// name, other than the close and keep-alive options.
func dropListed(h http.Header, conn []string) {
	if len(conn) == 0 {
		return
	}
	httpx.Tokens(conn, func(tok string) bool {
		if !strings.EqualFold(tok, "close") && !strings.EqualFold(tok, "keep-alive") {
			delete(h, textproto.CanonicalMIMEHeaderKey(tok))
		}
		return true
	})
}

// priorVia returns the Via values to keep: none when the Connection
// values conn name Via, which makes them hop-by-hop (RFC 9110 §7.6.1).
func priorVia(prior, conn []string) []string {
	if len(prior) > 0 && httpx.HasToken(conn, "via") {
		return nil
	}
	return prior
}

// setVia sets h's Via to the prior values with via appended.
func setVia(h http.Header, prior []string, via string) {
	vv := make([]string, len(prior)+1)
	copy(vv, prior)
	vv[len(prior)] = via
	h["Via"] = vv
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !httpx.HasToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// outboundHeader builds the header of the request sent upstream from the
// client's header (RFC 9110 §7.6).
func (p *Proxy) outboundHeader(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+1)
	filterHeader(h, r.Header, p.via.forProto(r.ProtoMajor, r.ProtoMinor))
	if up := upgradeType(r.Header); up != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{up}
	}
	// TE is hop-by-hop, but "trailers" is a promise the proxy can keep, and
	// gRPC-style origins refuse requests without it.
	if httpx.HasToken(r.Header["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	return h
}
