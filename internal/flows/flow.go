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
	"math"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// Flow is the record of one request that passed through the proxy: a
// plain HTTP request, a request decrypted from an intercepted CONNECT, or a
// tunnel whose bytes the proxy did not see.
//
// [Ring.Add] packs a Flow into a byte slice of its own and keeps that, not
// the Flow: the Flow, its header maps, URL and body slices may be the
// request's own (the response header the server is still sending), which
// Add only reads, while it runs. The flows that the ring returns and sends
// to subscribers are shared and read-only.
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
	// the flow is read rather than for every request recorded (the ring
	// keeps RawURL's parts).
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
	// request and of the response sent to it. The values of
	// Authorization, Proxy-Authorization, Cookie and Set-Cookie are
	// redact.Redacted in the flows the ring returns and sends; Add never
	// changes the maps it was given.
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
	// ContentType is the body's Content-Type; the ring fills it from the
	// flow's header when empty.
	ContentType string
	// Prefix holds the first bytes of the body, as many as the capture
	// limit allowed; nil when nothing was captured. The whole body's
	// length is the flow's BytesIn or BytesOut.
	Prefix []byte
}

// entryOverhead is what a kept flow costs besides its packed bytes: its
// slot in the ring and the allocator's rounding, about.
const entryOverhead = 64

// packedSize is what a flow packed in p costs the ring's byte cap.
func packedSize(p []byte) int64 { return entryOverhead + int64(len(p)) }

// Size is what f costs the ring that keeps it, in bytes: its packed
// length (its strings, URL, headers and body prefixes, redacted) and a
// small overhead. The Ring's byte cap counts it.
func (f *Flow) Size() int64 {
	bp := packBuffers.Get().(*[]byte)
	defer packBuffers.Put(bp)
	*bp = appendFlow((*bp)[:0], f, math.MaxInt, true)
	return packedSize(*bp)
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
// password in the URL, as pack does. It allocates only when there is
// something to redact.
func redactFlow(f *Flow) {
	f.RequestHeader = redactHeader(f.RequestHeader)
	f.ResponseHeader = redactHeader(f.ResponseHeader)
	if f.URL == "" && f.RawURL != nil {
		if _, ok := f.RawURL.User.Password(); ok {
			f.URL = f.RawURL.Redacted()
		}
		return
	}
	f.URL = redactURLString(f.URL, f.Tunnel)
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
