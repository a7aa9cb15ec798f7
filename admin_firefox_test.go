package fwdproxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// firefoxPath is the Firefox the browser tests run: $FWDPROXY_FIREFOX, else
// firefox-esr (Debian's, which .ci/run installs) or firefox on PATH.
func firefoxPath() string {
	if p := os.Getenv("FWDPROXY_FIREFOX"); p != "" {
		return p
	}
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// firefoxPrefs make a test profile: popups allowed (the harness opens the
// admin pages in windows of their own, which it can read as they are of
// its origin), and nothing of Firefox's own sent anywhere: no updates,
// telemetry, safe browsing, captive-portal or connectivity checks, DNS over
// HTTPS or prefetching, and every request but those to loopback addresses
// (which Firefox never proxies) sent to the proxy at %PROXY%, the test's
// listener that refuses them.
const firefoxPrefs = `user_pref("dom.disable_open_during_load", false);
user_pref("browser.link.open_newwindow", 2);
user_pref("network.proxy.type", 1);
user_pref("network.proxy.http", "127.0.0.1");
user_pref("network.proxy.http_port", %PORT%);
user_pref("network.proxy.ssl", "127.0.0.1");
user_pref("network.proxy.ssl_port", %PORT%);
user_pref("network.proxy.share_proxy_settings", true);
user_pref("network.proxy.socks_remote_dns", true);
user_pref("network.trr.mode", 5);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("telemetry.fog.test.localhost_port", -1);
user_pref("toolkit.telemetry.newProfilePing.enabled", false);
user_pref("toolkit.telemetry.firstShutdownPing.enabled", false);
user_pref("toolkit.telemetry.shutdownPingSender.enabled", false);
user_pref("toolkit.telemetry.archive.enabled", false);
user_pref("toolkit.telemetry.server", "http://127.0.0.1:%PORT%/telemetry-dummy/");
user_pref("dom.push.connection.enabled", false);
user_pref("services.settings.server", "http://127.0.0.1:%PORT%/remote-settings-dummy/v1");
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.newtabpage.activity-stream.feeds.topsites", false);
user_pref("browser.newtabpage.activity-stream.feeds.section.topstories", false);
user_pref("browser.newtabpage.activity-stream.showSponsoredTopSites", false);
user_pref("browser.newtabpage.activity-stream.telemetry", false);
user_pref("browser.topsites.contile.enabled", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("browser.region.network.url", "");
user_pref("geo.provider.network.url", "");
`

// firefox is a headless Firefox under test.
type firefox struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{} // closed when it has exited
	err    error         // how it exited, once exited is closed
}

// startFirefox starts a headless Firefox at path with a fresh profile on
// url, and kills it (and the processes it started) with the test. It logs
// the requests Firefox tried to send elsewhere than loopback, all refused.
func startFirefox(t *testing.T, path, url string) *firefox {
	t.Helper()
	refused := refusingProxy(t)
	profile := t.TempDir()
	_, port, _ := net.SplitHostPort(refused.addr)
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(strings.ReplaceAll(firefoxPrefs, "%PORT%", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless", "--no-remote", "--profile", profile, "--window-size=1440,900", url)
	cmd.Env = append(os.Environ(), "MOZ_HEADLESS=1", "MOZ_CRASHREPORTER_DISABLE=1",
		"MOZ_REMOTE_SETTINGS_DEVTOOLS=1") // services.settings.server is honoured with it
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its content processes too, killed as a group
	ff := &firefox{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = ff.stderr
	cmd.Stderr = ff.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		ff.err = cmd.Wait()
		close(ff.exited)
	}()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-ff.exited
		// The content processes die with the group; wait for them to be
		// gone before the profile is removed.
		for range 50 {
			if syscall.Kill(-pgid, 0) != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if r := refused.requests(); len(r) > 0 {
			t.Logf("Firefox's own requests, refused: %v", r)
		}
	})
	return ff
}

// refused is a listener standing for Firefox's proxy: it reads each
// request's first line and closes the connection.
type refused struct {
	addr string
	mu   sync.Mutex
	seen []string
}

// requests counts the requests refused by their method and target (its
// path, without the query, for a GET).
func (r *refused) requests() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := make(map[string]int)
	for _, s := range r.seen {
		s, _, _ = strings.Cut(s, "?")
		s = strings.TrimSuffix(s, " HTTP/1.1")
		if i := strings.Index(s, "/collections/"); i > 0 {
			s = s[:i] + "/…"
		}
		n[s]++
	}
	return n
}

func refusingProxy(t *testing.T) *refused {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &refused{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				r.mu.Lock()
				r.seen = append(r.seen, strings.TrimSpace(line))
				r.mu.Unlock()
			})
		}
	})
	return r
}

