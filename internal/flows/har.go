package flows

import (
	"bufio"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) as WriteHAR
// writes it. Field order follows the specification.
type (
	harEntry struct {
		StartedDateTime string      `json:"startedDateTime"`
		Time            float64     `json:"time"`
		Request         harRequest  `json:"request"`
		Response        harResponse `json:"response"`
		Cache           struct{}    `json:"cache"`
		Timings         harTimings  `json:"timings"`
		ServerIPAddress string      `json:"serverIPAddress,omitempty"`
		Comment         string      `json:"comment,omitempty"`
	}
	harRequest struct {
		Method      string         `json:"method"`
		URL         string         `json:"url"`
		HTTPVersion string         `json:"httpVersion"`
		Cookies     []struct{}     `json:"cookies"`
		Headers     []harNameValue `json:"headers"`
		QueryString []harNameValue `json:"queryString"`
		PostData    *harPostData   `json:"postData,omitempty"`
		HeadersSize int            `json:"headersSize"`
		BodySize    int64          `json:"bodySize"`
	}
	harResponse struct {
		Status      int            `json:"status"`
		StatusText  string         `json:"statusText"`
		HTTPVersion string         `json:"httpVersion"`
		Cookies     []struct{}     `json:"cookies"`
		Headers     []harNameValue `json:"headers"`
		Content     harContent     `json:"content"`
		RedirectURL string         `json:"redirectURL"`
		HeadersSize int            `json:"headersSize"`
		BodySize    int64          `json:"bodySize"`
		Comment     string         `json:"comment,omitempty"`
		Error       string         `json:"_error,omitempty"` // as Chromium's exports
	}
	harNameValue struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	harPostData struct {
		MimeType string `json:"mimeType"`
		Text     string `json:"text"`
		Comment  string `json:"comment,omitempty"`
	}
	harContent struct {
		Size     int64  `json:"size"`
		MimeType string `json:"mimeType"`
		Text     string `json:"text,omitempty"`
		Encoding string `json:"encoding,omitempty"`
		Comment  string `json:"comment,omitempty"`
	}
	harTimings struct {
		Blocked float64 `json:"blocked"`
		DNS     float64 `json:"dns"`
		Connect float64 `json:"connect"`
		Send    float64 `json:"send"`
		Wait    float64 `json:"wait"`
		Receive float64 `json:"receive"`
		SSL     float64 `json:"ssl"`
	}
)

// harTimeFormat is RFC 3339 with milliseconds, as HAR's ISO 8601 dates.
const harTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// WriteHAR writes flows to w as a HAR 1.2 log, oldest first whatever
// their order in flows, one entry at a time (so that a large ring is never
// encoded whole in memory). Headers are written as the flows hold them,
// redacted; cookies are left out (they are redacted anyway). Bodies are
// the captured prefixes: response text that is not UTF-8 is base64 with
// encoding "base64"; a request prefix that is not text is base64 too, and
// its comment says so (postData has no encoding field). Timings not
// measured are -1, as HAR asks; ssl is included in connect, as HAR
// defines. Entries of intercepted, tunnelled or failed flows carry a
// comment saying so.
func WriteHAR(w io.Writer, flows []*Flow) error {
	sorted := slices.Clone(flows)
	slices.SortStableFunc(sorted, func(a, b *Flow) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.ID, b.ID))
	})
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.Write(harHead())
	for i, f := range sorted {
		if err := writeHAREntry(bw, f, i == 0); err != nil {
			return err
		}
	}
	bw.WriteString(harTail)
	return bw.Flush()
}

// harHead is a HAR log up to the first entry.
func harHead() []byte {
	creator, _ := json.Marshal(struct { // strings only: cannot fail
		Name    string `json:"name"`
		Version string `json:"version"`
	}{"fwdproxy", moduleVersion()})
	return slices.Concat([]byte(`{"log":{"version":"1.2","creator":`), creator, []byte(`,"entries":[`))
}

// harTail ends a HAR log after its entries.
const harTail = "\n]}}\n"

