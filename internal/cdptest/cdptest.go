// Package cdptest drives a headless Chromium for the admin pages' browser
// tests: a minimal Chrome DevTools Protocol client over
// --remote-debugging-pipe, with no WebSocket, no port and no dependency.
package cdptest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Browser is a headless Chromium under test, driven over
// --remote-debugging-pipe: Chromium reads NUL-terminated JSON commands on
// its fd 3 and writes responses and events on its fd 4.
type Browser struct {
	t      testing.TB
	cmd    *exec.Cmd
	w      *os.File // our end of Chromium's fd 3
	r      *os.File // our end of Chromium's fd 4
	reader sync.WaitGroup

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan Message
	events  []Message // every event, for the test to inspect
	readErr error
}

// Message is a protocol message: a command, its response, or an event.
type Message struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Start starts a headless Chromium with a fresh profile and no
// network use of its own, and returns a client for it. It stops with the
// test.
func Start(t testing.TB, path string) *Browser {
	t.Helper()
	toChrome, ourW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ourR, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--disable-domain-reliability",
		"--disable-client-side-phishing-detection", "--disable-dev-shm-usage", "--no-default-browser-check",
		"--no-pings", "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
		"--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // fds 3 and 4
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	c := &Browser{t: t, cmd: cmd, w: ourW, r: ourR, pending: map[int64]chan Message{}}
	c.reader.Go(c.read)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Call(ctx, "", "Browser.close", nil, nil)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		c.w.Close()
		c.r.Close()
		c.reader.Wait()
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", stderr.String())
		}
	})
	return c
}

func (c *Browser) read() {
	br := bufio.NewReaderSize(c.r, 1<<20)
	for {
		b, err := br.ReadBytes(0)
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		var m Message
		if err := json.Unmarshal(b[:len(b)-1], &m); err != nil {
			continue
		}
		c.mu.Lock()
		if m.ID != 0 {
			if ch, ok := c.pending[m.ID]; ok {
				ch <- m
				delete(c.pending, m.ID)
			}
		} else {
			c.events = append(c.events, m)
		}
		c.mu.Unlock()
	}
}

// Call sends a command (to the browser when session is empty, else to
// that page session) and decodes its result into result, if not nil.
func (c *Browser) Call(ctx context.Context, session, method string, params, result any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if params == nil {
		raw = nil
	}
	ch := make(chan Message, 1)
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return c.readErr
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	msg, _ := json.Marshal(Message{ID: id, Method: method, Params: raw, SessionID: session})
	if _, err := c.w.Write(append(msg, 0)); err != nil {
		return err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: chromium went away", method)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// EventsNamed returns the events of the given method received so far.
func (c *Browser) EventsNamed(method string) []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Message
	for _, e := range c.events {
		if e.Method == method {
			out = append(out, e)
		}
	}
	return out
}

// Page is one tab, attached with a flat session.
type Page struct {
	c       *Browser
	session string
}

// NewPage opens a tab of width×height CSS pixels with the Runtime, Log and
// Page domains on.
func (c *Browser) NewPage(ctx context.Context, width, height int) (*Page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := c.Call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return nil, err
	}
	p := &Page{c: c, session: att.SessionID}
	for _, m := range []string{"Runtime.enable", "Log.enable", "Page.enable"} {
		if err := p.Call(ctx, m, nil, nil); err != nil {
			return nil, err
		}
	}
	err := p.Call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	return p, err
}

// Call sends a command to the tab.
func (p *Page) Call(ctx context.Context, method string, params, result any) error {
	return p.c.Call(ctx, p.session, method, params, result)
}

// Navigate loads url in the tab.
func (p *Page) Navigate(ctx context.Context, url string) error {
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.Call(ctx, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	if res.ErrorText != "" {
		return errors.New(res.ErrorText)
	}
	return nil
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into out.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.Call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// WaitFor evaluates cond until it is true.
func (p *Page) WaitFor(ctx context.Context, what, cond string) error {
	for {
		var ok bool
		err := p.Eval(ctx, cond, &ok)
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Click clicks, with real mouse events, the middle of the first element
// that selector matches.
func (p *Page) Click(ctx context.Context, selector string) error {
	var box struct{ X, Y float64 }
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return null;
		e.scrollIntoView({block: "center"}); const r = e.getBoundingClientRect();
		return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, selector)
	if err := p.Eval(ctx, expr, &box); err != nil {
		return err
	}
	if box.X == 0 && box.Y == 0 {
		return fmt.Errorf("click: nothing matches %s", selector)
	}
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		params := map[string]any{"type": typ, "x": box.X, "y": box.Y, "button": "left", "clickCount": 1}
		if typ == "mouseMoved" {
			params["button"] = "none"
		}
		if err := p.Call(ctx, "Input.dispatchMouseEvent", params, nil); err != nil {
			return err
		}
	}
	return nil
}

// Screenshot returns a PNG of the viewport.
func (p *Page) Screenshot(ctx context.Context) ([]byte, error) {
	var res struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	err := p.Call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &res)
	return res.Data, err
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p[:min(len(p), 64<<10-len(b.buf))]...)
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

var _ io.Writer = (*limitedBuffer)(nil)

// ChromiumPath is the browser the tests drive: $FWDPROXY_CHROMIUM, or
// Debian's chromium.
func ChromiumPath() string {
	if p := os.Getenv("FWDPROXY_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// StartOrSkip skips the test under -short or without Chromium, and
// otherwise starts it.
func StartOrSkip(t testing.TB) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("drives Chromium: not in -short")
	}
	path := ChromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no Chromium at %s (install Debian's chromium, or set FWDPROXY_CHROMIUM): %v", path, err)
	}
	return Start(t, path)
}

// SaveShot writes a screenshot of p to path.
func SaveShot(t testing.TB, ctx context.Context, p *Page, path string) {
	t.Helper()
	png, err := p.Screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// AllowDownloads makes the browser save downloads in dir.
func (c *Browser) AllowDownloads(ctx context.Context, dir string) error {
	return c.Call(ctx, "", "Browser.setDownloadBehavior", map[string]any{
		"behavior": "allow", "downloadPath": dir, "eventsEnabled": true}, nil)
}

// WaitForFile waits for a complete JSON file ending in suffix in dir (a
// download) and returns its content.
func WaitForFile(t testing.TB, ctx context.Context, dir, suffix string) []byte {
	t.Helper()
	for {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), suffix) {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err == nil && json.Valid(b) {
					return b
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no %s file in %s: %v", suffix, dir, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CheckPages fails the test for every exception, console error or warning,
// and log entry of level error or warning (a Content Security Policy
// violation, a failed load) that the pages reported.
func (c *Browser) CheckPages(t testing.TB) {
	t.Helper()
	for _, ev := range c.EventsNamed("Runtime.exceptionThrown") {
		t.Errorf("exception in a page: %s", ev.Params)
	}
	for _, ev := range c.EventsNamed("Runtime.consoleAPICalled") {
		var m struct{ Type string }
		json.Unmarshal(ev.Params, &m)
		if m.Type == "error" || m.Type == "warning" {
			t.Errorf("console %s: %s", m.Type, ev.Params)
		}
	}
	for _, ev := range c.EventsNamed("Log.entryAdded") {
		var m struct {
			Entry struct{ Level, Source, Text, URL string }
		}
		json.Unmarshal(ev.Params, &m)
		if m.Entry.Level == "error" || m.Entry.Level == "warning" {
			t.Errorf("log %s (%s): %s %s", m.Entry.Level, m.Entry.Source, m.Entry.Text, m.Entry.URL)
		}
	}
}
