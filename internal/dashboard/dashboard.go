package dashboard

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Defaults of [Options].
const (
	DefaultInterval = time.Second
	DefaultHistory  = 900 // 15 minutes of seconds
	DefaultTop      = 10
	// DefaultTopCapacity is how many destinations the counter tracks to
	// show the top DefaultTop.
	DefaultTopCapacity = 64
	// DefaultTopHalfLife is how fast destinations' counts fade.
	DefaultTopHalfLife = time.Minute
)

// minuteWindow is how far back the "last minute" figures look.
const minuteWindow = time.Minute

// Options configures a [Dashboard]. Zero fields take the defaults.
type Options struct {
	// Interval is how often the Source is sampled (DefaultInterval).
	Interval time.Duration
	// History is how many samples the charts keep (DefaultHistory).
	History int
	// Top is how many destinations are shown (DefaultTop);
	// TopCapacity how many are tracked to find them
	// (DefaultTopCapacity, at least Top).
	Top, TopCapacity int
	// TopHalfLife is the half-life of destinations' counts
	// (DefaultTopHalfLife): the top shows the traffic of the last minute
	// or two rather than since the start.
	TopHalfLife time.Duration
}

// Dashboard samples a Source, keeps the history of its rates, counts the
// top destinations, and serves the dashboard page and its data (see
// [Dashboard.ServeHTTP]). Make it with [New], then Start it; Close it on
// shutdown.
type Dashboard struct {
	src  Source
	opts Options
	top  *TopK

	mu      sync.Mutex
	points  []Point // circular, oldest at head
	head    int
	recent  []reading // the readings of the last minute, oldest first
	last    reading
	hasLast bool
	snap    nowJSON // as of the last sample
	tick    []byte  // the last "tick" event's data
	notify  chan struct{}

	startOnce, closeOnce sync.Once
	stop, stopped        chan struct{}
	done                 chan struct{} // closed by Close: streams end
	mux                  *http.ServeMux
}

type reading struct {
	t time.Time
	s Sample
}

// New returns a dashboard over src. It samples nothing until Start.
func New(src Source, opts Options) *Dashboard {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Top <= 0 {
		opts.Top = DefaultTop
	}
	if opts.TopCapacity <= 0 {
		opts.TopCapacity = DefaultTopCapacity
	}
	opts.TopCapacity = max(opts.TopCapacity, opts.Top)
	if opts.TopHalfLife <= 0 {
		opts.TopHalfLife = DefaultTopHalfLife
	}
	d := &Dashboard{
		src:     src,
		opts:    opts,
		top:     NewTopK(opts.TopCapacity),
		points:  make([]Point, 0, opts.History),
		notify:  make(chan struct{}),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
	}
	d.snap = d.nowLocked(time.Now(), Sample{}, Point{})
	d.mux = d.routes()
	return d
}

// Start samples the source now and then every Interval, on a goroutine of
// its own, until Close. Calls after the first do nothing.
func (d *Dashboard) Start() {
	d.startOnce.Do(func() {
		go d.run()
	})
}

func (d *Dashboard) run() {
	defer close(d.stopped)
	t := time.NewTicker(d.opts.Interval)
	defer t.Stop()
	d.sample(time.Now())
	for {
		select {
		case now := <-t.C:
			d.sample(now)
		case <-d.stop:
			return
		}
	}
}

// Close stops sampling and ends the open streams (register it with the
// admin server's RegisterOnShutdown). It may be called more than once.
func (d *Dashboard) Close() {
	d.closeOnce.Do(func() {
		close(d.done)
		close(d.stop)
		started := true
		d.startOnce.Do(func() { started = false })
		if started {
			<-d.stopped
		}
	})
}

// Destination counts one request to host for the top destinations. The
// proxy calls it once per request (CONNECT included) with the
// destination's host, without the port when it is the scheme's default.
// It does not allocate once the host is tracked; see [TopK.Observe].
func (d *Dashboard) Destination(host string) { d.top.Observe(host) }

// Point is one sample's rates and gauges, as the charts plot them.
type Point struct {
	// Time is when the sample was taken.
	Time time.Time
	// Per second since the previous sample.
	Requests, Errors, Denials, BytesIn, BytesOut float64
	// Latency quantiles in milliseconds.
	P50, P95, P99 float64
	// Gauges.
	ActiveConnections, ActiveRequests, ActiveTunnels float64
}