// writeHAREntry writes f as an entry, after a comma unless it is the first.
func writeHAREntry(w io.Writer, f *Flow, first bool) error {
	b, err := json.Marshal(harEntryOf(f))
	if err != nil {
		return err
	}
	sep := ",\n"
	if first {
		sep = "\n"
	}
	_, err = w.Write(append([]byte(sep), b...))
	return err
}

// moduleVersion is the version of this module in the running binary, or
// "devel".
func moduleVersion() string {
	const path = "github.com/fwdproxy/fwdproxy"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if bi.Main.Path == path && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "devel"
}

func harEntryOf(f *Flow) harEntry {
	e := harEntry{
		StartedDateTime: f.Start.Format(harTimeFormat),
		Request: harRequest{
			Method:      f.Method,
			URL:         harURL(f),
			HTTPVersion: cmp.Or(f.Proto, "HTTP/1.1"),
			Cookies:     []struct{}{},
			Headers:     harHeaders(f.RequestHeader),
			QueryString: harQuery(f.url()),
			HeadersSize: -1,
			BodySize:    f.BytesIn,
		},
		Response: harResponse{
			Status:      f.Status,
			StatusText:  http.StatusText(f.Status),
			HTTPVersion: cmp.Or(f.Proto, "HTTP/1.1"),
			Cookies:     []struct{}{},
			Headers:     harHeaders(f.ResponseHeader),
			RedirectURL: headerValue(f.ResponseHeader, "Location"),
			HeadersSize: -1,
			BodySize:    f.BytesOut,
		},
		Timings: harTimingsOf(f.Timings),
	}
	e.Time = sumTimings(e.Timings)
	if f.Tunnel {
		e.Request.BodySize, e.Response.BodySize = 0, 0
	}
	if f.RequestBody.Prefix != nil && f.BytesIn > 0 {
		e.Request.PostData = harPostDataOf(f)
	}
	e.Response.Content = harContentOf(f)
	upstream := f.upstream()
	if host, _, err := net.SplitHostPort(upstream); err == nil && net.ParseIP(host) != nil {
		e.ServerIPAddress = host
	} else if net.ParseIP(upstream) != nil {
		e.ServerIPAddress = upstream
	}
	var notes []string
	if f.Intercepted {
		notes = append(notes, "intercepted: decrypted from a CONNECT tunnel")
	}
	if f.Tunnel {
		notes = append(notes, "tunnel: "+strconv.FormatInt(f.BytesIn, 10)+" bytes sent, "+
			strconv.FormatInt(f.BytesOut, 10)+" bytes received, not inspected")
	}
	if f.ErrorKind != "" {
		msg := "error " + f.ErrorKind
		if f.ErrorReason != "" {
			msg += ": " + f.ErrorReason
		}
		notes = append(notes, msg)
		e.Response.Error = f.ErrorKind
	}
	if f.User != "" {
		notes = append(notes, "user "+f.User)
	}
	e.Comment = strings.Join(notes, "; ")
	return e
}

// harHeaders lists h sorted by name, each value its own entry.
func harHeaders(h http.Header) []harNameValue {
	out := make([]harNameValue, 0, len(h))
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			out = append(out, harNameValue{Name: name, Value: v})
		}
	}
	return out
}

// harQuery lists the query parameters of rawURL in their order.
// harURL is the flow's URL as HAR wants it, absolute: a tunnel's target,
// host:port, becomes tcp://host:port, since its bytes were not read and
// no other scheme can be told.
func harURL(f *Flow) string {
	u := f.url()
	if f.Method == http.MethodConnect && !strings.Contains(u, "://") {
		return "tcp://" + u
	}
	return u
}

