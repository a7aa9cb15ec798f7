package h1

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"golang.org/x/net/http/httpguts"
)

// Short parsers for the request and response heads a forward proxy sees
// most: an HTTP/1.1 GET of an http:// URL with a handful of plain fields,
// and a response to it framed by one Content-Length. They accept only heads
// they read exactly as net/http reads them (h1parse_test.go compares the two
// on fuzzed input) and return nil for anything else, which then goes to
// net/http's parser as before: http.ReadRequest by way of parseRequest, and
// http.ReadResponse. What they save is allocation: one string holds the
// whole head, the start line's parts and every field value are slices of
// it, and one slice backs the values, where net/http allocates per line and
// per field.

// fastRequest parses the header block head of a client request (request
// line through the empty line, as readHead returns it) into the request
// parseRequest would return, for a bodyless absolute-form http:// request
// without fields that change its framing or handling (Content-Length,
// Transfer-Encoding, Connection, Expect, Upgrade, HTTP2-Settings, Trailer,
// Pragma). It returns nil when the request has another shape.
func fastRequest(head []byte) *http.Request {
	i := indexCRLF(head)
	if i < 0 {
		return nil
	}
	// Check the request line before copying anything: most of what fails
	// here fails on the bytes.
	line := head[:i]
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return nil
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 || string(rest[sp2+1:]) != "HTTP/1.1" || !bytes.HasPrefix(rest, []byte("http://")) {
		return nil // origin-form and CONNECT's authority-form among others
	}
	s := string(head)
	method := s[:sp]
	if !httpx.ValidToken(method) || method == http.MethodConnect {
		return nil
	}
	target := s[sp+1 : sp+1+sp2]
	u := fastURL(target)
	if u == nil {
		return nil
	}
	h, ok := fastFields(s[i+2:])
	if !ok {
		return nil
	}
	hosts := h["Host"]
	if len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) {
		return nil // none (a 400 from net/http), several, or a bad one
	}
	for _, k := range [...]string{"Content-Length", "Transfer-Encoding", "Connection", "Expect", "Upgrade", "Http2-Settings", "Trailer", "Pragma"} {
		if _, ok := h[k]; ok {
			return nil
		}
	}
	delete(h, "Host") // as http.ReadRequest does: the URL's host wins
	return &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       u.Host,
		RequestURI: target,
	}
}

// fastURL parses an absolute-form request target of the plainest kind,
// http://host[:port]/path[?query], with a host of letters, digits, dots and
// hyphens and a path that url.ParseRequestURI keeps as it is (no escapes,
// so no RawPath). It returns nil for any other target.
func fastURL(t string) *url.URL {
	const scheme = "http://"
	if len(t) <= len(scheme) || t[:len(scheme)] != scheme {
		return nil
	}
	rest := t[len(scheme):]
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return nil
	}
	host := rest[:slash]
	colon := -1
	for j := 0; j < len(host); j++ {
		c := host[j]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-':
			if colon >= 0 && (c < '0' || c > '9') {
				return nil // the port is digits only
			}
		case c == ':' && colon < 0:
			colon = j
		default:
			return nil
		}
	}
	if colon == 0 || colon == len(host)-1 {
		return nil // no name, or an empty port
	}
	path, query := rest[slash:], ""
	if q := strings.IndexByte(path, '?'); q >= 0 {
		path, query = path[:q], path[q+1:]
		if query == "" {
			return nil // url.URL.ForceQuery
		}
		for j := 0; j < len(query); j++ {
			if c := query[j]; c <= ' ' || c >= 0x7f || c == '#' {
				return nil
			}
		}
	}
	for j := 0; j < len(path); j++ {
		if !plainPathByte(path[j]) {
			return nil
		}
	}
	return &url.URL{Scheme: "http", Host: host, Path: path, RawQuery: query}
}

// plainPathByte reports whether url.URL keeps c in a path as it is: an
// unreserved character or one of the reserved ones not escaped in paths.
func plainPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~$&+,/:;=@", c) >= 0
}

