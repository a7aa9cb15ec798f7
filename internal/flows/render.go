package flows

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kinds of [Rendered] bodies.
const (
	KindNone   = "none"   // no body, or none captured
	KindText   = "text"   // Text holds it
	KindJSON   = "json"   // Text holds it, indented when it parsed whole
	KindImage  = "image"  // DataURL holds it
	KindBinary = "binary" // Hex holds a hex dump of it
)

// Limits of rendering.
const (
	// maxDecoded caps the bytes decoded from a compressed prefix.
	maxDecoded = 1 << 20
	// maxHexDump caps the bytes shown as a hex dump.
	maxHexDump = 16 << 10
)

// Rendered is a captured body prepared for display in the inspector.
// Rendering happens on the server, here, so that the page only places
// text, and so that it is tested with the rest of the package: the page
// puts Text and Hex in <pre> elements as text and DataURL in an <img>.
type Rendered struct {
	// Kind is one of KindNone, KindText, KindJSON, KindImage, KindBinary.
	Kind string `json:"kind"`
	// ContentType is the body's Content-Type, as sent.
	ContentType string `json:"content_type,omitempty"`
	// Encoding is the Content-Encoding the prefix was decoded from, when
	// it was ("gzip", "deflate").
	Encoding string `json:"encoding,omitempty"`
	// Size is the length of the whole body as it passed (encoded).
	Size int64 `json:"size"`
	// Captured is the length of the captured prefix (encoded).
	Captured int `json:"captured"`
	// Truncated is set when the prefix is shorter than the body.
	Truncated bool `json:"truncated"`
	// Text is the body as text, for KindText and KindJSON.
	Text string `json:"text,omitempty"`
	// DataURL is the body as a data: URL, for KindImage.
	DataURL string `json:"data_url,omitempty"`
	// Hex is a hex dump (as hexdump -C) of the body, for KindBinary.
	Hex string `json:"hex,omitempty"`
	// Note explains what is shown when it is not simply the body.
	Note string `json:"note,omitempty"`
}

// Render prepares a body for display: b is the captured body, h the
// headers of its message (for Content-Encoding), size the length of the
// whole body. A gzip or deflate prefix is decoded first. Images (but SVG,
// which is shown as text) become data: URLs when their bytes are an image
// as sniffed, JSON is indented when it parses whole, text is text (invalid
// UTF-8 replaced), and anything else is a hex dump of its first 16 KiB.
func Render(b Body, h http.Header, size int64) Rendered {
	r := Rendered{
		ContentType: b.ContentType,
		Size:        size,
		Captured:    len(b.Prefix),
		Truncated:   int64(len(b.Prefix)) < size,
	}
	if len(b.Prefix) == 0 {
		r.Kind = KindNone
		switch {
		case size > 0 && b.Prefix == nil:
			r.Note = "body not captured (" + strconv.FormatInt(size, 10) + " bytes)"
		case size > 0:
			r.Note = "nothing captured of a body of " + strconv.FormatInt(size, 10) + " bytes"
		}
		return r
	}
	data, enc, note, ct := decode(b.Prefix, h, b.ContentType)
	r.Encoding, r.Note = enc, note
	switch classify(ct, data) {
	case KindImage:
		r.Kind = KindImage
		r.DataURL = "data:" + http.DetectContentType(data) + ";base64," + base64.StdEncoding.EncodeToString(data)
		if r.Truncated {
			r.Note = join(r.Note, "prefix of the image only: it may show in part")
		}
	case KindJSON:
		r.Kind = KindJSON
		var buf bytes.Buffer
		if json.Indent(&buf, data, "", "  ") == nil {
			r.Text = buf.String()
		} else {
			r.Text = toValidUTF8(data, r.Truncated)
		}
	case KindText:
		r.Kind = KindText
		r.Text = toValidUTF8(data, r.Truncated)
	default:
		r.Kind = KindBinary
		shown := data[:min(len(data), maxHexDump)]
		r.Hex = hex.Dump(shown)
		if len(shown) < len(data) {
			r.Note = join(r.Note, "hex dump of the first "+strconv.Itoa(len(shown))+" bytes")
		}
	}
	return r
}

