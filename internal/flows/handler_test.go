package flows

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
	"github.com/fwdproxy/fwdproxy/internal/redact"
)

func newServer(t *testing.T, r *Ring, opts HandlerOptions) (*Handler, *httptest.Server) {
	t.Helper()
	h := NewHandler(r, opts)
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, srv
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func TestInspectorPage(t *testing.T) {
	_, srv := newServer(t, NewRing(Options{}), HandlerOptions{})
	resp, body := get(t, srv.URL+"/flows")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		resp.Header.Get("Content-Security-Policy") != adminui.ContentSecurityPolicy {
		t.Fatalf("GET /flows: %s %v", resp.Status, resp.Header)
	}
	for _, ref := range []string{"/ui/flows/flows.js", "/ui/flows/flows.css", "/ui/flows/admin.js", "/ui/flows/admin.css"} {
		if !strings.Contains(string(body), `"`+ref+`"`) {
			t.Errorf("the page does not load %s", ref)
		}
		resp, b := get(t, srv.URL+ref)
		want := "text/css"
		if strings.HasSuffix(ref, ".js") {
			want = "text/javascript"
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || len(b) < 100 {
			t.Errorf("GET %s: %s %q, %d bytes", ref, resp.Status, resp.Header.Get("Content-Type"), len(b))
		}
	}
	for _, path := range []string{"/ui/flows/", "/ui/flows/missing.js", "/ui/flows/../flows.go"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

func TestAPIFlows(t *testing.T) {
	r := NewRing(Options{})
	_, srv := newServer(t, r, HandlerOptions{ListLimit: 3})
	for i := range 5 {
		f := newFlow(i, 0, 5)
		f.Host = []string{"a.example", "b.example"}[i%2]
		r.Add(f)
	}
	resp, body := get(t, srv.URL+"/api/flows")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("GET /api/flows: %s %v", resp.Status, resp.Header)
	}
	var out struct {
		Flows []map[string]any
		State map[string]any
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Flows) != 3 || out.Flows[0]["id"].(float64) != 5 {
		t.Fatalf("got %d flows, first %v; want 3 (the list limit), newest first", len(out.Flows), out.Flows[0]["id"])
	}
	wantKeys := []string{"bytes_in", "bytes_out", "client", "error", "host", "id", "intercepted", "method", "proto",
		"reason", "request_type", "response_type", "start", "status", "timings", "tunnel", "upstream", "url", "user"}
	if got := keys(out.Flows[0]); !slices.Equal(got, wantKeys) {
		t.Errorf("flow keys %v, want %v", got, wantKeys)
	}
	tm := out.Flows[0]["timings"].(map[string]any)
	if got := keys(tm); !slices.Equal(got, []string{"connect_ms", "dns_ms", "first_byte_ms", "tls_ms", "total_ms"}) {
		t.Errorf("timing keys %v", got)
	}
	if tm["dns_ms"].(float64) != 1 || tm["tls_ms"].(float64) != 0 || tm["total_ms"].(float64) != 12 {
		t.Errorf("timings %v", tm)
	}
	if got := keys(out.State); !slices.Equal(got, []string{"added", "bytes", "evicted", "flows", "last_id", "max_bytes", "max_flows", "paused"}) {
		t.Errorf("state keys %v", got)
	}
	if out.State["flows"].(float64) != 5 || out.State["last_id"].(float64) != 5 || out.State["max_flows"].(float64) != DefaultMaxFlows {
		t.Errorf("state %v", out.State)
	}

	_, body = get(t, srv.URL+"/api/flows?host=b.ex&limit=10")
	json.Unmarshal(body, &out)
	if len(out.Flows) != 2 || out.Flows[0]["id"].(float64) != 4 || out.Flows[1]["id"].(float64) != 2 {
		t.Errorf("host filter: %v", out.Flows)
	}
	if resp, _ := get(t, srv.URL+"/api/flows?status=abc"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad filter: %s, want 400", resp.Status)
	}
}

func TestAPIFlowDetail(t *testing.T) {
	r := NewRing(Options{})
	_, srv := newServer(t, r, HandlerOptions{})
	f := newFlow(0, 0, 0)
	f.RequestHeader["Authorization"] = []string{"Bearer sekrit"}
	f.ResponseHeader["Set-Cookie"] = []string{"sid=sekrit"}
	f.ResponseHeader["Content-Type"] = []string{"application/json"}
	f.ResponseBody.Prefix = []byte(`{"ok":true}`)
	f.BytesOut = 11
	id := r.Add(f)
	resp, body := get(t, srv.URL+"/api/flows/1")
	if resp.StatusCode != 200 || id != 1 {
		t.Fatalf("GET /api/flows/1: %s", resp.Status)
	}
	if strings.Contains(string(body), "sekrit") {
		t.Errorf("a credential in the detail: %s", body)
	}
	var d map[string]any
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	if d["id"].(float64) != 1 || d["method"] != "GET" {
		t.Errorf("summary fields missing: %v", keys(d))
	}
	req, res := d["request"].(map[string]any), d["response"].(map[string]any)
	hdrs := req["headers"].([]any)
	first := hdrs[0].(map[string]any)
	if first["name"] != "Accept" || hdrs[1].(map[string]any)["value"] != redact.Redacted {
		t.Errorf("request headers (sorted, redacted): %v", hdrs)
	}
	rb := res["body"].(map[string]any)
	if rb["kind"] != KindJSON || rb["text"] != "{\n  \"ok\": true\n}" || rb["size"].(float64) != 11 || rb["truncated"] != false {
		t.Errorf("response body %v", rb)
	}
	if req["body"].(map[string]any)["kind"] != KindNone {
		t.Errorf("request body %v", req["body"])
	}
	for path, code := range map[string]int{"/api/flows/2": 404, "/api/flows/x": 400, "/api/flows/-1": 400} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != code {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, code)
		}
	}
}

func post(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestAPIActions(t *testing.T) {
	r := NewRing(Options{})
	_, srv := newServer(t, r, HandlerOptions{})
	r.Add(newFlow(0, 0, 0))
	if code, st := post(t, srv.URL+"/api/flows/pause"); code != 200 || st["paused"] != true || r.Recording() {
		t.Errorf("pause: %d %v", code, st)
	}
	if r.Add(newFlow(1, 0, 0)) != 0 {
		t.Error("recorded while paused")
	}
	if code, st := post(t, srv.URL+"/api/flows/resume"); code != 200 || st["paused"] != false || !r.Recording() {
		t.Errorf("resume: %d %v", code, st)
	}
	if code, st := post(t, srv.URL+"/api/flows/clear"); code != 200 || st["flows"].(float64) != 0 || r.Stats().Flows != 0 {
		t.Errorf("clear: %d %v", code, st)
	}
	if code, _ := post(t, srv.URL+"/api/flows/explode"); code != 404 {
		t.Errorf("unknown action: %d, want 404", code)
	}
	if resp, _ := get(t, srv.URL+"/api/flows/pause"); resp.StatusCode != http.StatusBadRequest {
		// GET /api/flows/{id} takes it: "pause" is no ID.
		t.Errorf("GET pause: %s, want 400", resp.Status)
	}
	if code, _ := post(t, srv.URL+"/api/flows"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/flows: %d, want 405", code)
	}
}

func TestHARHandler(t *testing.T) {
	r := NewRing(Options{})
	_, srv := newServer(t, r, HandlerOptions{})
	for i := range 4 {
		f := newFlow(i, 0, 5)
		f.ResponseBody.Prefix = []byte("hello")
		f.RequestHeader["Proxy-Authorization"] = []string{"Basic c2VrcmV0"}
		if i%2 == 1 {
			f.Status = 404
		}
		r.Add(f)
	}
	resp, body := get(t, srv.URL+"/flows.har?status=4xx")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), `attachment; filename="fwdproxy-`) {
		t.Fatalf("GET /flows.har: %s %v", resp.Status, resp.Header)
	}
	m := decodeHAR(t, body)
	if n := len(m["log"].(map[string]any)["entries"].([]any)); n != 2 {
		t.Errorf("%d entries, want the 2 flows with a 4xx status", n)
	}
	if strings.Contains(string(body), "c2VrcmV0") {
		t.Error("Proxy-Authorization in the HAR")
	}
	if resp, _ := get(t, srv.URL+"/flows.har?limit=x"); resp.StatusCode != 400 {
		t.Errorf("bad filter: %s", resp.Status)
	}
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct{ event, id, data string }

// sseReader reads events from a stream, checking its framing.
type sseReader struct {
	t  *testing.T
	br *bufio.Reader
}

func (s *sseReader) next() sseEvent {
	s.t.Helper()
	var ev sseEvent
	var data []string
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			s.t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev.event == "" && data == nil && ev.id == "" {
				continue // a retry: or comment block
			}
			ev.data = strings.Join(data, "\n")
			return ev
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.event = value
		case "id":
			ev.id = value
		case "data":
			data = append(data, value)
		case "retry", "":
		default:
			s.t.Fatalf("unknown field in %q", line)
		}
	}
}

