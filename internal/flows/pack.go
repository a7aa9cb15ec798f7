package flows

import (
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// A flow as the ring keeps it is packed: its numbers, strings, URL,
// headers and body prefixes in one byte slice, which holds no pointers.
// The garbage collector marks such a slice without scanning it, where a
// Flow with its header maps, value slices, strings, URL and address would
// cost it a dozen objects to visit on every cycle, for as long as the ring
// keeps the flow (issue 20's measurement: the retained ring doubled the GC's
// CPU). A flow is unpacked when it is read: its detail, a list, the HAR.
//
// The layout, every number a varint, every string and byte slice its
// length then its bytes:
//
//	flags start status bytesIn bytesOut dns connect tls firstByte total
//	method host user errorKind proto client upstream errorReason
//	requestType responseType
//	the URL: a string, or with flagURLParts scheme opaque user host path
//	  rawPath rawQuery fragment rawFragment and a byte of urlForceQuery,
//	  urlOmitHost and the user's kind (none, a name, a name and password)
//	the request header, then the response header: the count of names, the
//	  count of values, then each name with its count of values and each value
//	the request body prefix, then the response body prefix (when flagged)
//
// Packing redacts: the values of sensitive headers are written as
// redact.Redacted, and a password in the URL as url.URL.Redacted writes
// it, so the maps and URL the proxy gave are never copied or changed.

const (
	flagUTC = 1 << iota // Start was in UTC (else in time.Local)
	flagIntercepted
	flagTunnel
	flagURLParts    // the URL is kept in its parts (from RawURL)
	flagRequestBody // a request body prefix follows (it may be empty)
	flagResponseBody
)

const (
	urlForceQuery = 1 << iota
	urlOmitHost
	urlUser         // a user name follows
	urlUserPassword // the user had a password, written redacted
)

// redactedPassword is what url.URL.Redacted writes for a password.
const redactedPassword = "xxxxx"

// packBuffers are the scratch buffers flows are packed in before they are
// copied to a slice of their exact length; one grown past maxPackBuffer
// (two body prefixes of DefaultMaxBodyBytes and their headers fit) is let go.
const maxPackBuffer = 256 << 10

var packBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// pack returns f packed, redacted, with its body prefixes cut to maxBody
// (or left out when bodies is false) and its bodies' content types filled
// from its headers when empty. It allocates the slice it returns and
// nothing else, but when a URL string holds a password.
func pack(f *Flow, maxBody int, bodies bool) []byte {
	bp := packBuffers.Get().(*[]byte)
	b := appendFlow((*bp)[:0], f, maxBody, bodies)
	out := make([]byte, len(b))
	copy(out, b)
	if cap(b) <= maxPackBuffer {
		*bp = b
		packBuffers.Put(bp)
	}
	return out
}

// appendFlow appends f packed to b (see pack).
func appendFlow(b []byte, f *Flow, maxBody int, bodies bool) []byte {
	var flags uint64
	if f.Start.Location() == time.UTC {
		flags |= flagUTC
	}
	if f.Intercepted {
		flags |= flagIntercepted
	}
	if f.Tunnel {
		flags |= flagTunnel
	}
	if f.URL == "" && f.RawURL != nil {
		flags |= flagURLParts
	}
	if bodies && f.RequestBody.Prefix != nil {
		flags |= flagRequestBody
	}
	if bodies && f.ResponseBody.Prefix != nil {
		flags |= flagResponseBody
	}
	b = binary.AppendUvarint(b, flags)
	var start int64
	if !f.Start.IsZero() {
		start = f.Start.UnixNano()
	}
	b = binary.AppendVarint(b, start)
	b = binary.AppendVarint(b, int64(f.Status))
	b = binary.AppendVarint(b, f.BytesIn)
	b = binary.AppendVarint(b, f.BytesOut)
	t := f.Timings
	for _, d := range [...]time.Duration{t.DNS, t.Connect, t.TLS, t.FirstByte, t.Total} {
		b = binary.AppendVarint(b, int64(d))
	}
	for _, s := range [...]string{f.Method, f.Host, f.User, f.ErrorKind, f.Proto, f.Client} {
		b = appendString(b, s)
	}
	b = appendUpstream(b, f)
	b = appendString(b, f.ErrorReason)
	b = appendString(b, cmpOr(f.RequestBody.ContentType, headerValue(f.RequestHeader, "Content-Type")))
	b = appendString(b, cmpOr(f.ResponseBody.ContentType, headerValue(f.ResponseHeader, "Content-Type")))
	if flags&flagURLParts != 0 {
		b = appendURLParts(b, f.RawURL)
	} else {
		b = appendString(b, redactURLString(f.URL, f.Tunnel))
	}
	b = appendHeader(b, f.RequestHeader)
	b = appendHeader(b, f.ResponseHeader)
	if flags&flagRequestBody != 0 {
		b = appendBytes(b, clip(f.RequestBody.Prefix, maxBody))
	}
	if flags&flagResponseBody != 0 {
		b = appendBytes(b, clip(f.ResponseBody.Prefix, maxBody))
	}
	return b
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clip is p cut to max bytes.
func clip(p []byte, max int) []byte {
	if len(p) > max {
		return p[:max]
	}
	return p
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// appendUpstream appends the upstream address as text: Upstream, or
// UpstreamAddr's String, written without making it for a TCP address.
func appendUpstream(b []byte, f *Flow) []byte {
	if f.Upstream != "" || f.UpstreamAddr == nil {
		return appendString(b, f.Upstream)
	}
	a, ok := f.UpstreamAddr.(*net.TCPAddr)
	if !ok || a == nil {
		return appendString(b, f.UpstreamAddr.String())
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return appendString(b, a.String())
	}
	ap := netip.AddrPortFrom(ip.Unmap().WithZone(a.Zone), uint16(a.Port))
	var buf [64]byte
	return appendBytes(b, ap.AppendTo(buf[:0]))
}

// appendURLParts appends the parts of u from which unpackURL makes it
// again, its password replaced.
func appendURLParts(b []byte, u *url.URL) []byte {
	for _, s := range [...]string{u.Scheme, u.Opaque, u.Host, u.Path, u.RawPath, u.RawQuery, u.Fragment, u.RawFragment} {
		b = appendString(b, s)
	}
	var bits byte
	if u.ForceQuery {
		bits |= urlForceQuery
	}
	if u.OmitHost {
		bits |= urlOmitHost
	}
	if u.User != nil {
		bits |= urlUser
		if _, ok := u.User.Password(); ok {
			bits |= urlUserPassword
		}
	}
	b = append(b, bits)
	if u.User != nil {
		b = appendString(b, u.User.Username())
	}
	return b
}

// redactURLString is the URL s with a password replaced (not for a
// tunnel's authority); it allocates only when s holds one.
func redactURLString(s string, tunnel bool) string {
	if tunnel || !strings.Contains(s, "@") {
		return s
	}
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return s
}

// appendHeader appends h with the values of sensitive fields redacted.
func appendHeader(b []byte, h http.Header) []byte {
	values := 0
	for _, vs := range h {
		values += len(vs)
	}
	b = binary.AppendUvarint(b, uint64(len(h)))
	b = binary.AppendUvarint(b, uint64(values))
	for name, vs := range h {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		secret := sensitive(name)
		for _, v := range vs {
			if secret {
				v = redact.Redacted
			}
			b = appendString(b, v)
		}
	}
	return b
}

// unpacker reads a packed flow. A malformed one (which pack never makes)
// reads as zeros and empty strings from where it goes wrong, never a panic.
type unpacker struct {
	b   []byte // what is left
	s   string // the whole, as a string, for the strings to share
	off int    // where b starts in s
	bad bool
}

func (u *unpacker) uvarint() uint64 {
	v, n := binary.Uvarint(u.b)
	if n <= 0 {
		u.bad, u.b = true, nil
		return 0
	}
	u.b, u.off = u.b[n:], u.off+n
	return v
}

func (u *unpacker) varint() int64 {
	v, n := binary.Varint(u.b)
	if n <= 0 {
		u.bad, u.b = true, nil
		return 0
	}
	u.b, u.off = u.b[n:], u.off+n
	return v
}

// span returns where the next length-prefixed field is in s.
func (u *unpacker) span() (i, j int) {
	n := u.uvarint()
	if n > uint64(len(u.b)) {
		u.bad, u.b = true, nil
		return 0, 0
	}
	i, j = u.off, u.off+int(n)
	u.b, u.off = u.b[n:], j
	return i, j
}

func (u *unpacker) str() string {
	i, j := u.span()
	return u.s[i:j]
}

func (u *unpacker) byte() byte {
	if len(u.b) == 0 {
		u.bad = true
		return 0
	}
	c := u.b[0]
	u.b, u.off = u.b[1:], u.off+1
	return c
}

// unpack returns the flow that p packs, with the given ID. Its strings
// share one copy of p; its body prefixes are p's own bytes, read-only.
func unpack(id uint64, p []byte) *Flow {
	u := &unpacker{b: p, s: string(p)}
	f := &Flow{ID: id}
	flags := u.uvarint()
	if start := u.varint(); start != 0 {
		f.Start = time.Unix(0, start)
		if flags&flagUTC != 0 {
			f.Start = f.Start.UTC()
		}
	}
	f.Intercepted, f.Tunnel = flags&flagIntercepted != 0, flags&flagTunnel != 0
	f.Status = int(u.varint())
	f.BytesIn, f.BytesOut = u.varint(), u.varint()
	f.Timings = Timings{
		DNS: time.Duration(u.varint()), Connect: time.Duration(u.varint()), TLS: time.Duration(u.varint()),
		FirstByte: time.Duration(u.varint()), Total: time.Duration(u.varint()),
	}
	f.Method, f.Host, f.User, f.ErrorKind, f.Proto, f.Client = u.str(), u.str(), u.str(), u.str(), u.str(), u.str()
	f.Upstream, f.ErrorReason = u.str(), u.str()
	f.RequestBody.ContentType, f.ResponseBody.ContentType = u.str(), u.str()
	if flags&flagURLParts != 0 {
		f.RawURL = u.url()
	} else {
		f.URL = u.str()
	}
	f.RequestHeader, f.ResponseHeader = u.header(), u.header()
	if flags&flagRequestBody != 0 {
		i, j := u.span()
		f.RequestBody.Prefix = p[i:j:j]
	}
	if flags&flagResponseBody != 0 {
		i, j := u.span()
		f.ResponseBody.Prefix = p[i:j:j]
	}
	return f
}

// url reads the parts appendURLParts wrote.
func (u *unpacker) url() *url.URL {
	v := &url.URL{Scheme: u.str(), Opaque: u.str(), Host: u.str(), Path: u.str(), RawPath: u.str(),
		RawQuery: u.str(), Fragment: u.str(), RawFragment: u.str()}
	bits := u.byte()
	v.ForceQuery, v.OmitHost = bits&urlForceQuery != 0, bits&urlOmitHost != 0
	if bits&urlUser != 0 {
		if name := u.str(); bits&urlUserPassword != 0 {
			v.User = url.UserPassword(name, redactedPassword)
		} else {
			v.User = url.User(name)
		}
	}
	return v
}

// header reads what appendHeader wrote: nil for a header with no fields.
func (u *unpacker) header() http.Header {
	names, values := u.uvarint(), u.uvarint()
	if names == 0 || u.bad || names > uint64(len(u.b)) || values > uint64(len(u.b)) {
		return nil
	}
	h := make(http.Header, names)
	all := make([]string, values)
	for range names {
		name := u.str()
		n := u.uvarint()
		if n > uint64(len(all)) {
			u.bad = true
			return h
		}
		vs := all[:n:n]
		all = all[n:]
		for i := range vs {
			vs[i] = u.str()
		}
		h[name] = vs
	}
	return h
}
