package dashboard

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeSource is a Source whose sample the test sets.
type fakeSource struct {
	mu sync.Mutex
	s  Sample
}

func (f *fakeSource) Sample() Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Errors = maps.Clone(f.s.Errors)
	s.Denials = maps.Clone(f.s.Denials)
	return s
}

func (f *fakeSource) update(fn func(*Sample)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.s)
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func (d *Dashboard) now() nowJSON {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap
}

func TestRates(t *testing.T) {
	src := &fakeSource{s: Sample{Requests: 100, Errors: map[string]uint64{"upstream": 5}, BytesIn: 1000, BytesOut: 5000}}
	d := New(src, Options{})
	defer d.Close()
	d.sample(t0)
	if len(d.points) != 0 {
		t.Fatalf("the first sample made a point: rates need two")
	}
	src.update(func(s *Sample) {
		s.Requests += 20
		s.Errors["upstream"] += 2
		s.Errors["forbidden"] = 4
		s.Denials = map[string]uint64{"forbidden": 4}
		s.BytesIn += 2000
		s.BytesOut += 10000
		s.ActiveConnections, s.ActiveRequests, s.ActiveTunnels = 7, 3, 1
		s.P50, s.P95, s.P99 = 1500*time.Microsecond, 20*time.Millisecond, 250*time.Millisecond
		s.DNSHits, s.DNSMisses = 9, 1
		s.UpstreamNew, s.UpstreamReused = 1, 3
	})
	d.sample(t0.Add(2 * time.Second))
	p := d.points[0]
	want := Point{Time: t0.Add(2 * time.Second), Requests: 10, Errors: 3, Denials: 2, BytesIn: 1000, BytesOut: 5000,
		P50: 1.5, P95: 20, P99: 250, ActiveConnections: 7, ActiveRequests: 3, ActiveTunnels: 1}
	if p != want {
		t.Errorf("point %+v\nwant  %+v", p, want)
	}
	n := d.now()
	if n.Rates.Requests != 10 || n.Totals.Requests != 120 || n.Totals.Errors != 11 || n.Active.Connections != 7 || n.Latency.P99 != 250 {
		t.Errorf("now %+v", n)
	}
	wantErrs := []countJSON{{"upstream", 7, 2}, {"forbidden", 4, 4}}
	if !slices.Equal(n.Errors, wantErrs) {
		t.Errorf("errors %v, want %v (largest first, grown since the oldest reading)", n.Errors, wantErrs)
	}
	if *n.DNS.Ratio != 0.9 || *n.DNS.LastMinute != 0.9 || *n.Pool.Ratio != 0.75 || n.Pool.Hits != 3 {
		t.Errorf("dns %+v pool %+v", n.DNS, n.Pool)
	}

	// A counter that goes back (a new proxy behind the source) gives 0,
	// not a huge rate.
	src.update(func(s *Sample) { s.Requests = 5 })
	d.sample(t0.Add(3 * time.Second))
	if p := d.points[1]; p.Requests != 0 {
		t.Errorf("after a reset %v req/s, want 0", p.Requests)
	}
	// A clock that stands still adds nothing.
	d.sample(t0.Add(3 * time.Second))
	if len(d.points) != 2 {
		t.Errorf("%d points after a sample at the same time, want 2", len(d.points))
	}
}

func TestLastMinute(t *testing.T) {
	src := &fakeSource{s: Sample{Errors: map[string]uint64{"loop": 10}, DNSHits: 100}}
	d := New(src, Options{})
	defer d.Close()
	for i := range 120 {
		if i == 100 {
			src.update(func(s *Sample) { s.Errors["loop"] = 13 })
		}
		d.sample(t0.Add(time.Duration(i) * time.Second))
	}
	n := d.now()
	if n.Errors[0] != (countJSON{"loop", 13, 3}) {
		t.Errorf("errors %v, want 3 in the last minute", n.Errors)
	}
	if n.DNS.LastMinute != nil || *n.DNS.Ratio != 1 {
		t.Errorf("dns %+v: no lookups in the last minute is null, the ratio since the start 1", n.DNS)
	}
	if len(d.recent) > 62 {
		t.Errorf("%d readings kept for the last minute", len(d.recent))
	}
}

func TestHistoryCap(t *testing.T) {
	src := &fakeSource{}
	d := New(src, Options{History: 5})
	defer d.Close()
	for i := range 9 {
		src.update(func(s *Sample) { s.Requests = uint64(i * i) })
		d.sample(t0.Add(time.Duration(i) * time.Second))
	}
	var st statsJSON
	if err := json.Unmarshal(d.stats(), &st); err != nil {
		t.Fatal(err)
	}
	ts, reqs := st.History["t"], st.History["requests"]
	if len(ts) != 5 || ts[0] != float64(t0.Unix()+4) || ts[4] != float64(t0.Unix()+8) {
		t.Errorf("t = %v, want the 5 latest seconds, oldest first", ts)
	}
	if !slices.Equal(reqs, []float64{7, 9, 11, 13, 15}) {
		t.Errorf("requests = %v", reqs)
	}
	if DefaultHistory != 15*60 {
		t.Errorf("DefaultHistory %d is not 15 minutes of seconds", DefaultHistory)
	}
}

func TestTopDestinations(t *testing.T) {
	src := &fakeSource{}
	d := New(src, Options{Top: 2})
	defer d.Close()
	d.sample(t0)
	for range 30 {
		d.Destination("a.example")
	}
	for range 10 {
		d.Destination("b.example")
	}
	d.Destination("c.example")
	d.sample(t0.Add(time.Second))
	top := d.now().Top
	if len(top) != 2 || top[0].Host != "a.example" || top[1].Host != "b.example" {
		t.Fatalf("top %v", top)
	}
	if s := top[0].Share; s < 0.73 || s > 0.74 {
		t.Errorf("a.example share %v, want 30/41", s)
	}
	if r := top[0].Rate; r < 0.3 || r > 0.4 {
		// 30 requests decayed by one second, times (1-f): about 0.34.
		t.Errorf("a.example rate %v", r)
	}
}

func TestStartClose(t *testing.T) {
	src := &fakeSource{}
	d := New(src, Options{Interval: 5 * time.Millisecond})
	d.Start()
	d.Start()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.mu.Lock()
		n := len(d.points)
		d.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no points after 5 s")
		}
		src.update(func(s *Sample) { s.Requests++ })
		time.Sleep(5 * time.Millisecond)
	}
	d.Close()
	d.Close()
	New(src, Options{}).Close() // never started
}
