package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
)

func newServer(t *testing.T, d *Dashboard) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	d.Register(mux)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metrics")) })
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		d.Close()
		srv.Close()
	})
	return srv
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

func TestDashboardPage(t *testing.T) {
	srv := newServer(t, New(&fakeSource{}, Options{}))
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != adminui.ContentSecurityPolicy ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %v", resp.Status, resp.Header)
	}
	for _, ref := range []string{"/ui/dashboard/dashboard.js", "/ui/dashboard/dashboard.css", "/ui/dashboard/admin.js",
		"/ui/dashboard/admin.css", "/ui/dashboard/uplot/uPlot.iife.min.js", "/ui/dashboard/uplot/uPlot.min.css"} {
		if !strings.Contains(string(body), `"`+ref+`"`) {
			t.Errorf("the page does not load %s", ref)
		}
		if resp, b := get(t, srv.URL+ref); resp.StatusCode != 200 || len(b) < 100 {
			t.Errorf("GET %s: %s, %d bytes", ref, resp.Status, len(b))
		}
	}
	// Paths the dashboard does not serve stay with the admin mux.
	if resp, b := get(t, srv.URL+"/metrics"); resp.StatusCode != 200 || string(b) != "metrics" {
		t.Errorf("GET /metrics: %s %q", resp.Status, b)
	}
	if resp, _ := get(t, srv.URL+"/nothing"); resp.StatusCode != 404 {
		t.Errorf("GET /nothing: %s, want 404", resp.Status)
	}
}

// TestUPlotVendored checks the vendored uPlot's version and license.
func TestUPlotVendored(t *testing.T) {
	js, err := static.ReadFile("static/uplot/uPlot.iife.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(js), "/*! https://github.com/leeoniya/uPlot (v1.6.32) */") {
		t.Errorf("uPlot header %q", js[:60])
	}
	for _, f := range []string{"static/uplot/LICENSE", "static/uplot/VERSION"} {
		b, err := static.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "MIT") {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestAPIStats(t *testing.T) {
	src := &fakeSource{s: Sample{Errors: map[string]uint64{"upstream": 1}}}
	d := New(src, Options{})
	srv := newServer(t, d)
	for i := range 3 {
		src.update(func(s *Sample) { s.Requests += 10 })
		d.sample(t0.Add(time.Duration(i) * time.Second))
	}
	d.Destination("example.com")
	resp, body := get(t, srv.URL+"/api/stats")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("GET /api/stats: %s %v", resp.Status, resp.Header)
	}
	var st struct {
		Now     map[string]any
		History map[string][]float64
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	wantNow := []string{"active", "denials", "dns", "errors", "interval_s", "latency_ms", "pool", "rates", "time", "top", "totals"}
	if got := slices.Sorted(maps.Keys(st.Now)); !slices.Equal(got, wantNow) {
		t.Errorf("now keys %v, want %v", got, wantNow)
	}
	for k, want := range map[string][]string{
		"rates":      {"bytes_in", "bytes_out", "denials", "errors", "requests"},
		"totals":     {"bytes_in", "bytes_out", "denials", "errors", "requests"},
		"active":     {"connections", "requests", "tunnels"},
		"latency_ms": {"p50", "p95", "p99"},
		"dns":        {"hits", "last_minute", "misses", "ratio"},
		"pool":       {"hits", "last_minute", "misses", "ratio"},
	} {
		if got := slices.Sorted(maps.Keys(st.Now[k].(map[string]any))); !slices.Equal(got, want) {
			t.Errorf("now.%s keys %v, want %v", k, got, want)
		}
	}
	if e := st.Now["errors"].([]any)[0].(map[string]any); e["name"] != "upstream" || e["total"].(float64) != 1 {
		t.Errorf("errors %v", e)
	}
	if st.Now["rates"].(map[string]any)["requests"].(float64) != 10 {
		t.Errorf("rates %v", st.Now["rates"])
	}
	var cols []string
	for _, c := range columns {
		cols = append(cols, c.name)
		if len(st.History[c.name]) != 2 {
			t.Errorf("history %s has %d values, want 2", c.name, len(st.History[c.name]))
		}
	}
	if got := slices.Sorted(maps.Keys(st.History)); !slices.Equal(got, slices.Sorted(slices.Values(cols))) {
		t.Errorf("history columns %v", got)
	}
}

// readEvent reads one event from a text/event-stream.
func readEvent(t *testing.T, br *bufio.Reader) (event, data string) {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && event != "":
			return event, data
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data += line[len("data: "):]
		case line == "" || strings.HasPrefix(line, "retry: "):
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

func TestStatsStream(t *testing.T) {
	src := &fakeSource{}
	d := New(src, Options{})
	srv := newServer(t, d)
	d.sample(t0)
	d.sample(t0.Add(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/stats/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	ev, data := readEvent(t, br)
	var snap statsJSON
	if err := json.Unmarshal([]byte(data), &snap); ev != "snapshot" || err != nil || len(snap.History["t"]) != 1 {
		t.Fatalf("first event %q (%v): %s", ev, err, data)
	}
	for i := 2; i < 5; i++ {
		src.update(func(s *Sample) { s.Requests += 3 })
		d.sample(t0.Add(time.Duration(i) * time.Second))
		ev, data := readEvent(t, br)
		var tick struct {
			Now   map[string]any
			Point map[string]float64
		}
		if err := json.Unmarshal([]byte(data), &tick); ev != "tick" || err != nil {
			t.Fatalf("event %q (%v): %s", ev, err, data)
		}
		if tick.Point["t"] != float64(t0.Unix()+int64(i)) || tick.Point["requests"] != 3 || len(tick.Point) != len(columns) {
			t.Errorf("tick %d point %v", i, tick.Point)
		}
		if tick.Now["totals"].(map[string]any)["requests"].(float64) != float64(3*(i-1)) {
			t.Errorf("tick %d now.totals %v", i, tick.Now["totals"])
		}
	}
	d.Close()
	io.Copy(io.Discard, br)
	if ctx.Err() != nil {
		t.Error("the stream did not end on Close")
	}
}

// TestGuarded checks the dashboard behind adminui.Guard with a token, as
// the admin listener serves it: 401 without it, the stream with the cookie
// that ?token= set.
func TestGuarded(t *testing.T) {
	d := New(&fakeSource{}, Options{})
	mux := http.NewServeMux()
	d.Register(mux)
	srv := httptest.NewServer(adminui.Guard(mux, adminui.GuardOptions{Token: "tok"}))
	defer srv.Close()
	defer d.Close()
	for _, path := range []string{"/", "/api/stats", "/api/stats/stream", "/ui/dashboard/dashboard.js"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %s, want 401", path, resp.Status)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/stats", nil)
	req.Header.Set("Authorization", "Bearer tok")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("with the bearer token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// A browser: ?token= once, then the cookie.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(srv.URL + "/?token=tok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.RawQuery != "" {
		t.Fatalf("after ?token=: %s at %s", resp.Status, resp.Request.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/stats/stream", nil)
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream with the cookie: %v %v", resp, err)
	}
	if ev, _ := readEvent(t, bufio.NewReader(resp.Body)); ev != "snapshot" {
		t.Errorf("first event %q", ev)
	}
	resp.Body.Close()
}