// lockedBuffer keeps the first 64 KiB written to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p[:min(len(p), 64<<10-len(b.buf))]...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// firefoxHarness is the page Firefox loads: it opens the dashboard (with
// the token, once) and then the flow inspector in windows of their own,
// of its origin, watches them for errors, exceptions and Content Security
// Policy violations, waits for what the test checks, reads it from their
// DOM and POSTs it to /firefox/result, as far as it got.
const firefoxHarness = `<!doctype html>
<meta charset="utf-8"><title>Firefox harness</title>
<script src="/firefox/harness.js"></script>
`

const firefoxHarnessJS = `"use strict";
(async () => {
  const out = { ua: navigator.userAgent, errors: [], step: "start" };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (what, f, ms = 30000) => {
    out.step = what;
    const t0 = Date.now();
    for (;;) {
      let v;
      try { v = f(); } catch (e) { v = undefined; }
      if (v) return v;
      if (Date.now() - t0 > ms) throw new Error("timed out waiting for " + what);
      await sleep(100);
    }
  };
  // open opens url in a window named name and listens to it: the Window
  // of a same-origin page replacing the initial about:blank is the same
  // object, so the listeners hear the page from its first script on.
  const open = (url, name) => {
    const w = window.open(url, name);
    if (!w) throw new Error("window.open(" + url + ") was blocked");
    const tag = name + ": ";
    w.addEventListener("error", (e) => out.errors.push(tag + "error: " + e.message + " at " + e.filename + ":" + e.lineno));
    w.addEventListener("unhandledrejection", (e) => out.errors.push(tag + "unhandled rejection: " + e.reason));
    w.addEventListener("securitypolicyviolation", (e) => out.errors.push(tag + "CSP violation: " + e.violatedDirective + " " + e.blockedURI));
    w.console.error = (...a) => out.errors.push(tag + "console.error: " + a.join(" "));
    return w;
  };
  const text = (e) => e.textContent.replace(/\s+/g, " ").trim();
  try {
    const token = new URLSearchParams(location.search).get("token");
    const dash = open("/?token=" + encodeURIComponent(token), "dashboard");
    const d = () => dash.document;
    await until("the dashboard", () => dash.location.pathname === "/" && dash.location.search === "" &&
      d().readyState === "complete" && d().getElementById("chart-rates"));
    const charts = ["chart-rates", "chart-latency", "chart-bytes", "chart-active"];
    await until("charts with non-zero data", () => charts.every((id) => {
      const e = d().getElementById(id);
      return e && e.querySelector("canvas") && Number(e.dataset.points) >= 3 && Number(e.dataset.max) > 0;
    }));
    out.charts = Object.fromEntries(charts.map((id) => {
      const e = d().getElementById(id);
      return [id, { points: Number(e.dataset.points), max: Number(e.dataset.max) }];
    }));
    const rows = (sel) => d().querySelectorAll(sel + " tbody tr:not(.none)").length;
    await until("tiles and lists", () => d().querySelector('#tile-requests [data-v="rate"]').textContent !== "–" &&
      rows("#top") >= 3 && rows("#errors") >= 1 && rows("#denials") >= 1 && d().getElementById("live").classList.contains("on"));
    out.tiles = Object.fromEntries([...d().querySelectorAll(".tile")].map((t) => [t.id, text(t)]));
    out.top = text(d().querySelector("#top tbody"));

    const fl = open("/flows", "flows");
    const f = () => fl.document;
    const trs = () => [...f().querySelectorAll("#flows tbody tr")];
    await until("flow rows", () => fl.location.pathname === "/flows" && f().readyState === "complete" && trs().length >= 10);
    const first = Number(trs()[0].dataset.id);
    await until("a live flow", () => Number(trs()[0].dataset.id) > first);
    out.live = true;
    f().getElementById("pause").click();
    await until("the ring paused", () => f().getElementById("pause").textContent === "Resume");
    await sleep(500); // the last frame of rows
    out.rows = trs().length;
    // The newest flow of a path, answered 2xx; a tunnel's row shows its
    // CONNECT target, which is no URL.
    const pathOf = (s) => { try { return new URL(s).pathname; } catch { return ""; } };
    const newest = (path) => until("a " + path + " flow listed", () => trs().find((tr) => {
      const u = tr.querySelector("td.url");
      return u && pathOf(u.title) === path && tr.querySelector("td.status-2");
    }));
    const detail = async (path, what, cond) => {
      const tr = await newest(path);
      const id = tr.dataset.id;
      tr.click();
      const dd = f().getElementById("detail");
      await until(what + " of flow " + id, () => !dd.hidden && dd.dataset.id === id && cond(dd), 10000);
      return dd;
    };
    const img = await detail("/img.png", "the image", (dd) => {
      const i = dd.querySelector("img.body");
      return i && i.complete && i.naturalWidth === 48;
    });
    out.image = img.querySelector("img.body").naturalWidth;
    const hex = await detail("/blob", "the hex dump", (dd) => dd.querySelector("pre.hex"));
    out.hex = hex.querySelector("pre.hex").textContent.split("\n")[0];
    const js = await detail("/json", "the JSON", (dd) => dd.querySelector('.body-view[data-kind="json"] pre'));
    out.detail = js.innerText;
    f().getElementById("pause").click();
    await until("the ring resumed", () => f().getElementById("pause").textContent === "Pause");
    await sleep(300); // errors of the last moments
    out.step = "done";
  } catch (e) {
    out.failed = String(e);
  }
  await fetch("/firefox/result", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(out) });
})();
`