// fastResponse parses the response head at the start of buf, when all of
// it is there, into the response http.ReadResponse would return for a
// request with the given method, for the common shape: HTTP/1.1, a final
// status other than 204 and 304, one Content-Length, and no
// Transfer-Encoding, Connection, Trailer or Pragma field; never for a
// response to HEAD. It returns the response (without its Body, which the
// caller sets), and the head's length; nil otherwise.
func fastResponse(buf []byte, method string) (*http.Response, int) {
	if method == http.MethodHead {
		return nil, 0
	}
	// "HTTP/1.1 200" then the end of the line or " reason".
	const proto = "HTTP/1.1 "
	if len(buf) < len(proto)+5 || string(buf[:len(proto)]) != proto {
		return nil, 0
	}
	d := buf[len(proto) : len(proto)+3]
	if d[0] < '2' || d[0] > '5' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9' {
		return nil, 0
	}
	code := int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0')
	if code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, 0
	}
	end := headerEnd(buf) // bare LF ends count there; fastFields then refuses the head
	i := indexCRLF(buf)
	if end < 0 || i < len(proto)+3 || i > len(proto)+3 && buf[len(proto)+3] != ' ' {
		return nil, 0
	}
	s := string(buf[:end])
	// The reason phrase holds what a field value may: visible characters,
	// blanks, obs-text, no other control character (httpguts' rule, which
	// is net/http's).
	if !httpguts.ValidHeaderFieldValue(s[len(proto)+3 : i]) {
		return nil, 0
	}
	h, ok := fastFields(s[i+2:])
	if !ok {
		return nil, 0
	}
	cl := h["Content-Length"]
	if len(cl) != 1 {
		return nil, 0
	}
	n, ok := parseDigits(cl[0])
	if !ok {
		return nil, 0
	}
	for _, k := range [...]string{"Transfer-Encoding", "Connection", "Trailer", "Pragma"} {
		if _, ok := h[k]; ok {
			return nil, 0
		}
	}
	return &http.Response{
		Status:        s[len(proto):i],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: n,
	}, end
}

// fastFields parses header fields, each "Name: value" ending in CRLF, up to
// and including the empty line that ends them and nothing after it, as
// textproto.Reader.ReadMIMEHeader would: names canonicalised, values
// without surrounding blanks. It reports false for anything
// ReadMIMEHeader would refuse or read differently: a bare LF, a name that is
// not a token (a folded line starts with a blank, so it is one), a control
// character in a value.
func fastFields(s string) (http.Header, bool) {
	n := strings.Count(s, "\n") - 1
	if n < 0 {
		return nil, false
	}
	h := make(http.Header, n)
	vals := make([]string, n)
	for s != "\r\n" {
		i := strings.IndexByte(s, '\n')
		if i < 1 || s[i-1] != '\r' {
			return nil, false
		}
		line := s[:i-1]
		s = s[i+1:]
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false
		}
		key, ok := canonicalFieldName(line[:colon])
		if !ok {
			return nil, false
		}
		v := line[colon+1:]
		if !httpguts.ValidHeaderFieldValue(v) {
			return nil, false
		}
		v = strings.Trim(v, " \t")
		if vv := h[key]; vv != nil {
			h[key] = append(vv, v)
		} else {
			vals[0] = v
			h[key], vals = vals[:1:1], vals[1:]
		}
	}
	return h, true
}

// canonicalFieldName returns textproto.CanonicalMIMEHeaderKey(k) for a token k:
// k itself when it is already canonical (no allocation), a common name, or
// a new string. It reports false when k is not a token.
func canonicalFieldName(k string) (string, bool) {
	canonical := true
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !httpx.TokenByte(c) {
			return "", false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if canonical {
		return k, true
	}
	var buf [64]byte
	b := buf[:0]
	if len(k) > len(buf) {
		b = make([]byte, 0, len(k))
	}
	upper = true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
		upper = c == '-'
	}
	if v, ok := commonKeys[string(b)]; ok {
		return v, true
	}
	return string(b), true
}

// commonKeys interns the canonical names of common fields, so a client that
// writes them in lower case costs no allocation for them.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Age", "Authorization", "Cache-Control", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expires", "Host",
		"If-Match", "If-Modified-Since", "If-None-Match", "Last-Modified", "Location",
		"Origin", "Proxy-Authorization", "Proxy-Connection", "Range", "Referer", "Server",
		"Set-Cookie", "User-Agent", "Vary", "Via", "X-Forwarded-For",
	} {
		m[k] = k
	}
	return m
}()

// parseDigits parses a Content-Length as net/http does once it has trimmed
// blanks (fastFields did): decimal digits only, below 1<<63.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// indexCRLF returns the index of the first CRLF in b, or -1 when the first
// line does not end in one.
func indexCRLF(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return -1
	}
	return i - 1
}

// headerEnd returns the length of the request line and header fields in b,
// up to and including the empty line that ends them, or -1 if b holds no
// empty line yet. Bare LF line ends count, as textproto accepts them.
func headerEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i
		}
	}
}