// openStream GETs url as an EventSource would and checks the headers and
// the retry line.
func openStream(t *testing.T, ctx context.Context, url string, hdr http.Header) (*sseReader, func()) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("stream: %s %v", resp.Status, resp.Header)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "retry: 2000\n" {
		t.Fatalf("first line %q, want the retry interval", line)
	}
	return &sseReader{t: t, br: br}, func() { resp.Body.Close() }
}

func TestStream(t *testing.T) {
	r := NewRing(Options{})
	h, srv := newServer(t, r, HandlerOptions{StateInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, done := openStream(t, ctx, srv.URL+"/api/flows/stream?host=wanted", nil)
	defer done()
	if ev := s.next(); ev.event != "state" || !strings.Contains(ev.data, `"flows":0`) {
		t.Fatalf("first event %+v, want the state", ev)
	}
	other := newFlow(0, 0, 0)
	r.Add(other)
	wanted := newFlow(1, 0, 0)
	wanted.Host = "wanted.example"
	r.Add(wanted)
	ev := s.next()
	if ev.event != "flow" || ev.id != "2" {
		t.Fatalf("event %+v, want flow 2 (flow 1 does not match the filter)", ev)
	}
	var f map[string]any
	if err := json.Unmarshal([]byte(ev.data), &f); err != nil || f["host"] != "wanted.example" || f["id"].(float64) != 2 {
		t.Errorf("flow data %s (%v)", ev.data, err)
	}

	// A reconnection with Last-Event-ID gets what it missed first, once.
	r.Add(newFlow(2, 0, 0))
	r.Add(newFlow(3, 0, 0))
	s2, done2 := openStream(t, ctx, srv.URL+"/api/flows/stream", http.Header{"Last-Event-Id": {"2"}})
	defer done2()
	s2.next() // state
	if a, b := s2.next(), s2.next(); a.id != "3" || b.id != "4" {
		t.Errorf("replay %s, %s, want 3, 4", a.id, b.id)
	}
	r.Add(newFlow(4, 0, 0))
	if ev := s2.next(); ev.id != "5" {
		t.Errorf("after the replay: %+v, want flow 5", ev)
	}

	// Close ends the streams.
	h.Close()
	io.Copy(io.Discard, s.br)
	io.Copy(io.Discard, s2.br)
	if ctx.Err() != nil {
		t.Error("the streams did not end on Close")
	}
}

func TestStreamState(t *testing.T) {
	r := NewRing(Options{})
	_, srv := newServer(t, r, HandlerOptions{StateInterval: 20 * time.Millisecond, StreamBuffer: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, done := openStream(t, ctx, srv.URL+"/api/flows/stream?host=nothing-matches", nil)
	defer done()
	s.next()
	r.Pause()
	for {
		ev := s.next()
		if ev.event == "state" && strings.Contains(ev.data, `"paused":true`) {
			break
		}
	}
}
