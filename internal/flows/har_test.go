package flows

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// decodeHAR decodes a HAR and checks its frame: a log of version 1.2 with
// an array of entries. The HAR 1.2 schema check of what WriteHAR and
// HARFile write is in internal/hartest, a module of its own, so that the
// JSON-schema validator stays out of the library's go.mod.
func decodeHAR(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, b)
	}
	log, _ := m["log"].(map[string]any)
	if _, ok := log["entries"].([]any); !ok || log["version"] != "1.2" {
		t.Fatalf("not a HAR 1.2 log:\n%s", b)
	}
	return m
}

// harFlows are flows of every shape the proxy records.
func harFlows(t *testing.T) []*Flow {
	r := NewRing(Options{})
	get := newFlow(0, 0, 5)
	get.URL = "http://example.com/search?q=a%20b&lang=en&flag"
	get.Upstream = "93.184.215.14:80"
	get.ResponseBody.Prefix = []byte("hello")
	get.RequestHeader["Authorization"] = []string{"Bearer sekrit"}
	get.RequestHeader["Cookie"] = []string{"session=sekrit"}
	get.ResponseHeader["Set-Cookie"] = []string{"session=sekrit2"}
	r.Add(get)

	post := newFlow(1, 0, 0)
	post.Method, post.Status = http.MethodPost, http.StatusCreated
	post.URL = "https://api.example.com/items"
	post.Upstream = "[2001:db8::1]:443"
	post.Intercepted, post.Proto = true, "HTTP/2.0"
	post.RequestHeader["Content-Type"] = []string{"application/json"}
	post.RequestBody = Body{Prefix: []byte(`{"name":"x"}`)}
	post.BytesIn = 100 // a prefix
	post.ResponseHeader = http.Header{"Content-Type": {"image/png"}, "Location": {"/items/1"}}
	post.ResponseBody = Body{Prefix: pngBytes(t)}
	post.BytesOut = int64(len(post.ResponseBody.Prefix))
	post.Timings = Timings{DNS: 2 * time.Millisecond, Connect: 3 * time.Millisecond, TLS: 4 * time.Millisecond,
		FirstByte: 20 * time.Millisecond, Total: 25 * time.Millisecond}
	r.Add(post)

	upload := newFlow(2, 0, 0)
	upload.Method = http.MethodPut
	upload.RequestHeader["Content-Type"] = []string{"application/octet-stream"}
	upload.RequestBody = Body{Prefix: []byte{0, 1, 2, 3}}
	upload.BytesIn = 4
	r.Add(upload)

	failed := newFlow(3, 0, 0)
	failed.Status, failed.ErrorKind, failed.ErrorReason = 0, "upstream_timeout", "upstream example.com:80 timed out"
	failed.ResponseHeader, failed.Timings = nil, Timings{Total: 30 * time.Second}
	failed.Upstream = "origin.example.com:80" // a name: no serverIPAddress
	r.Add(failed)

	tunnel := &Flow{Start: get.Start.Add(time.Second), Method: http.MethodConnect, URL: "example.com:443",
		Host: "example.com:443", Proto: "HTTP/1.1", Status: 200, Tunnel: true, BytesIn: 1000, BytesOut: 5000,
		User: "alice", Timings: Timings{DNS: time.Millisecond, Connect: time.Millisecond, Total: 5 * time.Second}}
	r.Add(tunnel)

	gz := newFlow(4, 0, 0)
	gz.ResponseHeader["Content-Encoding"] = []string{"gzip"}
	gz.ResponseBody.Prefix = gzipped(t, "compressed text")
	gz.BytesOut = int64(len(gz.ResponseBody.Prefix))
	r.Add(gz)
	return r.Query(Filter{}) // newest first: WriteHAR must sort
}