func harQuery(rawURL string) []harNameValue {
	out := []harNameValue{}
	_, query, ok := strings.Cut(rawURL, "?")
	if !ok {
		return out
	}
	query, _, _ = strings.Cut(query, "#")
	for part := range strings.SplitSeq(query, "&") {
		if part == "" {
			continue
		}
		name, value, _ := strings.Cut(part, "=")
		out = append(out, harNameValue{Name: unescape(name), Value: unescape(value)})
	}
	return out
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// ms converts d to milliseconds with microsecond precision.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// harTimingsOf maps the proxy's phases onto HAR's: connect covers the TCP
// connect and the TLS handshake (ssl is its TLS part), wait runs to the
// first byte after the connection was made, receive from the first byte to
// the end; with no first byte measured, wait is the whole rest.
func harTimingsOf(t Timings) harTimings {
	h := harTimings{Blocked: -1, DNS: -1, Connect: -1, SSL: -1}
	if t.DNS > 0 {
		h.DNS = ms(t.DNS)
	}
	if t.Connect > 0 || t.TLS > 0 {
		h.Connect = ms(t.Connect + t.TLS)
	}
	if t.TLS > 0 {
		h.SSL = ms(t.TLS)
	}
	setup := max(t.DNS, 0) + max(t.Connect, 0) + max(t.TLS, 0)
	if t.FirstByte > 0 {
		h.Wait = ms(max(t.FirstByte-setup, 0))
		h.Receive = ms(max(t.Total-t.FirstByte, 0))
	} else {
		h.Wait = ms(max(t.Total-setup, 0))
	}
	return h
}

// sumTimings is the entry's time: the sum of its timings but -1s and ssl
// (included in connect), as HAR defines it.
func sumTimings(h harTimings) float64 {
	sum := h.Send + h.Wait + h.Receive
	for _, v := range [...]float64{h.Blocked, h.DNS, h.Connect} {
		if v > 0 {
			sum += v
		}
	}
	return sum
}

func harPostDataOf(f *Flow) *harPostData {
	b := f.RequestBody
	p := &harPostData{MimeType: b.ContentType}
	data, _, note, ct := decode(b.Prefix, f.RequestHeader, b.ContentType)
	var notes []string
	if note != "" {
		notes = append(notes, note)
	}
	var isBase64 bool
	if p.Text, isBase64 = harText(ct, data, int64(len(b.Prefix)) < f.BytesIn); isBase64 {
		notes = append(notes, "text is base64")
	}
	if int64(len(b.Prefix)) < f.BytesIn {
		notes = append(notes, "prefix of "+strconv.Itoa(len(b.Prefix))+" of "+strconv.FormatInt(f.BytesIn, 10)+" bytes")
	}
	p.Comment = strings.Join(notes, "; ")
	return p
}

func harContentOf(f *Flow) harContent {
	b := f.ResponseBody
	c := harContent{Size: max(f.BytesOut, 0), MimeType: b.ContentType}
	if f.Tunnel {
		c.Size = 0
	}
	if len(b.Prefix) == 0 {
		if f.BytesOut > 0 && !f.Tunnel {
			c.Comment = "body not captured"
		}
		return c
	}
	data, enc, note, ct := decode(b.Prefix, f.ResponseHeader, b.ContentType)
	var notes []string
	if note != "" {
		notes = append(notes, note)
	}
	if enc != "" && int64(len(b.Prefix)) >= f.BytesOut {
		c.Size = int64(len(data)) // the whole body, decoded
	}
	var isBase64 bool
	if c.Text, isBase64 = harText(ct, data, int64(len(b.Prefix)) < f.BytesOut); isBase64 {
		c.Encoding = "base64"
	}
	if int64(len(b.Prefix)) < f.BytesOut {
		notes = append(notes, "text is a prefix: "+strconv.Itoa(len(b.Prefix))+" of "+strconv.FormatInt(f.BytesOut, 10)+" bytes")
	}
	c.Comment = strings.Join(notes, "; ")
	return c
}

// harText is a body for HAR: its text when it is text in valid UTF-8 (but
// for a rune that the end of a truncated prefix cut), else its base64.
func harText(contentType string, data []byte, truncated bool) (text string, isBase64 bool) {
	if kind := classify(contentType, data); kind == KindText || kind == KindJSON {
		t := data
		if truncated {
			t = trimCutRune(t)
		}
		if utf8.Valid(t) {
			return string(t), false
		}
	}
	return base64.StdEncoding.EncodeToString(data), true
}
