package fwdproxy

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/cdptest"
	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

var (
	adminScreenshots = flag.String("admin-screenshots", "",
		"a folder where TestAdminBrowser leaves dashboard.png and flows.png (docs for the README's), after a longer run of traffic")
	adminTraffic = flag.Duration("admin-traffic", 0,
		"how long TestAdminBrowser runs traffic before it looks (default: a few seconds; 2m with -admin-screenshots)")
)

// browserTraffic sends a mix of requests through the proxy at proxyURL
// until stop is closed: JSON, an image, a binary body, a POST, a slow
// one, a redirect, denials, upstream failures and tunnels, to a few
// destinations, at a rate that swells and ebbs.
type browserTraffic struct {
	proxyURL *url.URL
	origins  []string // host:port of the origin under several names
	echo     string
	down     string
	rng      *rand.Rand
}

func (bt *browserTraffic) run(t *testing.T, stop <-chan struct{}) {
	pu := *bt.proxyURL
	pu.User = url.UserPassword("alice", "pw")
	c := proxytest.Client(t, &pu, nil)
	c.Timeout = 10 * time.Second
	paths := []string{"/json", "/json", "/json", "/img.png", "/blob", "/text", "/slow", "/redirect"}
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		elapsed := time.Since(start).Seconds()
		// From a trough to a peak over two minutes (the screenshots' run).
		pause := time.Duration(float64(40*time.Millisecond) / (1.2 + 0.8*triangle(3+elapsed/60)))
		time.Sleep(pause)
		host := bt.origins[min(int(bt.rng.ExpFloat64()*1.2), len(bt.origins)-1)]
		var err error
		switch n := bt.rng.IntN(100); {
		case n < 3:
			err = bt.get(c, "http://denied.test/ads.js", "")
		case n < 5:
			err = bt.get(c, "http://"+bt.down+"/", "")
		case n < 7:
			err = bt.tunnel()
		case n < 15:
			var resp *http.Response
			resp, err = c.Post("http://"+host+"/api/items", "application/json",
				strings.NewReader(`{"name":"item `+strconv.Itoa(i)+`","tags":["a","b"]}`))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		default:
			err = bt.get(c, "http://"+host+paths[bt.rng.IntN(len(paths))]+"?n="+strconv.Itoa(i), "session=browser-secret")
		}
		if err != nil {
			select {
			case <-stop:
				return
			default:
				t.Errorf("traffic: %v", err)
				return
			}
		}
	}
}

func (bt *browserTraffic) get(c *http.Client, u, cookie string) error {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// tunnel opens a CONNECT tunnel to the echo server and relays a little.
func (bt *browserTraffic) tunnel() error {
	c, err := net.DialTimeout("tcp", bt.proxyURL.Host, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n", bt.echo, bt.echo)
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
		return fmt.Errorf("CONNECT: %q", buf[:n])
	}
	msg := bytes.Repeat([]byte("tunnelled "), 100+bt.rng.IntN(2000))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, make([]byte, len(msg)))
	return err
}

// triangle is a triangle wave of period 4 in [-1, 1]: a load that swells
// and ebbs.
func triangle(x float64) float64 {
	x -= 4 * float64(int(x/4))
	switch {
	case x < 1:
		return x
	case x < 3:
		return 2 - x
	}
	return x - 4
}

// browserScene is the admin pages' browser tests' world: a Proxy (basic
// auth, capture, a denied host, its own DNS server) and an origin under
// five names that serves JSON, an image, binary, text, a slow response, a
// redirect and a POST endpoint, and an echo server for tunnels.
type browserScene struct {
	tp      *testProxy
	origins []string // host:port of the origin under several names
	echo    string
}

