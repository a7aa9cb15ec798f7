package flows

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strings"
	"testing"
)

func pngBytes(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.RGBA{255, 0, 0, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(t testing.TB, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestRender(t *testing.T) {
	pngData := pngBytes(t)
	gz := gzipped(t, strings.Repeat("hello gzip ", 200))
	var zl bytes.Buffer
	zw := zlib.NewWriter(&zl)
	zw.Write([]byte(`{"deflated":true}`))
	zw.Close()
	enc := func(e string) http.Header { return http.Header{"Content-Encoding": {e}} }
	for _, tc := range []struct {
		name      string
		ct        string
		h         http.Header
		prefix    []byte
		size      int64
		kind      string
		check     func(Rendered) bool
		truncated bool
	}{
		{name: "nothing", kind: KindNone, check: func(r Rendered) bool { return r.Note == "" }},
		{name: "not captured", prefix: nil, size: 10, kind: KindNone, truncated: true,
			check: func(r Rendered) bool { return strings.Contains(r.Note, "not captured") }},
		{name: "text", ct: "text/plain", prefix: []byte("héllo\nworld"), size: 12, kind: KindText,
			check: func(r Rendered) bool { return r.Text == "héllo\nworld" }},
		{name: "json indented", ct: "application/json; charset=utf-8", prefix: []byte(`{"a":[1,2]}`), size: 11, kind: KindJSON,
			check: func(r Rendered) bool { return r.Text == "{\n  \"a\": [\n    1,\n    2\n  ]\n}" }},
		{name: "problem+json", ct: "application/problem+json", prefix: []byte(`{"t":1}`), size: 7, kind: KindJSON},
		{name: "json cut", ct: "application/json", prefix: []byte(`{"a":"b`), size: 100, kind: KindJSON, truncated: true,
			check: func(r Rendered) bool { return r.Text == `{"a":"b` }},
		{name: "sniffed json", prefix: []byte(`[1, 2]`), size: 6, kind: KindJSON},
		{name: "sniffed text", prefix: []byte("plain words"), size: 11, kind: KindText},
		{name: "rune cut at the end", ct: "text/plain", prefix: []byte("é")[:1], size: 2, kind: KindText, truncated: true,
			check: func(r Rendered) bool { return r.Text == "" }},
		{name: "latin-1 text", ct: "text/html; charset=iso-8859-1", prefix: []byte{'a', 0xe9, 'b'}, size: 3, kind: KindText,
			check: func(r Rendered) bool { return r.Text == "a\uFFFDb" }},
		{name: "png", ct: "image/png", prefix: pngData, size: int64(len(pngData)), kind: KindImage,
			check: func(r Rendered) bool {
				return r.DataURL == "data:image/png;base64,"+base64.StdEncoding.EncodeToString(pngData)
			}},
		{name: "png without a type", prefix: pngData, size: int64(len(pngData)), kind: KindImage},
		{name: "image type, not an image", ct: "image/png", prefix: []byte("not a png"), size: 9, kind: KindBinary},
		{name: "svg is text", ct: "image/svg+xml", prefix: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), size: 41, kind: KindText},
		{name: "binary", ct: "application/octet-stream", prefix: []byte{0, 1, 2, 0xff, 'A'}, size: 5, kind: KindBinary,
			check: func(r Rendered) bool {
				return strings.HasPrefix(r.Hex, "00000000  00 01 02 ff 41") && strings.Contains(r.Hex, "|....A|")
			}},
		{name: "large binary cut", ct: "application/x-thing", prefix: bytes.Repeat([]byte{0}, 20<<10), size: 20 << 10, kind: KindBinary,
			check: func(r Rendered) bool {
				return strings.Count(r.Hex, "\n") == maxHexDump/16 && strings.Contains(r.Note, "first 16384 bytes")
			}},
		{name: "gzip", ct: "text/plain", h: enc("gzip"), prefix: gz, size: int64(len(gz)), kind: KindText,
			check: func(r Rendered) bool {
				return r.Encoding == "gzip" && r.Text == strings.Repeat("hello gzip ", 200) && r.Note == "decoded from gzip"
			}},
		{name: "gzip prefix", ct: "text/plain", h: enc("gzip"), prefix: gz[:len(gz)-10], size: int64(len(gz)), kind: KindText, truncated: true,
			check: func(r Rendered) bool {
				return r.Encoding == "gzip" && strings.HasPrefix(r.Text, "hello gzip hello") && strings.Contains(r.Note, "prefix")
			}},
		{name: "deflate", ct: "application/json", h: enc("deflate"), prefix: zl.Bytes(), size: int64(zl.Len()), kind: KindJSON,
			check: func(r Rendered) bool { return r.Encoding == "deflate" && strings.Contains(r.Text, `"deflated": true`) }},
		{name: "brotli left", ct: "text/plain", h: enc("br"), prefix: []byte{0x1b, 0x03, 0x00}, size: 3, kind: KindBinary,
			check: func(r Rendered) bool { return strings.Contains(r.Note, "br is not decoded") }},
		{name: "bad gzip", ct: "text/plain", h: enc("gzip"), prefix: []byte("not gzip"), size: 8, kind: KindText,
			check: func(r Rendered) bool {
				return strings.Contains(r.Note, "could not decode gzip") && r.Text == "not gzip"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Render(Body{ContentType: tc.ct, Prefix: tc.prefix}, tc.h, tc.size)
			if r.Kind != tc.kind {
				t.Fatalf("Kind = %q, want %q (%+v)", r.Kind, tc.kind, r)
			}
			if r.Truncated != tc.truncated || r.Captured != len(tc.prefix) || r.Size != tc.size || r.ContentType != tc.ct {
				t.Errorf("sizes: %+v", r)
			}
			if tc.check != nil && !tc.check(r) {
				t.Errorf("unexpected rendering: %+v", r)
			}
		})
	}
}