// firefoxResult is what the harness found.
type firefoxResult struct {
	UA     string
	Step   string
	Failed string
	Errors []string
	Charts map[string]struct{ Points, Max float64 }
	Tiles  map[string]string
	Top    string
	Live   bool
	Rows   int
	Image  int
	Hex    string
	Detail string
}

// TestAdminFirefox runs the admin pages in headless Firefox while real
// traffic runs through a Proxy: entered with the token, the dashboard
// plots non-zero rates, latencies, bytes and connections and lists
// destinations, errors and denials; the flow inspector lists flows live,
// pauses, and shows an image, a hex dump and a JSON response with
// credentials redacted. Firefox no longer speaks the DevTools protocol, so
// the test serves, on the admin handler's origin, a harness page that
// opens the pages in windows of its own, reads their DOM and POSTs what it
// found. Errors, exceptions and Content Security Policy violations fail
// it.
func TestAdminFirefox(t *testing.T) {
	if testing.Short() {
		t.Skip("drives Firefox: not in -short")
	}
	path := firefoxPath()
	if _, err := os.Stat(path); path == "" || err != nil {
		t.Skipf("no Firefox %s (install Debian's firefox-esr, or set FWDPROXY_FIREFOX)", path)
	}
	s := newBrowserScene(t)
	const token = "firefox-token"
	a, err := s.tp.Proxy.NewAdmin(AdminOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan []byte, 1)
	mux := http.NewServeMux()
	mux.Handle("/", a)
	mux.HandleFunc("GET /firefox/harness", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, firefoxHarness)
	})
	mux.HandleFunc("GET /firefox/harness.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		io.WriteString(w, firefoxHarnessJS)
	})
	mux.HandleFunc("POST /firefox/result", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case results <- b:
		default:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		a.Close() // first: it ends the event streams that srv.Close would wait for
		srv.Close()
	})
	defer s.traffic(t, 3)()

	start := time.Now()
	ff := startFirefox(t, path, srv.URL+"/firefox/harness?token="+token)
	var b []byte
	select {
	case b = <-results:
	case <-ff.exited:
		t.Fatalf("Firefox exited (%v) before the harness reported; its output:\n%s", ff.err, ff.stderr)
	case <-time.After(2 * time.Minute):
		t.Fatalf("no report from the harness in 2 minutes; Firefox's output:\n%s", ff.stderr)
	}
	t.Logf("the harness reported after %v", time.Since(start).Round(time.Millisecond))
	var res firefoxResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("the harness's report: %v: %s", err, b)
	}
	t.Logf("%s; charts %v; tiles %v; %d rows; image %dpx; hex %q", res.UA, res.Charts, res.Tiles, res.Rows, res.Image, res.Hex)
	if res.Failed != "" || res.Step != "done" {
		t.Errorf("the harness stopped at %q: %s\nFirefox's output:\n%s", res.Step, res.Failed, ff.stderr)
	}
	if !strings.Contains(res.UA, "Firefox/") {
		t.Errorf("not Firefox: %s", res.UA)
	}
	for _, e := range res.Errors {
		t.Errorf("in Firefox: %s", e)
	}
	if res.Step != "done" {
		return
	}
	for id, c := range res.Charts {
		if c.Points < 3 || c.Max <= 0 {
			t.Errorf("chart %s: %v points, max %v", id, c.Points, c.Max)
		}
	}
	if len(res.Charts) != 4 {
		t.Errorf("charts %v", res.Charts)
	}
	if !strings.Contains(res.Top, "api.example.test") {
		t.Errorf("top destinations without api.example.test: %s", res.Top)
	}
	if rate := res.Tiles["tile-requests"]; rate == "" {
		t.Errorf("no requests tile: %v", res.Tiles)
	}
	if res.Rows < 10 || !res.Live || res.Image != 48 || !strings.HasPrefix(res.Hex, "00000000  00 07 0e 15") {
		t.Errorf("flows: %d rows, live %v, image %dpx wide, hex %q", res.Rows, res.Live, res.Image, res.Hex)
	}
	for _, want := range []string{`"name": "item"`, "Cookie", "Set-Cookie", "Proxy-Authorization", "[REDACTED]"} {
		if !strings.Contains(res.Detail, want) {
			t.Errorf("the JSON flow's detail lacks %q:\n%s", want, res.Detail)
		}
	}
	if strings.Contains(res.Detail, "browser-secret") {
		t.Error("a credential shows in the detail")
	}
}