func TestWriteHARValidates(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHAR(&b, harFlows(t)); err != nil {
		t.Fatal(err)
	}
	m := decodeHAR(t, b.Bytes())
	log := m["log"].(map[string]any)
	if log["version"] != "1.2" || log["creator"].(map[string]any)["name"] != "fwdproxy" {
		t.Errorf("log header: %v %v", log["version"], log["creator"])
	}
	entries := log["entries"].([]any)
	if len(entries) != 6 {
		t.Fatalf("%d entries, want 6", len(entries))
	}
	var last string
	for i, e := range entries {
		started := e.(map[string]any)["startedDateTime"].(string)
		if _, err := time.Parse(time.RFC3339, started); err != nil || !strings.Contains(started, ".") {
			t.Errorf("entry %d startedDateTime %q: want RFC 3339 with milliseconds (%v)", i, started, err)
		}
		if started < last {
			t.Errorf("entries not oldest first: %q after %q", started, last)
		}
		last = started
	}
	entry := func(i int) map[string]any { return entries[i].(map[string]any) }
	obj := func(m map[string]any, k string) map[string]any { return m[k].(map[string]any) }

	// The GET: query string, redaction, content, IPv4 server address.
	get := entry(0)
	req := obj(get, "request")
	if q := req["queryString"].([]any); len(q) != 3 || q[0].(map[string]any)["value"] != "a b" || q[2].(map[string]any)["value"] != "" {
		t.Errorf("queryString = %v", q)
	}
	if get["serverIPAddress"] != "93.184.215.14" {
		t.Errorf("serverIPAddress = %v", get["serverIPAddress"])
	}
	if c := obj(obj(get, "response"), "content"); c["text"] != "hello" || c["size"].(float64) != 5 || c["encoding"] != nil {
		t.Errorf("content = %v", c)
	}
	if strings.Contains(b.String(), "sekrit") {
		t.Error("a credential reached the HAR")
	}
	if n := strings.Count(b.String(), `"value":"`+redact.Redacted+`"`); n != 3 {
		t.Errorf("%d redacted header values in the HAR, want 3 (Authorization, Cookie, Set-Cookie)", n)
	}

	// The POST: postData as text with its prefix noted, a PNG as base64,
	// timings, ssl within connect, IPv6 server address.
	post := entry(1)
	pd := obj(obj(post, "request"), "postData")
	if pd["mimeType"] != "application/json" || pd["text"] != `{"name":"x"}` || !strings.Contains(pd["comment"].(string), "prefix of 12 of 100") {
		t.Errorf("postData = %v", pd)
	}
	resp := obj(post, "response")
	if c := obj(resp, "content"); c["encoding"] != "base64" || c["mimeType"] != "image/png" {
		t.Errorf("image content = %v", c)
	}
	if resp["redirectURL"] != "/items/1" || resp["httpVersion"] != "HTTP/2.0" || resp["statusText"] != "Created" {
		t.Errorf("response = %v", resp)
	}
	tm := obj(post, "timings")
	want := map[string]float64{"blocked": -1, "dns": 2, "connect": 7, "ssl": 4, "send": 0, "wait": 11, "receive": 5}
	for k, v := range want {
		if tm[k].(float64) != v {
			t.Errorf("timings.%s = %v, want %v", k, tm[k], v)
		}
	}
	if post["time"].(float64) != 25 {
		t.Errorf("time = %v, want 25 (the sum of the timings but ssl)", post["time"])
	}
	if post["serverIPAddress"] != "2001:db8::1" || !strings.Contains(post["comment"].(string), "intercepted") {
		t.Errorf("serverIPAddress %v, comment %v", post["serverIPAddress"], post["comment"])
	}

	// The upload: binary postData as base64, said so.
	pd = obj(obj(entry(2), "request"), "postData")
	if pd["text"] != base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 3}) || !strings.Contains(pd["comment"].(string), "base64") {
		t.Errorf("binary postData = %v", pd)
	}

	// The failure: status 0, the error in comment and _error, no timings
	// but wait.
	failed := entry(3)
	if r := obj(failed, "response"); r["status"].(float64) != 0 || r["_error"] != "upstream_timeout" {
		t.Errorf("failed response = %v", r)
	}
	if !strings.Contains(failed["comment"].(string), "timed out") || failed["serverIPAddress"] != nil {
		t.Errorf("failed entry: comment %v, serverIPAddress %v", failed["comment"], failed["serverIPAddress"])
	}
	if tm := obj(failed, "timings"); tm["dns"].(float64) != -1 || tm["wait"].(float64) != 30000 || failed["time"].(float64) != 30000 {
		t.Errorf("failed timings = %v, time %v", tm, failed["time"])
	}

	// The gzip body, decoded.
	if c := obj(obj(entry(4), "response"), "content"); c["text"] != "compressed text" || c["size"].(float64) != 15 {
		t.Errorf("gzip content = %v", c)
	}

	// The tunnel.
	tun := entry(5)
	if !strings.Contains(tun["comment"].(string), "tunnel") || obj(tun, "request")["method"] != "CONNECT" ||
		obj(tun, "request")["url"] != "tcp://example.com:443" {
		t.Errorf("tunnel entry = %v", tun)
	}
}

func TestWriteHAREmpty(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHAR(&b, nil); err != nil {
		t.Fatal(err)
	}
	m := decodeHAR(t, b.Bytes())
	if n := len(m["log"].(map[string]any)["entries"].([]any)); n != 0 {
		t.Errorf("%d entries", n)
	}
}
