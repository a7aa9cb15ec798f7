package flows

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
)

//go:embed static
var static embed.FS

// Defaults of [HandlerOptions].
const (
	DefaultListLimit     = 200
	DefaultStreamBuffer  = 256
	DefaultStateInterval = 5 * time.Second
)

// HandlerOptions configures [NewHandler]. Zero fields take the defaults.
type HandlerOptions struct {
	// ListLimit is how many flows GET /api/flows returns when the request
	// names no limit (DefaultListLimit).
	ListLimit int
	// StreamBuffer is each stream's subscription buffer, in flows
	// (DefaultStreamBuffer); a client that falls further behind misses
	// flows, and is told how many in its state events.
	StreamBuffer int
	// StateInterval is how often a stream sends the ring's state, which
	// also keeps idle connections alive (DefaultStateInterval).
	StateInterval time.Duration
}

// Handler serves the flow inspector on the admin listener:
//
//	GET  /flows                     the inspector page
//	GET  /ui/flows/…                its script and style sheets
//	GET  /api/flows                 flows as JSON, newest first: filters host, status, method, user, after, before, limit
//	GET  /api/flows/{id}            one flow with headers and rendered bodies
//	GET  /api/flows/stream          Server-Sent Events: "flow" per new flow (same filters), "state" now and then
//	POST /api/flows/pause           stop recording
//	POST /api/flows/resume          record again
//	POST /api/flows/clear           drop every flow
//	GET  /flows.har                 the flows the filters select, as HAR 1.2
//
// Put it behind adminui.Guard with the rest of the admin listener.
type Handler struct {
	ring *Ring
	opts HandlerOptions
	mux  *http.ServeMux

	done      chan struct{}
	closeOnce sync.Once
}

// NewHandler returns the inspector's handler for ring.
func NewHandler(ring *Ring, opts HandlerOptions) *Handler {
	if opts.ListLimit <= 0 {
		opts.ListLimit = DefaultListLimit
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = DefaultStreamBuffer
	}
	if opts.StateInterval <= 0 {
		opts.StateInterval = DefaultStateInterval
	}
	h := &Handler{ring: ring, opts: opts, mux: http.NewServeMux(), done: make(chan struct{})}
	own, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	h.mux.HandleFunc("GET /flows", h.page)
	h.mux.Handle("GET /ui/flows/", http.StripPrefix("/ui/flows/", adminui.FileServer(adminui.WithAssets(own))))
	h.mux.HandleFunc("GET /api/flows", h.list)
	h.mux.HandleFunc("GET /api/flows/stream", h.stream)
	h.mux.HandleFunc("GET /api/flows/{id}", h.detail)
	h.mux.HandleFunc("POST /api/flows/{action}", h.action)
	h.mux.HandleFunc("GET /flows.har", h.har)
	return h
}

// paths are the patterns Register registers: by path alone, so that the
// handler's own mux answers wrong methods with 405.
var paths = [...]string{"/flows", "/flows.har", "/ui/flows/", "/api/flows", "/api/flows/"}

// Register routes the inspector's paths on mux to h: /flows, /flows.har,
// /ui/flows/, /api/flows and /api/flows/.
func (h *Handler) Register(mux *http.ServeMux) {
	for _, p := range paths {
		mux.Handle(p, h)
	}
}

// ServeHTTP serves the routes listed on [Handler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Close ends the open streams, so that the admin server's Shutdown need not
// wait for their clients to leave (register it with
// http.Server.RegisterOnShutdown). Later streams end at once.
func (h *Handler) Close() { h.closeOnce.Do(func() { close(h.done) }) }

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/flows.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	adminui.SetPageHeaders(w.Header())
	w.Write(b)
}

// summaryJSON is a flow in lists and streams.
type summaryJSON struct {
	ID           uint64      `json:"id"`
	Start        time.Time   `json:"start"`
	Method       string      `json:"method"`
	URL          string      `json:"url"`
	Host         string      `json:"host"`
	Proto        string      `json:"proto"`
	Status       int         `json:"status"`
	User         string      `json:"user"`
	Client       string      `json:"client"`
	Upstream     string      `json:"upstream"`
	BytesIn      int64       `json:"bytes_in"`
	BytesOut     int64       `json:"bytes_out"`
	Error        string      `json:"error"`
	Reason       string      `json:"reason"`
	Intercepted  bool        `json:"intercepted"`
	Tunnel       bool        `json:"tunnel"`
	Timings      timingsJSON `json:"timings"`
	RequestType  string      `json:"request_type"`
	ResponseType string      `json:"response_type"`
}

// timingsJSON are a flow's phases in milliseconds, 0 when not measured.
type timingsJSON struct {
	DNS       float64 `json:"dns_ms"`
	Connect   float64 `json:"connect_ms"`
	TLS       float64 `json:"tls_ms"`
	FirstByte float64 `json:"first_byte_ms"`
	Total     float64 `json:"total_ms"`
}

