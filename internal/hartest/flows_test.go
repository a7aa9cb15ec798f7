package hartest

import (
	"bytes"
	"compress/gzip"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/fwdproxy/fwdproxy/internal/flows"
)

// newFlow is a plain GET recorded at 2026-01-02 03:04:05 plus i ms.
func newFlow(i int) *flows.Flow {
	return &flows.Flow{
		Start:          time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Method:         http.MethodGet,
		URL:            "http://example.com/item/" + strconv.Itoa(i) + "?q=1",
		Host:           "example.com",
		Proto:          "HTTP/1.1",
		Status:         http.StatusOK,
		Client:         "127.0.0.1:50000",
		RequestHeader:  http.Header{"User-Agent": {"test"}, "Accept": {"*/*"}},
		ResponseHeader: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Timings:        flows.Timings{DNS: time.Millisecond, Connect: 2 * time.Millisecond, FirstByte: 10 * time.Millisecond, Total: 12 * time.Millisecond},
	}
}

// everyShape are flows of every shape the proxy records, in a ring (which
// redacts them), newest first as the ring gives them.
func everyShape(t *testing.T) []*flows.Flow {
	r := flows.NewRing(flows.Options{})
	get := newFlow(0)
	get.URL = "http://example.com/search?q=a%20b&lang=en&flag"
	get.Upstream = "93.184.215.14:80"
	get.ResponseBody.Prefix = []byte("hello")
	get.BytesOut = 5
	get.RequestHeader["Authorization"] = []string{"Bearer sekrit"}
	get.RequestHeader["Cookie"] = []string{"session=sekrit"}
	get.ResponseHeader["Set-Cookie"] = []string{"session=sekrit2"}
	r.Add(get)

	var img bytes.Buffer
	rgba := image.NewRGBA(image.Rect(0, 0, 4, 4))
	rgba.Set(1, 1, color.RGBA{255, 0, 0, 255})
	if err := png.Encode(&img, rgba); err != nil {
		t.Fatal(err)
	}
	post := newFlow(1)
	post.Method, post.Status = http.MethodPost, http.StatusCreated
	post.URL = "https://api.example.com/items"
	post.Upstream = "[2001:db8::1]:443"
	post.Intercepted, post.Proto = true, "HTTP/2.0"
	post.RequestHeader["Content-Type"] = []string{"application/json"}
	post.RequestBody = flows.Body{Prefix: []byte(`{"name":"x"}`)}
	post.BytesIn = 100 // a prefix
	post.ResponseHeader = http.Header{"Content-Type": {"image/png"}, "Location": {"/items/1"}}
	post.ResponseBody = flows.Body{Prefix: img.Bytes()}
	post.BytesOut = int64(img.Len())
	post.Timings = flows.Timings{DNS: 2 * time.Millisecond, Connect: 3 * time.Millisecond, TLS: 4 * time.Millisecond,
		FirstByte: 20 * time.Millisecond, Total: 25 * time.Millisecond}
	r.Add(post)

	upload := newFlow(2)
	upload.Method = http.MethodPut
	upload.RequestHeader["Content-Type"] = []string{"application/octet-stream"}
	upload.RequestBody = flows.Body{Prefix: []byte{0, 1, 2, 3}}
	upload.BytesIn = 4
	r.Add(upload)

	failed := newFlow(3)
	failed.Status, failed.ErrorKind, failed.ErrorReason = 0, "upstream_timeout", "upstream example.com:80 timed out"
	failed.ResponseHeader, failed.Timings = nil, flows.Timings{Total: 30 * time.Second}
	failed.Upstream = "origin.example.com:80" // a name: no serverIPAddress
	r.Add(failed)

	tunnel := &flows.Flow{Start: get.Start.Add(time.Second), Method: http.MethodConnect, URL: "example.com:443",
		Host: "example.com:443", Proto: "HTTP/1.1", Status: 200, Tunnel: true, BytesIn: 1000, BytesOut: 5000,
		User: "alice", Timings: flows.Timings{DNS: time.Millisecond, Connect: time.Millisecond, Total: 5 * time.Second}}
	r.Add(tunnel)

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("compressed text"))
	zw.Close()
	zipped := newFlow(4)
	zipped.ResponseHeader["Content-Encoding"] = []string{"gzip"}
	zipped.ResponseBody.Prefix = gz.Bytes()
	zipped.BytesOut = int64(gz.Len())
	r.Add(zipped)

	prefix := newFlow(5) // a prefix of a larger body; URL and upstream as the proxy records them
	prefix.ResponseBody = flows.Body{Prefix: []byte("<html>")}
	prefix.ResponseHeader["Content-Type"] = []string{"text/html"}
	prefix.BytesOut = 1 << 20
	prefix.URL, prefix.RawURL = "", &url.URL{Scheme: "http", Host: "[::1]:8080", Path: "/a b", RawQuery: "x=%zz"}
	prefix.UpstreamAddr = &net.TCPAddr{IP: net.IPv6loopback, Port: 8080}
	r.Add(prefix)

	denied := newFlow(6)
	denied.Status, denied.ErrorKind, denied.ErrorReason = http.StatusForbidden, "forbidden", "host denied.test is denied"
	denied.Timings = flows.Timings{Total: time.Millisecond}
	r.Add(denied)
	return r.Query(flows.Filter{})
}