// columns name the fields of a Point in the JSON history and ticks; the
// page plots them by these names.
var columns = []struct {
	name string
	get  func(*Point) float64
}{
	{"t", func(p *Point) float64 { return float64(p.Time.UnixMilli()) / 1000 }},
	{"requests", func(p *Point) float64 { return p.Requests }},
	{"errors", func(p *Point) float64 { return p.Errors }},
	{"denials", func(p *Point) float64 { return p.Denials }},
	{"bytes_in", func(p *Point) float64 { return p.BytesIn }},
	{"bytes_out", func(p *Point) float64 { return p.BytesOut }},
	{"p50", func(p *Point) float64 { return p.P50 }},
	{"p95", func(p *Point) float64 { return p.P95 }},
	{"p99", func(p *Point) float64 { return p.P99 }},
	{"active_connections", func(p *Point) float64 { return p.ActiveConnections }},
	{"active_requests", func(p *Point) float64 { return p.ActiveRequests }},
	{"active_tunnels", func(p *Point) float64 { return p.ActiveTunnels }},
}

// sample reads the source as of now and makes a point of it.
func (d *Dashboard) sample(now time.Time) {
	s := d.src.Sample()
	d.mu.Lock()
	defer d.mu.Unlock()
	var p Point
	if d.hasLast {
		dt := now.Sub(d.last.t).Seconds()
		if dt <= 0 {
			return
		}
		d.top.Decay(decayFactor(dt, d.opts.TopHalfLife.Seconds()))
		prev := &d.last.s
		rate := func(cur, old uint64) float64 {
			if cur < old { // the counter was reset
				return 0
			}
			return float64(cur-old) / dt
		}
		p = Point{
			Time:              now,
			Requests:          rate(s.Requests, prev.Requests),
			Errors:            rate(sum(s.Errors), sum(prev.Errors)),
			Denials:           rate(sum(s.Denials), sum(prev.Denials)),
			BytesIn:           rate(s.BytesIn, prev.BytesIn),
			BytesOut:          rate(s.BytesOut, prev.BytesOut),
			P50:               msOf(s.P50),
			P95:               msOf(s.P95),
			P99:               msOf(s.P99),
			ActiveConnections: float64(s.ActiveConnections),
			ActiveRequests:    float64(s.ActiveRequests),
			ActiveTunnels:     float64(s.ActiveTunnels),
		}
		if len(d.points) < cap(d.points) {
			d.points = append(d.points, p)
		} else {
			d.points[d.head] = p
			d.head = (d.head + 1) % len(d.points)
		}
	}
	d.last, d.hasLast = reading{now, s}, true
	d.recent = append(d.recent, d.last)
	cut := 0
	for cut < len(d.recent)-1 && now.Sub(d.recent[cut+1].t) >= minuteWindow {
		cut++
	}
	d.recent = slices.Delete(d.recent, 0, cut)
	d.snap = d.nowLocked(now, s, p)
	tick := struct {
		Now   *nowJSON           `json:"now"`
		Point map[string]float64 `json:"point,omitempty"`
	}{Now: &d.snap}
	if !p.Time.IsZero() {
		tick.Point = make(map[string]float64, len(columns))
		for _, c := range columns {
			tick.Point[c.name] = c.get(&p)
		}
	}
	d.tick, _ = json.Marshal(tick) // plain data: cannot fail
	close(d.notify)
	d.notify = make(chan struct{})
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// nowJSON is the current state, as /api/stats and the stream send it.
type nowJSON struct {
	Time     time.Time `json:"time"`
	Interval float64   `json:"interval_s"`
	// Rates per second over the last interval.
	Rates struct {
		Requests float64 `json:"requests"`
		Errors   float64 `json:"errors"`
		Denials  float64 `json:"denials"`
		BytesIn  float64 `json:"bytes_in"`
		BytesOut float64 `json:"bytes_out"`
	} `json:"rates"`
	Totals struct {
		Requests uint64 `json:"requests"`
		Errors   uint64 `json:"errors"`
		Denials  uint64 `json:"denials"`
		BytesIn  uint64 `json:"bytes_in"`
		BytesOut uint64 `json:"bytes_out"`
	} `json:"totals"`
	Active struct {
		Connections int64 `json:"connections"`
		Requests    int64 `json:"requests"`
		Tunnels     int64 `json:"tunnels"`
	} `json:"active"`
	Latency struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	Errors  []countJSON `json:"errors"`
	Denials []countJSON `json:"denials"`
	DNS     ratioJSON   `json:"dns"`
	Pool    ratioJSON   `json:"pool"`
	Top     []topJSON   `json:"top"`
}

// countJSON is a count by kind or reason: since the start, and in the last
// minute.
type countJSON struct {
	Name       string `json:"name"`
	Total      uint64 `json:"total"`
	LastMinute uint64 `json:"last_minute"`
}

// ratioJSON is a hit (or reuse) ratio: the counts since the start, the
// ratio since the start and in the last minute (null without data).
type ratioJSON struct {
	Hits       uint64   `json:"hits"`
	Misses     uint64   `json:"misses"`
	Ratio      *float64 `json:"ratio"`
	LastMinute *float64 `json:"last_minute"`
}

// topJSON is a destination: its estimated requests per second and its
// share of all requests, both over the recent past (see TopHalfLife).
type topJSON struct {
	Host  string  `json:"host"`
	Rate  float64 `json:"rate"`
	Share float64 `json:"share"`
}

// nowLocked builds the current state from the reading s at now and its
// point p; d.mu is held and d.recent ends with s.
func (d *Dashboard) nowLocked(now time.Time, s Sample, p Point) nowJSON {
	var n nowJSON
	n.Time = now
	n.Interval = d.opts.Interval.Seconds()
	n.Rates.Requests, n.Rates.Errors, n.Rates.Denials = p.Requests, p.Errors, p.Denials
	n.Rates.BytesIn, n.Rates.BytesOut = p.BytesIn, p.BytesOut
	n.Totals.Requests, n.Totals.Errors, n.Totals.Denials = s.Requests, sum(s.Errors), sum(s.Denials)
	n.Totals.BytesIn, n.Totals.BytesOut = s.BytesIn, s.BytesOut
	n.Active.Connections, n.Active.Requests, n.Active.Tunnels = s.ActiveConnections, s.ActiveRequests, s.ActiveTunnels
	n.Latency.P50, n.Latency.P95, n.Latency.P99 = msOf(s.P50), msOf(s.P95), msOf(s.P99)
	old := s
	if len(d.recent) > 0 {
		old = d.recent[0].s
	}
	n.Errors = counts(s.Errors, old.Errors)
	n.Denials = counts(s.Denials, old.Denials)
	n.DNS = ratio(s.DNSHits, s.DNSMisses, old.DNSHits, old.DNSMisses)
	n.Pool = ratio(s.UpstreamReused, s.UpstreamNew, old.UpstreamReused, old.UpstreamNew)
	top, total := d.top.Top(d.opts.Top)
	n.Top = make([]topJSON, 0, len(top))
	perSecond := 1 - decayFactor(1, d.opts.TopHalfLife.Seconds())
	for _, e := range top {
		share := 0.0
		if total > 0 {
			share = min(e.Count/total, 1)
		}
		n.Top = append(n.Top, topJSON{Host: e.Key, Rate: e.Count * perSecond, Share: share})
	}
	return n
}

// counts lists the counts of cur by name, largest first, with how much
// each grew since old.
func counts(cur, old map[string]uint64) []countJSON {
	out := make([]countJSON, 0, len(cur))
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		c := countJSON{Name: name, Total: cur[name]}
		if o := old[name]; c.Total >= o {
			c.LastMinute = c.Total - o
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b countJSON) int { return cmp.Compare(b.Total, a.Total) })
	return out
}

func ratio(hits, misses, oldHits, oldMisses uint64) ratioJSON {
	r := ratioJSON{Hits: hits, Misses: misses}
	if hits+misses > 0 {
		v := float64(hits) / float64(hits+misses)
		r.Ratio = &v
	}
	if hits >= oldHits && misses >= oldMisses {
		if dh, dm := hits-oldHits, misses-oldMisses; dh+dm > 0 {
			v := float64(dh) / float64(dh+dm)
			r.LastMinute = &v
		}
	}
	return r
}

// statsJSON is /api/stats: the current state and the history, one array
// per column of a Point ("t" in Unix seconds, rates per second, latencies
// in milliseconds), oldest first.
type statsJSON struct {
	Now     *nowJSON             `json:"now"`
	History map[string][]float64 `json:"history"`
}

// stats returns /api/stats's body.
func (d *Dashboard) stats() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	hist := make(map[string][]float64, len(columns))
	n := len(d.points)
	for _, c := range columns {
		col := make([]float64, n)
		for i := range n {
			col[i] = c.get(&d.points[(d.head+i)%n])
		}
		hist[c.name] = col
	}
	now := d.snap
	b, _ := json.Marshal(statsJSON{Now: &now, History: hist}) // plain data: cannot fail
	return b
}