func summaryOf(f *Flow) summaryJSON {
	t := f.Timings
	return summaryJSON{
		ID: f.ID, Start: f.Start, Method: f.Method, URL: f.url(), Host: f.Host, Proto: f.Proto,
		Status: f.Status, User: f.User, Client: f.Client, Upstream: f.upstream(),
		BytesIn: f.BytesIn, BytesOut: f.BytesOut, Error: f.ErrorKind, Reason: f.ErrorReason,
		Intercepted: f.Intercepted, Tunnel: f.Tunnel,
		Timings:     timingsJSON{ms(t.DNS), ms(t.Connect), ms(t.TLS), ms(t.FirstByte), ms(t.Total)},
		RequestType: f.RequestBody.ContentType, ResponseType: f.ResponseBody.ContentType,
	}
}

// stateJSON is the ring's state, in lists and streams.
type stateJSON struct {
	Flows    int    `json:"flows"`
	Bytes    int64  `json:"bytes"`
	MaxFlows int    `json:"max_flows"`
	MaxBytes int64  `json:"max_bytes"`
	Added    uint64 `json:"added"`
	LastID   uint64 `json:"last_id"`
	Evicted  uint64 `json:"evicted"`
	Paused   bool   `json:"paused"`
	// Missed counts the flows this stream missed (streams only).
	Missed uint64 `json:"missed,omitempty"`
}

func (h *Handler) state() stateJSON {
	s := h.ring.Stats()
	return stateJSON{Flows: s.Flows, Bytes: s.Bytes, MaxFlows: s.MaxFlows, MaxBytes: s.MaxBytes,
		Added: s.Added, LastID: s.LastID, Evicted: s.Evicted, Paused: s.Paused}
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !r.URL.Query().Has("limit") {
		f.Limit = h.opts.ListLimit
	}
	// The state first: a page that streams the flows after its last_id
	// then misses none, and gets again at most those listed.
	state := h.state()
	flows := h.ring.Query(f)
	out := struct {
		Flows []summaryJSON `json:"flows"`
		State stateJSON     `json:"state"`
	}{Flows: make([]summaryJSON, len(flows)), State: state}
	for i, fl := range flows {
		out.Flows[i] = summaryOf(fl)
	}
	writeJSON(w, out)
}

// messageJSON is one side of a flow in its detail.
type messageJSON struct {
	Headers []harNameValue `json:"headers"`
	Body    Rendered       `json:"body"`
}

func (h *Handler) detail(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "want a flow ID", http.StatusBadRequest)
		return
	}
	f := h.ring.Get(id)
	if f == nil {
		http.Error(w, "no flow "+strconv.FormatUint(id, 10)+" (evicted or cleared?)", http.StatusNotFound)
		return
	}
	writeJSON(w, struct {
		summaryJSON
		Request  messageJSON `json:"request"`
		Response messageJSON `json:"response"`
	}{
		summaryJSON: summaryOf(f),
		Request:     messageJSON{harHeaders(f.RequestHeader), Render(f.RequestBody, f.RequestHeader, f.BytesIn)},
		Response:    messageJSON{harHeaders(f.ResponseHeader), Render(f.ResponseBody, f.ResponseHeader, f.BytesOut)},
	})
}

func (h *Handler) action(w http.ResponseWriter, r *http.Request) {
	switch r.PathValue("action") {
	case "pause":
		h.ring.Pause()
	case "resume":
		h.ring.Resume()
	case "clear":
		h.ring.Clear()
	default:
		http.NotFound(w, r)
		return
	}
	writeJSON(w, h.state())
}

func (h *Handler) har(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	flows := h.ring.Query(f)
	name := "fwdproxy-" + time.Now().UTC().Format("20060102T150405Z") + ".har"
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	WriteHAR(w, flows) // an error here is the client's: the status is sent
}

// stream sends the flows added from now on that match the request's
// filters as "flow" events whose id is the flow's ID. A reconnecting
// EventSource sends the last ID it saw (Last-Event-ID), and the flows
// since then that the ring still holds are sent first; so are those after
// the after parameter. A "state" event (stateJSON) comes first and then
// every StateInterval.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		f.AfterID = max(f.AfterID, last)
	}
	f.Limit = 0
	sub := h.ring.Subscribe(h.opts.StreamBuffer)
	defer sub.Close()
	sse, err := adminui.StartSSE(w)
	if err != nil {
		return
	}
	send := func(fl *Flow) error {
		b, err := json.Marshal(summaryOf(fl))
		if err != nil {
			return err
		}
		return sse.Event("flow", strconv.FormatUint(fl.ID, 10), b)
	}
	sendState := func() error {
		st := h.state()
		st.Missed = sub.Dropped()
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return sse.Event("state", "", b)
	}
	if err := sendState(); err != nil {
		return
	}
	lastSent := f.AfterID
	if f.AfterID != 0 {
		backlog := h.ring.Query(f)
		for _, fl := range slices.Backward(backlog) {
			if err := send(fl); err != nil {
				return
			}
			lastSent = fl.ID
		}
	}
	tick := time.NewTicker(h.opts.StateInterval)
	defer tick.Stop()
	for {
		select {
		case fl, ok := <-sub.C():
			if !ok {
				return
			}
			if fl.ID <= lastSent || !f.Match(fl) {
				continue
			}
			if err := send(fl); err != nil {
				return
			}
		case <-tick.C:
			if err := sendState(); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(append(b, '\n'))
}
