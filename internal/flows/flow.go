// Package flows records the requests that pass through the proxy in a
// bounded ring, for the flow inspector of the admin listener: a record per
// request (a Flow), a Ring that keeps the most recent ones under a count
// and a byte cap, HAR 1.2 export, and the HTTP handlers of the inspector
// (the page /flows, its JSON API, a Server-Sent Events stream of new flows,
// and /flows.har).
//
// The proxy builds a Flow when a request ends and hands it to [Ring.Add],
// after asking [Ring.Recording] whether anyone records at all. Everything
// else happens on the admin listener's goroutines.
package flows

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// Flow is the record of one request that passed through the proxy: a
// plain HTTP request, a request decrypted from an intercepted CONNECT, or a
// tunnel whose bytes the proxy did not see.
//
// A Flow given to [Ring.Add] belongs to the ring from then on, and must not
// be changed by anyone; its header maps and body slices are only read, so
// they may be maps still being read elsewhere (the response header the
// server is still sending) but must not change either. The flows that the
// ring returns are shared and read-only.
type Flow struct {
	// ID numbers the flows of a Ring from 1 up in the order they were
	// added; Add sets it.
	ID uint64
	// Start is when the request's head had been read.
	Start time.Time
	// Method is the request method; CONNECT for tunnels.
	Method string
	// URL is the absolute URL of the request, with any password replaced
	// (url.URL.Redacted); the authority (host:port) for CONNECT. When
	// it is empty and RawURL is not nil, it is RawURL's String, made when
	// the flow is read rather than for every request recorded; RawURL must
	// not change once the flow is added.
	URL    string
	RawURL *url.URL
	// Host is the destination as host or host:port.
	Host string
	// Proto is the protocol of the client's request: "HTTP/1.1",
	// "HTTP/2.0".
	Proto string
	// Status is the status code sent to the client; 0 when none was sent.
	Status int
	// User is the authenticated user, or empty.
	User string
	// Client is the client's address (host:port).
	Client string
	// Upstream is the address the proxy connected to for this request,
	// when it did: an origin, or an upstream proxy. When it is empty and
	// UpstreamAddr is not nil, it is UpstreamAddr's String, made when the
	// flow is read rather than for every request recorded.
	Upstream     string
	UpstreamAddr net.Addr
	// BytesIn counts the request body bytes read from the client, or for
	// a tunnel the bytes from the client to the upstream.
	BytesIn int64
	// BytesOut counts the response body bytes written to the client, or
	// for a tunnel the bytes from the upstream to the client.
	BytesOut int64
	// ErrorKind names the kind of error that ended the request, as in the
	// access log ("forbidden", "upstream_timeout", …); empty on success.
	ErrorKind string
	// ErrorReason is the text the client was sent with the error.
	ErrorReason string
	// Intercepted marks a request decrypted from an intercepted CONNECT.
	Intercepted bool
	// Tunnel marks a CONNECT (or upgraded) tunnel whose contents the proxy
	// relayed without reading them.
	Tunnel bool
	// Timings are the phases of the request, each zero when not measured.
	Timings Timings
	// RequestHeader and ResponseHeader are the headers of the client's
	// request and of the response sent to it. Add replaces a header that
	// holds Authorization, Proxy-Authorization, Cookie or Set-Cookie by a
	// copy in which their values are redact.Redacted; it never changes
	// the map it was given.
	RequestHeader, ResponseHeader http.Header
	// RequestBody and ResponseBody are the captured prefixes of the
	// bodies.
	RequestBody, ResponseBody Body
}

// Timings are the phases of a request as the proxy measured them. DNS,
// Connect and TLS are the durations of the lookup, the TCP connect and the
// TLS handshake to the upstream (zero when a pooled connection was
// reused). FirstByte runs from Start to the first byte of the upstream's
// response, Total from Start to the end of the response.
type Timings struct {
	DNS       time.Duration // the upstream name's lookup
	Connect   time.Duration // the TCP connect to the upstream
	TLS       time.Duration // the TLS handshake with the upstream
	FirstByte time.Duration // from Start to the upstream's first response byte
	Total     time.Duration // from Start to the end of the response
}

// Body is a captured body prefix.
type Body struct {
	// ContentType is the body's Content-Type; Add fills it from the
	// flow's header when empty.
	ContentType string
	// Prefix holds the first bytes of the body, as many as the capture
	// limit allowed; nil when nothing was captured. The whole body's
	// length is the flow's BytesIn or BytesOut.
	Prefix []byte
}

// flowOverhead is what a Flow costs besides its strings, headers and
// bodies: the struct, the pointer to it in the ring, and a margin for the
// allocator's size classes.
const flowOverhead = 384

// headerEntryOverhead and headerValueOverhead approximate what a map entry
// and a value of an http.Header cost besides their bytes.
const (
	headerEntryOverhead = 48
	headerValueOverhead = 16
)