// TestWriteHARValidates: WriteHAR's output for flows of every shape, and
// for none, is valid HAR 1.2, one entry a flow. (internal/flows' own tests
// check what each entry says.)
func TestWriteHARValidates(t *testing.T) {
	all := everyShape(t)
	for name, fs := range map[string][]*flows.Flow{"every shape": all, "none": nil} {
		var b bytes.Buffer
		if err := flows.WriteHAR(&b, fs); err != nil {
			t.Fatal(err)
		}
		m := Validate(t, b.Bytes())
		if n := len(m["log"].(map[string]any)["entries"].([]any)); n != len(fs) {
			t.Errorf("%s: %d entries, want %d", name, n, len(fs))
		}
		if strings.Contains(b.String(), "sekrit") {
			t.Errorf("%s: a credential reached the HAR", name)
		}
	}
}

// TestHARFileValidates: the files HARFile writes, one or rotated, are
// each valid HAR 1.2.
func TestHARFileValidates(t *testing.T) {
	for _, maxBytes := range []int64{0, 3000} {
		t.Run("max "+strconv.FormatInt(maxBytes, 10), func(t *testing.T) {
			dir := t.TempDir()
			r := flows.NewRing(flows.Options{MaxFlows: 2}) // the file keeps what the ring evicts
			h, err := flows.OpenHARFile(r, filepath.Join(dir, "flows.har"), flows.HARFileOptions{MaxBytes: maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			shapes := everyShape(t)
			for range 3 {
				for _, f := range shapes {
					c := *f
					r.Add(&c)
				}
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*.har"))
			if maxBytes > 0 && len(files) < 2 {
				t.Fatalf("files %v: want rotation past %d bytes", files, maxBytes)
			}
			total := 0
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				total += len(Validate(t, b)["log"].(map[string]any)["entries"].([]any))
			}
			if total != 3*len(shapes) {
				t.Errorf("%d entries in %d files, want %d", total, len(files), 3*len(shapes))
			}
		})
	}
}

// TestHARSchemaRejects checks that the schema is not too lax to matter:
// each of these breaks of a valid HAR is refused.
func TestHARSchemaRejects(t *testing.T) {
	s := Schema(t)
	var b bytes.Buffer
	all := everyShape(t)
	if err := flows.WriteHAR(&b, all[len(all)-1:]); err != nil { // the GET
		t.Fatal(err)
	}
	good := b.String()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("the schema refused a valid HAR: %v", err)
	}
	for name, bad := range map[string]string{
		"version":     strings.Replace(good, `"version":"1.2"`, `"version":"1.1"`, 1),
		"timing -2":   strings.Replace(good, `"blocked":-1`, `"blocked":-2`, 1),
		"timing -0.5": strings.Replace(good, `"blocked":-1`, `"blocked":-0.5`, 1),
		"no cache":    strings.Replace(good, `"cache":{},`, ``, 1),
		"unknown":     strings.Replace(good, `"cache":{}`, `"cache":{},"extra":1`, 1),
		"bad date":    strings.Replace(good, `"startedDateTime":"2026`, `"startedDateTime":"x2026`, 1),
		"bad ip":      strings.Replace(good, `"serverIPAddress":"93.184.215.14"`, `"serverIPAddress":"example.com"`, 1),
		"no status":   strings.Replace(good, `"status":200,`, ``, 1),
	} {
		if bad == good {
			t.Fatalf("%s: replacement did not apply", name)
		}
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		if s.Validate(doc) == nil {
			t.Errorf("%s: the schema accepted an invalid HAR", name)
		}
	}
}