func newBrowserScene(t *testing.T) *browserScene {
	img := image.NewRGBA(image.Rect(0, 0, 48, 48))
	for y := range 48 {
		for x := range 48 {
			img.Set(x, y, color.RGBA{uint8(40 + 4*x), uint8(90 + 3*y), 200, 255})
		}
	}
	var pngBody bytes.Buffer
	png.Encode(&pngBody, img)
	blob := make([]byte, 300)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Set-Cookie", "sid=browser-secret; HttpOnly")
			n := r.URL.Query().Get("n")
			if n == "" { // the redirect's target: JSON still
				n = "0"
			}
			fmt.Fprintf(w, `{"id":%s,"name":"item","price":12.5,"tags":["new","sale"]}`, n)
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(pngBody.Bytes())
		case "/blob":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(blob)
		case "/slow":
			time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
			io.WriteString(w, "slow\n")
		case "/redirect":
			http.Redirect(w, r, "/json", http.StatusFound)
		case "/api/items":
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"ok":true}`)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, strings.Repeat("lorem ipsum dolor sit amet ", 40+rand.IntN(200)))
		}
	})
	_, oport, _ := net.SplitHostPort(strings.TrimPrefix(o.URL, "http://"))
	ds := dnstest.NewServer(t)
	names := []string{"api.example.test", "cdn.example.test", "images.example.test", "auth.example.test", "static.example.test"}
	var origins []string
	for _, n := range names {
		ds.Add(n + ". 60 IN A 127.0.0.1")
		origins = append(origins, n+":"+oport)
	}
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	tp := startProxy(t, WithDNSServers(ds.Addr()), WithCapture(8192), WithDenyHosts("denied.test"),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "pw"})))
	return &browserScene{tp: tp, origins: origins, echo: echoAddr}
}

// traffic starts n clients of browserTraffic through the scene's Proxy;
// stop ends them and waits for them.
func (s *browserScene) traffic(t *testing.T, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		bt := &browserTraffic{proxyURL: s.tp.URL, origins: s.origins, echo: s.echo, down: closedPort(t), rng: rand.New(rand.NewPCG(uint64(i), 7))}
		wg.Go(func() { bt.run(t, done) })
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// TestAdminBrowser drives the admin pages in headless Chromium while real
// traffic runs through a Proxy: the dashboard, entered with the token,
// plots non-zero rates, latencies, bytes and connections (read back from
// the DOM) and lists destinations, errors and denials; the flow inspector
// lists the flows live, shows a JSON response, an image and a binary body
// with credentials redacted; the HAR export downloads and validates
// against HAR 1.2. Screenshots go to -admin-screenshots. Console errors,
// exceptions and Content Security Policy violations fail it.
func TestAdminBrowser(t *testing.T) {
	c := cdptest.StartOrSkip(t)
	s := newBrowserScene(t)
	const token = "browser-token"
	_, srv := openAdmin(t, s.tp.Proxy, AdminOptions{Token: token})
	defer s.traffic(t, 3)()
	wait := 4 * time.Second
	if *adminScreenshots != "" {
		wait = 2 * time.Minute
	}
	if *adminTraffic > 0 {
		wait = *adminTraffic
	}
	time.Sleep(wait)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := c.NewPage(ctx, 1440, 900)
	if err != nil {
		t.Fatal(err)
	}
	shots := *adminScreenshots
	if shots == "" {
		shots = t.TempDir()
	}

	// The dashboard, entered with the token once.
	if err := p.Navigate(ctx, srv.URL+"/?token="+token); err != nil {
		t.Fatal(err)
	}
	charts := []string{"chart-rates", "chart-latency", "chart-bytes", "chart-active"}
	cond := `["` + strings.Join(charts, `","`) + `"].every((id) => { const e = document.getElementById(id);
		return e && e.querySelector("canvas") && Number(e.dataset.points) >= 3 && Number(e.dataset.max) > 0; })`
	if err := p.WaitFor(ctx, "charts with non-zero data", cond); err != nil {
		t.Fatal(err)
	}
	var plotted map[string]struct{ Points, Max string }
	p.Eval(ctx, `Object.fromEntries(["`+strings.Join(charts, `","`)+`"].map((id) => [id,
		{Points: document.getElementById(id).dataset.points, Max: document.getElementById(id).dataset.max}]))`, &plotted)
	t.Logf("charts: %v", plotted)
	if err := p.WaitFor(ctx, "tiles and lists", `document.querySelector('#tile-requests [data-v="rate"]').textContent !== "–" &&
		document.querySelectorAll("#top tbody tr:not(.none)").length >= 3 &&
		document.querySelectorAll("#errors tbody tr:not(.none)").length >= 1 &&
		document.querySelectorAll("#denials tbody tr:not(.none)").length >= 1 &&
		document.getElementById("live").classList.contains("on")`); err != nil {
		t.Error(err)
	}
	var tiles map[string]string
	p.Eval(ctx, `Object.fromEntries([...document.querySelectorAll(".tile")].map((t) => [t.id, t.innerText.replace(/\s+/g, " ")]))`, &tiles)
	t.Logf("tiles: %v", tiles)
	var top string
	p.Eval(ctx, `document.querySelector("#top tbody").innerText`, &top)
	if !strings.Contains(top, "api.example.test") {
		t.Errorf("top destinations without api.example.test:\n%s", top)
	}
	time.Sleep(1200 * time.Millisecond) // a tick more, painted
	cdptest.SaveShot(t, ctx, p, filepath.Join(shots, "dashboard.png"))

	// The inspector: flows arrive live; a JSON response, an image and a
	// binary body in the detail.
	if err := p.Navigate(ctx, srv.URL+"/flows"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "flow rows", `document.querySelectorAll("#flows tbody tr").length >= 20`); err != nil {
		t.Fatal(err)
	}
	var first int
	p.Eval(ctx, `Number(document.querySelector("#flows tbody tr").dataset.id)`, &first)
	if err := p.WaitFor(ctx, "a live flow", fmt.Sprintf(`Number(document.querySelector("#flows tbody tr").dataset.id) > %d`, first)); err != nil {
		t.Error(err)
	}
	// Paused (the page's button), the list holds still for the clicks.
	if err := p.Click(ctx, "#pause"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "the ring paused", `document.getElementById("pause").textContent === "Resume"`); err != nil {
		t.Error(err)
	}
	time.Sleep(500 * time.Millisecond) // the last frame of rows
	// The newest flow of each shape that the page lists.
	newest := func(path string) string {
		t.Helper()
		var id string
		// A tunnel's row shows its CONNECT target ("host:port"), which is
		// no URL: such rows are skipped, not thrown on.
		find := `(() => { const pathOf = (s) => { try { return new URL(s).pathname; } catch { return ""; } };
			const tr = [...document.querySelectorAll("#flows tbody tr")].find((tr) => {
			const u = tr.querySelector("td.url"); return u && pathOf(u.title) === "` + path + `" &&
			tr.querySelector("td.status-2"); }); return tr ? tr.dataset.id : ""; })()`
		if err := p.WaitFor(ctx, "a "+path+" flow listed", find+` !== ""`); err != nil {
			t.Fatal(err)
		}
		p.Eval(ctx, find, &id)
		return id
	}
	open := func(id, what, cond string) {
		t.Helper()
		if err := p.Click(ctx, `#flows tbody tr[data-id="`+id+`"]`); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := p.WaitFor(wctx, what+" of flow "+id, `(() => { const d = document.getElementById("detail");
			return !d.hidden && d.dataset.id === "`+id+`" && (`+cond+`); })()`); err != nil {
			var html string
			p.Eval(ctx, `document.getElementById("detail").innerHTML.slice(0, 3000)`, &html)
			t.Errorf("%v; the detail:\n%s", err, html)
		}
	}
	open(newest("/img.png"), "the image", `(() => { const i = d.querySelector("img.body"); return !!i && i.complete && i.naturalWidth === 48; })()`)
	open(newest("/blob"), "the hex dump", `(() => { const h = d.querySelector("pre.hex"); return !!h && h.textContent.startsWith("00000000  00 07 0e 15"); })()`)
	jsonID := newest("/json")
	open(jsonID, "the JSON", `!!d.querySelector('.body-view[data-kind="json"] pre')`)
	var detail string
	p.Eval(ctx, `document.getElementById("detail").innerText`, &detail)
	for _, want := range []string{`"name": "item"`, "Cookie", "Set-Cookie", "Proxy-Authorization", "[REDACTED]"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the detail of flow %s lacks %q:\n%s", jsonID, want, detail)
		}
	}
	if strings.Contains(detail, "browser-secret") {
		t.Error("a credential shows in the detail")
	}
	p.Eval(ctx, `document.querySelector("section.list").scrollTop = 0`, nil)
	time.Sleep(300 * time.Millisecond)
	cdptest.SaveShot(t, ctx, p, filepath.Join(shots, "flows.png"))
	if err := p.Click(ctx, "#pause"); err != nil { // resume
		t.Fatal(err)
	}

	// Export HAR: a real download through the page's link.
	downloads := t.TempDir()
	if err := c.AllowDownloads(ctx, downloads); err != nil {
		t.Fatal(err)
	}
	if err := p.Click(ctx, "#har"); err != nil {
		t.Fatal(err)
	}
	har := cdptest.WaitForFile(t, ctx, downloads, ".har")
	m := decodeHAR(t, har)
	entries := m["log"].(map[string]any)["entries"].([]any)
	if len(entries) < 20 {
		t.Errorf("%d HAR entries", len(entries))
	}
	if bytes.Contains(har, []byte("browser-secret")) {
		t.Error("a credential in the HAR")
	}
	var shapes = map[string]bool{}
	for _, e := range entries {
		req := e.(map[string]any)["request"].(map[string]any)
		shapes[req["method"].(string)] = true
	}
	if !shapes["GET"] || !shapes["POST"] {
		t.Errorf("HAR methods %v", shapes)
	}
	c.CheckPages(t)
}