// Size estimates the memory the flow holds, in bytes: a fixed overhead,
// its strings, its headers and its body prefixes. The Ring's byte cap
// counts it.
func (f *Flow) Size() int64 {
	return f.fixedSize() + int64(headerSize(f.RequestHeader)+headerSize(f.ResponseHeader))
}

// fixedSize is Size without the headers.
func (f *Flow) fixedSize() int64 {
	n := flowOverhead + len(f.Method) + len(f.URL) + rawURLSize(f.RawURL) + len(f.Host) + len(f.Proto) + len(f.User) +
		len(f.Client) + len(f.Upstream) + len(f.ErrorKind) + len(f.ErrorReason) + upstreamAddrSize(f.UpstreamAddr) +
		len(f.RequestBody.ContentType) + len(f.ResponseBody.ContentType) +
		len(f.RequestBody.Prefix) + len(f.ResponseBody.Prefix)
	return int64(n)
}

// upstreamAddrSize is what an UpstreamAddr costs: its string's length
// at most, without making it (an address is shared with its connection).
func upstreamAddrSize(a net.Addr) int {
	if a == nil {
		return 0
	}
	return len("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
}

// rawURLSize is what a RawURL costs besides what it shares with the
// request it came from: the url.URL and its String's length, about.
func rawURLSize(u *url.URL) int {
	if u == nil {
		return 0
	}
	return 144 + len(u.Scheme) + len(u.Host) + len(u.Path) + len(u.RawQuery) + len("://?")
}

// url is f.URL, or f.RawURL's String when it is empty.
func (f *Flow) url() string {
	if f.URL == "" && f.RawURL != nil {
		return f.RawURL.String()
	}
	return f.URL
}

// upstream is f.Upstream, or f.UpstreamAddr's String when it is empty.
func (f *Flow) upstream() string {
	if f.Upstream == "" && f.UpstreamAddr != nil {
		return f.UpstreamAddr.String()
	}
	return f.Upstream
}

// redactSize redacts f (see redactFlow) and returns its Size, walking a
// header without credentials once.
func (f *Flow) redactSize() int64 {
	f.redactURL()
	return f.fixedSize() + int64(redactedSize(&f.RequestHeader)+redactedSize(&f.ResponseHeader))
}

// redactedSize replaces *h by its redacted copy when it holds credentials
// (redactHeader), and returns the size of the header kept.
func redactedSize(h *http.Header) int {
	n, secret := measureHeader(*h)
	if secret {
		*h = redactHeader(*h)
		n, _ = measureHeader(*h)
	}
	return n
}

// headerSize returns what h costs.
func headerSize(h http.Header) int {
	n, _ := measureHeader(h)
	return n
}

// measureHeader returns what h costs, and whether it holds a sensitive
// field.
func measureHeader(h http.Header) (n int, secret bool) {
	for name, values := range h {
		secret = secret || sensitive(name)
		n += headerEntryOverhead + len(name)
		for _, v := range values {
			n += headerValueOverhead + len(v)
		}
	}
	return n, secret
}

// redactHeader returns h when it holds no sensitive field, else a copy of
// it whose sensitive values are redact.Redacted: h is never changed, for
// it may still be in use (the header of a response being sent). Only a
// header with credentials costs a copy.
func redactHeader(h http.Header) http.Header {
	for name := range h {
		if sensitive(name) {
			c := h.Clone()
			for name, values := range c {
				if sensitive(name) {
					for i := range values {
						values[i] = redact.Redacted
					}
				}
			}
			return c
		}
	}
	return h
}

// sensitive is redact.IsSensitive behind a check of the length, which
// rules out most names at once.
func sensitive(name string) bool {
	switch len(name) {
	case len("Cookie"), len("Set-Cookie"), len("Authorization"), len("Proxy-Authorization"):
		return redact.IsSensitive(name)
	}
	return false
}

// redactFlow redacts the values of sensitive headers (in copies) and a
// password in the URL. It allocates only when there is something to
// redact.
func redactFlow(f *Flow) { f.redactSize() }

// redactURL replaces a password in the URL; it allocates only when the URL
// holds one.
func (f *Flow) redactURL() {
	if f.URL == "" && f.RawURL != nil {
		if _, ok := f.RawURL.User.Password(); ok {
			f.URL = f.RawURL.Redacted()
		}
		return
	}
	if strings.Contains(f.URL, "@") && !f.Tunnel {
		if u, err := url.Parse(f.URL); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				f.URL = u.Redacted()
			}
		}
	}
}

// fillContentTypes sets the bodies' content types from the headers when
// the recorder left them empty.
func fillContentTypes(f *Flow) {
	if f.RequestBody.ContentType == "" {
		f.RequestBody.ContentType = headerValue(f.RequestHeader, "Content-Type")
	}
	if f.ResponseBody.ContentType == "" {
		f.ResponseBody.ContentType = headerValue(f.ResponseHeader, "Content-Type")
	}
}

// headerValue is h.Get for a canonical name, without canonicalising it.
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
