package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
	"github.com/fwdproxy/fwdproxy/internal/cdptest"
	"github.com/fwdproxy/fwdproxy/internal/flows"
)

var screenshots = flag.String("screenshots", "",
	"a folder where TestBrowser leaves its screenshots of synthetic traffic, dashboard.png and flows.png (the README's come from the root package's TestAdminBrowser)")

// traffic makes synthetic proxy traffic for the browser test: counters
// for the dashboard's Source, destinations, and flows for the ring.
type traffic struct {
	mu  sync.Mutex
	s   Sample
	rng *rand.Rand
	t   float64 // seconds of synthetic time
	png []byte
}

func newTraffic() *traffic {
	img := image.NewRGBA(image.Rect(0, 0, 48, 48))
	for y := range 48 {
		for x := range 48 {
			img.Set(x, y, color.RGBA{uint8(40 + 4*x), uint8(90 + 3*y), 200, 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return &traffic{
		s:   Sample{Errors: map[string]uint64{}, Denials: map[string]uint64{}},
		rng: rand.New(rand.NewPCG(7, 11)), png: b.Bytes(),
	}
}

func (tr *traffic) Sample() Sample {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := tr.s
	s.Errors = make(map[string]uint64, len(tr.s.Errors))
	for k, v := range tr.s.Errors {
		s.Errors[k] = v
	}
	s.Denials = make(map[string]uint64, len(tr.s.Denials))
	for k, v := range tr.s.Denials {
		s.Denials[k] = v
	}
	return s
}

var destinations = []string{"api.example.com", "cdn.example.net", "auth.example.org", "images.example.net",
	"registry.example.io", "telemetry.example.com", "static.example.org", "git.example.com"}

// advance moves the synthetic clock by dt seconds: a load that swells and
// ebbs over five minutes, with noise, a few errors and denials.
func (tr *traffic) advance(dt float64, d *Dashboard) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.t += dt
	load := 1 + 0.45*math.Sin(tr.t/300*2*math.Pi) + 0.1*tr.rng.NormFloat64()
	want := math.Max(180*load*dt, 0)
	reqs := uint64(want)
	if tr.rng.Float64() < want-float64(reqs) {
		reqs++
	}
	s := &tr.s
	s.Requests += reqs
	s.BytesOut += reqs * uint64(14_000+tr.rng.IntN(6000))
	s.BytesIn += reqs * uint64(600+tr.rng.IntN(400))
	for i := uint64(0); i < reqs; i++ {
		if tr.rng.Float64() < 0.015*load {
			s.Errors[[]string{"upstream", "upstream_timeout", "upstream", "malformed"}[tr.rng.IntN(4)]]++
		}
		if tr.rng.Float64() < 0.006 {
			reason := []string{"forbidden", "auth_required", "private_address"}[tr.rng.IntN(3)]
			s.Denials[reason]++
			s.Errors[map[string]string{"forbidden": "forbidden", "auth_required": "auth_required", "private_address": "forbidden"}[reason]]++
		}
		if tr.rng.Float64() < 0.9 {
			s.DNSHits++
		} else if tr.rng.Float64() < 0.4 {
			s.DNSMisses++
		}
		if tr.rng.Float64() < 0.93 {
			s.UpstreamReused++
		} else {
			s.UpstreamNew++
		}
		if d != nil && i < 50 {
			// Zipf-like: the first destinations are the busiest.
			d.Destination(destinations[min(int(tr.rng.ExpFloat64()*1.6), len(destinations)-1)])
		}
	}
	s.ActiveConnections = int64(40 + 25*load + 3*tr.rng.NormFloat64())
	s.ActiveRequests = int64(max(0, 12*load+2*tr.rng.NormFloat64()))
	s.ActiveTunnels = int64(6 + tr.rng.IntN(4))
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	s.P50 = ms(7 * load * (1 + 0.1*tr.rng.Float64()))
	s.P95 = ms(38 * load * (1 + 0.2*tr.rng.Float64()))
	s.P99 = ms(110 * load * (1 + 0.35*tr.rng.Float64()))
}

// flow returns a synthetic flow of one of several shapes.
func (tr *traffic) flow(i int) *flows.Flow {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	host := destinations[i%len(destinations)]
	f := &flows.Flow{
		Start:    time.Now().Add(-40 * time.Millisecond),
		Method:   http.MethodGet,
		Host:     host,
		URL:      "https://" + host + "/v1/items/" + fmt.Sprint(1000+i) + "?page=2",
		Proto:    "HTTP/1.1",
		Status:   200,
		User:     []string{"alice", "bob", ""}[i%3],
		Client:   fmt.Sprintf("127.0.0.1:%d", 40000+i%2000),
		Upstream: fmt.Sprintf("192.0.2.%d:443", 10+i%40),
		RequestHeader: http.Header{
			"User-Agent":    {"synthetic/1.0"},
			"Accept":        {"*/*"},
			"Authorization": {"Bearer synthetic-secret"},
		},
		ResponseHeader: http.Header{"Date": {time.Now().UTC().Format(http.TimeFormat)}},
		Intercepted:    i%2 == 0,
		Timings: flows.Timings{
			DNS: time.Duration(tr.rng.IntN(3000)) * time.Microsecond, Connect: time.Duration(2000+tr.rng.IntN(4000)) * time.Microsecond,
			TLS: time.Duration(5000+tr.rng.IntN(8000)) * time.Microsecond, FirstByte: time.Duration(25+tr.rng.IntN(60)) * time.Millisecond,
		},
	}
	f.Timings.Total = f.Timings.FirstByte + time.Duration(tr.rng.IntN(30))*time.Millisecond
	switch i % 5 {
	case 0: // JSON
		body := fmt.Sprintf(`{"id":%d,"name":"item %d","tags":["a","b"],"price":%d.99}`, 1000+i, i, i%90)
		f.ResponseHeader["Content-Type"] = []string{"application/json"}
		f.ResponseHeader["Set-Cookie"] = []string{"session=synthetic-secret; HttpOnly"}
		f.ResponseBody.Prefix, f.BytesOut = []byte(body), int64(len(body))
	case 1: // an image
		f.URL = "https://" + host + "/img/" + fmt.Sprint(i) + ".png"
		f.ResponseHeader["Content-Type"] = []string{"image/png"}
		f.ResponseBody.Prefix, f.BytesOut = tr.png, int64(len(tr.png))
	case 2: // a POST with a JSON body, refused
		body := `{"query":"synthetic"}`
		f.Method, f.Status = http.MethodPost, 403
		f.ErrorKind, f.ErrorReason = "forbidden", "denied by rule (synthetic)"
		f.RequestHeader["Content-Type"] = []string{"application/json"}
		f.RequestBody.Prefix, f.BytesIn = []byte(body), int64(len(body))
		f.ResponseHeader["Content-Type"] = []string{"text/plain; charset=utf-8"}
		f.ResponseBody.Prefix, f.BytesOut = []byte("denied by rule\n"), 15
	case 3: // binary
		f.URL = "https://" + host + "/blob"
		f.ResponseHeader["Content-Type"] = []string{"application/octet-stream"}
		blob := make([]byte, 300)
		for k := range blob {
			blob[k] = byte(k * 7)
		}
		f.ResponseBody.Prefix, f.BytesOut = blob, 4096
	case 4: // a tunnel
		f.Method, f.URL, f.Tunnel, f.Intercepted = http.MethodConnect, host+":443", true, false
		f.Host = host + ":443"
		f.BytesIn, f.BytesOut = 2400, 180_000
		f.RequestHeader = http.Header{"User-Agent": {"synthetic/1.0"}}
		f.ResponseHeader = nil
	}
	return f
}

// TestBrowser loads the dashboard and the flow inspector in headless
// Chromium while synthetic traffic runs, behind the admin token as a
// browser gets it (?token= once, then the cookie, which the event streams
// use): it waits for the charts to plot non-zero data (read from the
// DOM), opens a flow's detail, checks bodies and redaction, downloads the
// HAR, and takes screenshots. Console errors, exceptions and Content
// Security Policy violations fail it.
func TestBrowser(t *testing.T) {
	c := cdptest.StartOrSkip(t)

	// The admin listener: dashboard and inspector behind a token.
	tr := newTraffic()
	d := New(tr, Options{})
	// Ten minutes of history, so that the charts have a shape.
	now := time.Now()
	for i := 600; i >= 1; i-- {
		tr.advance(1, d)
		d.sample(now.Add(-time.Duration(i) * time.Second))
	}
	ring := flows.NewRing(flows.Options{})
	fh := flows.NewHandler(ring, flows.HandlerOptions{})
	mux := http.NewServeMux()
	d.Register(mux)
	fh.Register(mux)
	const token = "browser-test-token"
	srv := httptest.NewServer(adminui.Guard(mux, adminui.GuardOptions{Token: token}))
	defer srv.Close()
	defer fh.Close()
	defer d.Close()

	// Traffic while the browser looks.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	for i := range 40 {
		ring.Add(tr.flow(i))
	}
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for i := 40; ; i++ {
			select {
			case <-stop:
				return
			case t := <-tick.C:
				tr.advance(t.Sub(last).Seconds(), d) // as much traffic as time passed
				last = t
				if i%3 == 0 {
					ring.Add(tr.flow(i))
				}
			}
		}
	})
	// The second since the last sample, then sampling in real time.
	tr.advance(time.Since(now.Add(-time.Second)).Seconds(), d)
	d.Start()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := c.NewPage(ctx, 1440, 900)
	if err != nil {
		t.Fatal(err)
	}
	shots := *screenshots
	if shots == "" {
		shots = t.TempDir()
	}

	// The dashboard, entered with the token in the URL.
	if err := p.Navigate(ctx, srv.URL+"/?token="+token); err != nil {
		t.Fatal(err)
	}
	var loc string
	if err := p.Eval(ctx, "location.pathname + location.search", &loc); err != nil || loc != "/" {
		t.Errorf("after ?token= the page is at %q (%v), want / without the token", loc, err)
	}
	charts := []string{"chart-rates", "chart-latency", "chart-bytes", "chart-active"}
	cond := `["` + strings.Join(charts, `","`) + `"].every((id) => { const e = document.getElementById(id);
		return e && e.querySelector("canvas") && Number(e.dataset.points) >= 600 && Number(e.dataset.max) > 0; })`
	if err := p.WaitFor(ctx, "charts with data", cond); err != nil {
		t.Fatal(err)
	}
	var plotted map[string]struct{ Points, Max string }
	p.Eval(ctx, `Object.fromEntries(["`+strings.Join(charts, `","`)+`"].map((id) => [id,
		{Points: document.getElementById(id).dataset.points, Max: document.getElementById(id).dataset.max}]))`, &plotted)
	t.Logf("charts: %v", plotted)
	// A live tick arrives: the number of points grows (until 900).
	var before int
	p.Eval(ctx, `Number(document.getElementById("chart-rates").dataset.points)`, &before)
	if err := p.WaitFor(ctx, "a live tick", fmt.Sprintf(`Number(document.getElementById("chart-rates").dataset.points) > %d`, before)); err != nil {
		t.Error(err)
	}
	if err := p.WaitFor(ctx, "tiles and lists", `document.querySelector('#tile-requests [data-v="rate"]').textContent !== "–" &&
		document.querySelectorAll("#top tbody tr:not(.none)").length >= 3 &&
		document.querySelectorAll("#errors tbody tr:not(.none)").length >= 1 &&
		document.getElementById("live").classList.contains("on")`); err != nil {
		t.Error(err)
	}
	var tiles map[string]string
	p.Eval(ctx, `Object.fromEntries([...document.querySelectorAll(".tile")].map((t) => [t.id, t.innerText.replace(/\s+/g, " ")]))`, &tiles)
	t.Logf("tiles: %v", tiles)
	time.Sleep(300 * time.Millisecond) // let the last tick paint
	cdptest.SaveShot(t, ctx, p, filepath.Join(shots, "dashboard.png"))

	// The inspector: rows arrive live, a flow's detail opens.
	if err := p.Navigate(ctx, srv.URL+"/flows"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "flow rows", `document.querySelectorAll("#flows tbody tr").length >= 40`); err != nil {
		t.Fatal(err)
	}
	var first int
	p.Eval(ctx, `Number(document.querySelector("#flows tbody tr").dataset.id)`, &first)
	if err := p.WaitFor(ctx, "a live flow", fmt.Sprintf(`Number(document.querySelector("#flows tbody tr").dataset.id) > %d`, first)); err != nil {
		t.Error(err)
	}
	// An intercepted JSON response (flow ID i+1 for i%5 == 0, i even).
	if err := p.Click(ctx, `#flows tbody tr[data-id="11"]`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "the detail of flow 11", `(() => { const d = document.getElementById("detail");
		return !d.hidden && d.dataset.id === "11" && !!d.querySelector('.body-view[data-kind="json"] pre'); })()`); err != nil {
		t.Fatal(err)
	}
	var detail string
	p.Eval(ctx, `document.getElementById("detail").innerText`, &detail)
	for _, want := range []string{`"name": "item 10"`, "Authorization", "[REDACTED]", "Set-Cookie", "decrypted from a CONNECT tunnel"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the detail of flow 11 lacks %q:\n%s", want, detail)
		}
	}
	if strings.Contains(detail, "synthetic-secret") {
		t.Error("a credential shows in the detail")
	}
	// An image, then a binary body.
	if err := p.Click(ctx, `#flows tbody tr[data-id="7"]`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "the image of flow 7", `(() => { const i = document.querySelector('#detail[data-id="7"] img.body');
		return !!i && i.complete && i.naturalWidth === 48; })()`); err != nil {
		t.Error(err)
	}
	if err := p.Click(ctx, `#flows tbody tr[data-id="9"]`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "the hex dump of flow 9", `(() => { const h = document.querySelector('#detail[data-id="9"] pre.hex');
		return !!h && h.textContent.startsWith("00000000  00 07 0e 15"); })()`); err != nil {
		t.Error(err)
	}
	p.Click(ctx, `#flows tbody tr[data-id="36"]`)
	p.WaitFor(ctx, "flow 36", `document.getElementById("detail").dataset.id === "36"`)
	p.Eval(ctx, `document.querySelector("section.list").scrollTop = 0`, nil)
	cdptest.SaveShot(t, ctx, p, filepath.Join(shots, "flows.png"))

	// Export HAR: a real download through the link.
	downloads := t.TempDir()
	if err := c.AllowDownloads(ctx, downloads); err != nil {
		t.Fatal(err)
	}
	if err := p.Click(ctx, "#har"); err != nil {
		t.Fatal(err)
	}
	har := cdptest.WaitForFile(t, ctx, downloads, ".har")
	var h struct {
		Log struct {
			Version string
			Entries []struct {
				Request struct {
					Headers []struct{ Name, Value string }
				}
			}
		}
	}
	if err := json.Unmarshal(har, &h); err != nil {
		t.Fatalf("the HAR download is not JSON: %v", err)
	}
	if h.Log.Version != "1.2" || len(h.Log.Entries) < 40 {
		t.Errorf("HAR version %q with %d entries", h.Log.Version, len(h.Log.Entries))
	}
	if bytes.Contains(har, []byte("synthetic-secret")) {
		t.Error("a credential in the HAR")
	}

	// Nothing went wrong in the pages.
	c.CheckPages(t)
}
