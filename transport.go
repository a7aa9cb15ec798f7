package fwdproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// Buffer sizes for the upstream connections. Larger buffers than Go's 4 KiB
// default cut the number of read and write system calls on large bodies.
const (
	upstreamReadBufferSize  = 32 << 10
	upstreamWriteBufferSize = 32 << 10
)

// newTransport builds the upstream transport that requests share, with the
// settings of c: it serves every configuration that leaves those settings
// unchanged, with its pool (upstream.go). Every connection it opens goes
// through p.dial, so the resolver, the address guard and loop detection
// apply to all of them, under the dialing request's configuration.
func (p *Proxy) newTransport(c *config) *http.Transport {
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

// roundTrip sends out upstream and returns the response. It is the router
// of the upstream chain: it decides once (fastPath) whether the own
// HTTP/1.1 transport (pool.go) or the shared http.Transport takes out, and
// when telemetry follows the request it hands that decision to the
// client-side measurement (observeRoundTrip, telemetry.go), which sends out
// through send. c is the request's configuration.
func (p *Proxy) roundTrip(c *config, out *http.Request) (*http.Response, error) {
	addr, fast := p.fastPath(c, out)
	if rs := reqStateFrom(out.Context()); rs != nil {
		return p.observeRoundTrip(c, rs, out, addr, fast)
	}
	return p.send(c, out, addr, fast, nil)
}

// send sends out on the path roundTrip chose: the own transport to addr
// when fast, which reports the upstream connection to obs (when not nil),
// or the shared transport.
func (p *Proxy) send(c *config, out *http.Request, addr string, fast bool, obs h1.ConnObserver) (resp *http.Response, err error) {
	if fast {
		resp, err = c.up.h1.Send(out, addr, obs) // upstream.go: the configuration's transports
	} else {
		noDefaultUserAgent(out)
		resp, err = c.up.transport.RoundTrip(out)
	}
	if err != nil {
		if over, h2 := responseHeadTooLarge(err); over || h2 {
			target := out.URL.Host
			limit := strconv.Itoa(c.maxResponseHeader) + " bytes (the WithMaxResponseHeaderBytes limit)"
			reason := "upstream " + target + " sent a response header over " + limit
			if h2 {
				reason = "upstream " + target + " broke the HTTP/2 protocol, or sent a response header over " + limit
			}
			err = newError(ErrUpstream, target, reason, err)
		}
	}
	return resp, err
}

// responseHeadTooLarge reports whether err is a response head over
// WithMaxResponseHeaderBytes (over): the own transport's error, or one of
// http.Transport's, which has no error value for it, so its messages are
// matched (TestResponseHeaderLimit checks them). Over HTTP/2 a head that
// passes the limit by more than a frame ends the connection with a
// PROTOCOL_ERROR that tells nothing more; h2 reports such an error.
func responseHeadTooLarge(err error) (over, h2 bool) {
	if errors.Is(err, h1.ErrResponseHeadTooLarge) {
		return true, false
	}
	s := err.Error()
	if strings.Contains(s, "server response headers exceeded") || // HTTP/1
		strings.Contains(s, "response header list larger than advertised limit") { // HTTP/2, within a frame
		return true, false
	}
	return false, strings.Contains(s, "connection error: PROTOCOL_ERROR")
}

// noDefaultUserAgent keeps http.Transport from adding its own User-Agent
// ("Go-http-client/1.1") to a request that has none: a proxy passes what
// came. Its HTTP/1 and HTTP/2 writers both send no User-Agent for a key
// present with no value. (The fast path's writeRequest adds none anyway.)
func noDefaultUserAgent(out *http.Request) {
	if _, ok := out.Header["User-Agent"]; ok {
		return
	}
	if out.Header == nil {
		out.Header = make(http.Header, 1)
	}
	out.Header["User-Agent"] = nil
}

// fastPath reports whether out takes the fast path (the own HTTP/1.1
// transport, pool.go) and, if so, the "host:port" to dial. A request hook
// may have broken what the server checked; such a request is left to
// http.Transport, which reports it.
func (p *Proxy) fastPath(c *config, out *http.Request) (string, bool) {
	if c.proxyFromEnvironment {
		return "", false
	}
	key, ok := h1.CanSend(out)
	if !ok || (len(c.requestHooks) > 0 && !h1.ValidRequest(out)) {
		return "", false
	}
	return key, true
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
// client's header (RFC 9110 §7.6), with c's Via.
func outboundHeader(c *config, r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+1)
	filterHeader(h, r.Header, c.via.forProto(r.ProtoMajor, r.ProtoMinor))
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