// decode undoes a gzip or deflate Content-Encoding of a prefix as far as
// the prefix goes, up to maxDecoded bytes. It returns p itself when there
// is nothing to undo or undoing fails, with a note saying why; then
// contentType is "" if p is still encoded (its declared type does not
// describe its bytes), else the declared one.
func decode(p []byte, h http.Header, declared string) (data []byte, encoding, note, contentType string) {
	data, encoding, note, encoded := decodeBody(p, h)
	if encoded {
		return data, encoding, note, ""
	}
	return data, encoding, note, declared
}

// decodeBody is decode; encoded reports that data is still encoded.
func decodeBody(p []byte, h http.Header) (data []byte, encoding, note string, encoded bool) {
	ce := strings.ToLower(strings.TrimSpace(headerValue(h, "Content-Encoding")))
	var zr io.Reader
	var err error
	switch ce {
	case "", "identity":
		return p, "", "", false
	case "gzip", "x-gzip":
		zr, err = gzip.NewReader(bytes.NewReader(p))
	case "deflate":
		// RFC 9110 deflate is zlib-wrapped; some servers send raw deflate.
		if zr, err = zlib.NewReader(bytes.NewReader(p)); err != nil {
			zr, err = flate.NewReader(bytes.NewReader(p)), nil
		}
	default:
		return p, "", "Content-Encoding " + ce + " is not decoded", true
	}
	if err != nil {
		return p, "", "could not decode " + ce + ": " + err.Error(), true
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxDecoded))
	if err != nil && err != io.ErrUnexpectedEOF || len(out) == 0 && err != nil {
		return p, "", "could not decode " + ce + ": " + err.Error(), true
	}
	note = "decoded from " + ce
	if err == io.ErrUnexpectedEOF {
		note += " (a prefix)"
	}
	return out, ce, note, false
}

// classify decides how to show data given its declared content type.
func classify(contentType string, data []byte) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.Split(contentType, ";")[0]))
	}
	sniffed := http.DetectContentType(data)
	switch {
	case strings.HasPrefix(sniffed, "image/") && mt != "image/svg+xml" && (mt == "" || strings.HasPrefix(mt, "image/") || mt == "application/octet-stream"):
		return KindImage
	case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/x-ndjson":
		return KindJSON
	case isTextType(mt):
		return KindText
	case mt == "" || mt == "application/octet-stream":
		if looksLikeText(data) {
			if json.Valid(data) && (data[0] == '{' || data[0] == '[') {
				return KindJSON
			}
			return KindText
		}
	}
	return KindBinary
}

func isTextType(mt string) bool {
	switch mt {
	case "application/xml", "application/javascript", "application/ecmascript", "application/x-www-form-urlencoded",
		"application/graphql", "application/x-yaml", "application/yaml", "application/toml", "image/svg+xml":
		return true
	}
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+xml")
}

// looksLikeText reports whether data is UTF-8 (but for a rune cut at the
// end) with no control characters but tab, newline, carriage return and
// form feed.
func looksLikeText(data []byte) bool {
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return len(data)-i < utf8.UTFMax && !utf8.FullRune(data[i:])
		}
		i += n
	}
	return true
}

// toValidUTF8 returns data as a string with invalid UTF-8 replaced, after
// dropping a rune that the end of a truncated prefix cut in two.
func toValidUTF8(data []byte, truncated bool) string {
	if truncated {
		data = trimCutRune(data)
	}
	return strings.ToValidUTF8(string(data), "\uFFFD")
}

// trimCutRune drops the incomplete rune at the end of data, if any.
func trimCutRune(data []byte) []byte {
	for k := 1; k < utf8.UTFMax && k <= len(data); k++ {
		if tail := data[len(data)-k:]; utf8.RuneStart(tail[0]) {
			if !utf8.FullRune(tail) {
				return data[:len(data)-k]
			}
			break
		}
	}
	return data
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
