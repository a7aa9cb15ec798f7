package dashboard

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
)

//go:embed static
var static embed.FS

func (d *Dashboard) routes() *http.ServeMux {
	own, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page)
	mux.Handle("GET /ui/dashboard/", http.StripPrefix("/ui/dashboard/", adminui.FileServer(adminui.WithAssets(own))))
	mux.HandleFunc("GET /api/stats", d.statsJSON)
	mux.HandleFunc("GET /api/stats/stream", d.stream)
	return mux
}

// paths are the patterns Register registers: by path alone, so that the
// dashboard's own mux answers wrong methods with 405. "/{$}" is the root
// alone: the dashboard does not take the paths that nothing else serves.
var paths = [...]string{"/{$}", "/ui/dashboard/", "/api/stats", "/api/stats/stream"}

// Register routes the dashboard's paths on mux to d: / (the root alone),
// /ui/dashboard/, /api/stats and /api/stats/stream.
func (d *Dashboard) Register(mux *http.ServeMux) {
	for _, p := range paths {
		mux.Handle(p, d)
	}
}

// ServeHTTP serves the dashboard:
//
//	GET /                    the page
//	GET /ui/dashboard/…      its script, style sheets and uPlot
//	GET /api/stats           the current state and the history (statsJSON)
//	GET /api/stats/stream    Server-Sent Events: "snapshot" (as /api/stats) first, then "tick" every sample
//
// Put it behind adminui.Guard with the rest of the admin listener.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/dashboard.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	adminui.SetPageHeaders(w.Header())
	w.Write(b)
}

func (d *Dashboard) statsJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(append(d.stats(), '\n'))
}

// stream sends a "snapshot" event (the body of /api/stats) and then a
// "tick" event ({"now": …, "point": {column: value}}) after each sample.
// A client too slow for a sample gets the latest one next: it misses a
// point rather than holding the sampler.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request) {
	sse, err := adminui.StartSSE(w)
	if err != nil {
		return
	}
	d.mu.Lock()
	wait := d.notify
	d.mu.Unlock()
	if sse.Event("snapshot", "", d.stats()) != nil {
		return
	}
	for {
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		}
		var data []byte
		d.mu.Lock()
		wait, data = d.notify, d.tick
		d.mu.Unlock()
		if sse.Event("tick", "", data) != nil {
			return
		}
	}
}
