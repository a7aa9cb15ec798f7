package flows

import (
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// newFlow returns a flow to example.com with a few headers and bodies of
// the given sizes.
func newFlow(i int, reqBody, respBody int) *Flow {
	return &Flow{
		Start:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Method: http.MethodGet,
		URL:    "http://example.com/item/" + strconv.Itoa(i) + "?q=1",
		Host:   "example.com",
		Proto:  "HTTP/1.1",
		Status: http.StatusOK,
		Client: "127.0.0.1:50000",
		RequestHeader: http.Header{
			"User-Agent": {"test"},
			"Accept":     {"*/*"},
		},
		ResponseHeader: http.Header{
			"Content-Type": {"text/plain; charset=utf-8"},
		},
		RequestBody:  Body{Prefix: make([]byte, reqBody)},
		ResponseBody: Body{Prefix: make([]byte, respBody)},
		BytesIn:      int64(reqBody),
		BytesOut:     int64(respBody),
		Timings:      Timings{DNS: time.Millisecond, Connect: 2 * time.Millisecond, FirstByte: 10 * time.Millisecond, Total: 12 * time.Millisecond},
	}
}

func ids(fs []*Flow) []uint64 {
	out := make([]uint64, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

func TestRingCountCap(t *testing.T) {
	r := NewRing(Options{MaxFlows: 3})
	for i := range 5 {
		if id := r.Add(newFlow(i, 0, 10)); id != uint64(i+1) {
			t.Fatalf("Add #%d = ID %d, want %d", i, id, i+1)
		}
	}
	if got := ids(r.Query(Filter{})); !slices.Equal(got, []uint64{5, 4, 3}) {
		t.Errorf("Query = %v, want [5 4 3] (newest first, the 2 oldest evicted)", got)
	}
	st := r.Stats()
	if st.Flows != 3 || st.Added != 5 || st.LastID != 5 || st.Evicted != 2 || st.MaxFlows != 3 {
		t.Errorf("Stats = %+v", st)
	}
	if r.Get(2) != nil || r.Get(3) == nil || r.Get(5) == nil || r.Get(6) != nil {
		t.Errorf("Get sees evicted or missing flows wrongly")
	}
	var sum int64
	for _, f := range r.Query(Filter{}) {
		sum += f.Size()
	}
	if st.Bytes != sum {
		t.Errorf("Stats.Bytes = %d, want the sum of the sizes held, %d", st.Bytes, sum)
	}
}

func TestRingByteCap(t *testing.T) {
	one := newFlow(0, 0, 10_000)
	redactFlow(one)
	fillContentTypes(one)
	size := one.Size()
	if size < 10_000 || size > 11_000 {
		t.Fatalf("Size of a flow with a 10,000-byte body = %d: should count the body and a little more", size)
	}
	r := NewRing(Options{MaxFlows: 100, MaxBytes: 3*size + size/2})
	for i := range 10 {
		r.Add(newFlow(i, 0, 10_000))
		if st := r.Stats(); st.Bytes > 3*size+size/2 {
			t.Fatalf("after %d adds Bytes = %d over the cap %d", i+1, st.Bytes, 3*size+size/2)
		}
	}
	if got := ids(r.Query(Filter{})); !slices.Equal(got, []uint64{10, 9, 8}) {
		t.Errorf("Query = %v, want the 3 newest that fit", got)
	}
	// A small flow fits beside them without evicting.
	r.Add(newFlow(10, 0, 10))
	if st := r.Stats(); st.Flows != 4 || st.Evicted != 7 {
		t.Errorf("after a small flow: %+v, want 4 flows and 7 evictions", st)
	}
}

func TestRingTooLarge(t *testing.T) {
	r := NewRing(Options{MaxBytes: 4096, MaxBodyBytes: 1 << 20})
	r.Add(newFlow(0, 0, 10))
	// Bodies too large for the cap: kept without them, evicting the rest.
	id := r.Add(newFlow(1, 3000, 3000))
	f := r.Get(id)
	if f == nil || f.RequestBody.Prefix != nil || f.ResponseBody.Prefix != nil {
		t.Fatalf("a flow whose bodies exceed MaxBytes should be kept without them: %+v", f)
	}
	// Headers alone too large: dropped.
	big := newFlow(2, 0, 0)
	big.RequestHeader["X-Big"] = []string{string(make([]byte, 5000))}
	if id := r.Add(big); id != 0 {
		t.Errorf("a flow larger than MaxBytes without bodies was kept as %d", id)
	}
	st := r.Stats()
	if st.Stripped != 1 || st.Dropped != 1 || st.Bytes > 4096 {
		t.Errorf("Stats = %+v, want 1 stripped, 1 dropped, at most 4096 bytes", st)
	}
}

func TestRingClipsBodies(t *testing.T) {
	r := NewRing(Options{MaxBodyBytes: 100})
	if r.MaxBodyBytes() != 100 {
		t.Fatalf("MaxBodyBytes = %d", r.MaxBodyBytes())
	}
	f := r.Get(r.Add(newFlow(0, 50, 1000)))
	if len(f.RequestBody.Prefix) != 50 || len(f.ResponseBody.Prefix) != 100 || cap(f.ResponseBody.Prefix) > 128 {
		t.Errorf("prefixes %d and %d (cap %d), want 50 and 100, not holding the 1000-byte array",
			len(f.RequestBody.Prefix), len(f.ResponseBody.Prefix), cap(f.ResponseBody.Prefix))
	}
	if f.ResponseBody.ContentType != "text/plain; charset=utf-8" {
		t.Errorf("response content type %q, want it from the header", f.ResponseBody.ContentType)
	}
}

func TestRingRedacts(t *testing.T) {
	r := NewRing(Options{})
	f := newFlow(0, 0, 0)
	f.URL = "http://user:secret@example.com/x"
	f.RequestHeader["Authorization"] = []string{"Bearer abc"}
	f.RequestHeader["Proxy-Authorization"] = []string{"Basic dXNlcjpwdw=="}
	f.RequestHeader["Cookie"] = []string{"a=1", "b=2"}
	f.ResponseHeader["Set-Cookie"] = []string{"sid=xyz; HttpOnly"}
	given := f.ResponseHeader
	plain := newFlow(0, 0, 0)
	plainHeader := plain.RequestHeader
	r.Add(f)
	r.Add(plain)
	got := r.Get(1)
	// The maps given are left alone (a server may still be sending them);
	// a header without credentials is read back as it was.
	if v := given["Set-Cookie"][0]; v != "sid=xyz; HttpOnly" {
		t.Errorf("the response header given was changed: Set-Cookie %q", v)
	}
	if p := r.Get(2); !reflect.DeepEqual(p.RequestHeader, plainHeader) {
		t.Errorf("a header without credentials read back as %v, want %v", p.RequestHeader, plainHeader)
	}
	for _, h := range []struct {
		hdr  http.Header
		name string
		n    int
	}{
		{got.RequestHeader, "Authorization", 1},
		{got.RequestHeader, "Proxy-Authorization", 1},
		{got.RequestHeader, "Cookie", 2},
		{got.ResponseHeader, "Set-Cookie", 1},
	} {
		vs := h.hdr[h.name]
		if len(vs) != h.n {
			t.Errorf("%s has %d values, want %d kept", h.name, len(vs), h.n)
		}
		for _, v := range vs {
			if v != redact.Redacted {
				t.Errorf("%s = %q, want %q", h.name, v, redact.Redacted)
			}
		}
	}
	if got.RequestHeader.Get("User-Agent") != "test" {
		t.Errorf("User-Agent changed: %q", got.RequestHeader.Get("User-Agent"))
	}
	if got.URL != "http://user:xxxxx@example.com/x" {
		t.Errorf("URL = %q, want the password replaced", got.URL)
	}
	// A RawURL, made a string when read, is redacted too.
	raw := newFlow(0, 0, 0)
	raw.URL, raw.RawURL = "", &url.URL{Scheme: "http", User: url.UserPassword("u", "secret"), Host: "example.com", Path: "/y"}
	r.Add(raw)
	if got := r.Get(3); got.url() != "http://u:xxxxx@example.com/y" {
		t.Errorf("RawURL read as %q, want the password replaced", got.url())
	}
	plainRaw := newFlow(0, 0, 0)
	plainRaw.URL, plainRaw.RawURL = "", &url.URL{Scheme: "http", Host: "example.com", Path: "/z", RawQuery: "q=1"}
	r.Add(plainRaw)
	if got := r.Get(4); got.url() != "http://example.com/z?q=1" || got.URL != "" {
		t.Errorf("RawURL read as %q (URL %q): want it made when read", got.url(), got.URL)
	}
}

func TestRingQuery(t *testing.T) {
	r := NewRing(Options{})
	add := func(host, method, user string, status int, errKind string) {
		f := newFlow(0, 0, 0)
		f.Host, f.Method, f.User, f.Status, f.ErrorKind = host, method, user, status, errKind
		r.Add(f)
	}
	add("api.example.com:443", "GET", "alice", 200, "")        // 1
	add("cdn.example.net", "GET", "bob", 404, "")              // 2
	add("API.Example.com", "POST", "alice", 201, "")           // 3
	add("other.org", "CONNECT", "", 0, "upstream_timeout")     // 4
	add("api.example.com", "GET", "alice", 503, "unavailable") // 5
	add("api.example.com", "DELETE", "carol", 403, "forbidden")
	for _, tc := range []struct {
		q    string
		want []uint64
	}{
		{"", []uint64{6, 5, 4, 3, 2, 1}},
		{"host=example.com", []uint64{6, 5, 3, 1}},
		{"host=example", []uint64{6, 5, 3, 2, 1}},
		{"host=api.EXAMPLE", []uint64{6, 5, 3, 1}},
		{"status=4xx", []uint64{6, 2}},
		{"status=404", []uint64{2}},
		{"status=2XX", []uint64{3, 1}},
		{"status=0", []uint64{4}},
		{"status=error", []uint64{6, 5, 4}},
		{"method=get", []uint64{5, 2, 1}},
		{"user=alice", []uint64{5, 3, 1}},
		{"user=alice&method=GET&host=api", []uint64{5, 1}},
		{"limit=2", []uint64{6, 5}},
		{"after=4", []uint64{6, 5}},
		{"before=3", []uint64{2, 1}},
		{"after=1&before=6&limit=2&host=api", []uint64{5, 3}},
	} {
		f, err := ParseFilter(mustQuery(t, tc.q))
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tc.q, err)
		}
		if got := ids(r.Query(f)); !slices.Equal(got, tc.want) {
			t.Errorf("Query(%q) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

func TestRingClearPause(t *testing.T) {
	r := NewRing(Options{})
	r.Add(newFlow(0, 0, 0))
	r.Add(newFlow(1, 0, 0))
	r.Clear()
	if st := r.Stats(); st.Flows != 0 || st.Bytes != 0 || len(r.Query(Filter{})) != 0 || r.Get(1) != nil {
		t.Fatalf("after Clear: %+v", st)
	}
	if !r.Recording() {
		t.Fatal("a new ring does not record")
	}
	r.Pause()
	if r.Recording() || r.Add(newFlow(2, 0, 0)) != 0 || r.Stats().Flows != 0 || !r.Stats().Paused {
		t.Fatal("a paused ring recorded")
	}
	r.Resume()
	if id := r.Add(newFlow(3, 0, 0)); id != 3 {
		t.Errorf("after Clear and Resume Add = %d, want 3 (IDs keep growing)", id)
	}
}

func TestSubscribe(t *testing.T) {
	r := NewRing(Options{})
	s := r.Subscribe(2)
	defer s.Close()
	for i := range 5 {
		r.Add(newFlow(i, 0, 0))
	}
	if got := []uint64{(<-s.C()).ID, (<-s.C()).ID}; !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("received %v, want [1 2]", got)
	}
	if s.Dropped() != 3 {
		t.Errorf("Dropped = %d, want 3: the buffer held 2 of 5", s.Dropped())
	}
	r.Add(newFlow(5, 0, 0))
	if f := <-s.C(); f.ID != 6 {
		t.Errorf("after draining received %d, want 6", f.ID)
	}
	s.Close()
	s.Close()
	if _, ok := <-s.C(); ok {
		t.Error("channel open after Close")
	}
	r.Add(newFlow(6, 0, 0)) // no send on a closed channel
	if len(r.subs) != 0 {
		t.Errorf("%d subscriptions left after Close", len(r.subs))
	}
}

func TestRingConcurrent(t *testing.T) {
	r := NewRing(Options{MaxFlows: 50})
	s := r.Subscribe(10)
	var readers sync.WaitGroup
	readers.Go(func() {
		for range s.C() {
		}
	})
	var writers sync.WaitGroup
	for g := range 4 {
		writers.Go(func() {
			for i := range 200 {
				r.Add(newFlow(g*1000+i, 10, 100))
				if i%10 == 0 {
					r.Query(Filter{Host: "example", Limit: 5})
					r.Get(uint64(i))
				}
			}
		})
	}
	writers.Wait()
	s.Close()
	readers.Wait()
	if st := r.Stats(); st.Added != 800 || st.Flows != 50 {
		t.Errorf("Stats = %+v, want 800 added and 50 held", st)
	}
	if got := ids(r.Query(Filter{})); got[0] != 800 || got[49] != 751 {
		t.Errorf("IDs held %v…%v, want 800…751", got[0], got[49])
	}
}

// TestAddAllocs checks that recording costs one allocation, the packed
// flow, and with a subscriber one more, the copy it is sent.
func TestAddAllocs(t *testing.T) {
	r := NewRing(Options{MaxFlows: 100})
	flows := make([]*Flow, 0, 2000)
	for i := range cap(flows) {
		flows = append(flows, newFlow(i, 10, 100))
	}
	next := 0
	add := func() {
		r.Add(flows[next])
		next++
	}
	if n := testing.AllocsPerRun(500, add); n != 1 {
		t.Errorf("Add without subscribers: %v allocations, want 1", n)
	}
	s := r.Subscribe(1)
	defer s.Close()
	if n := testing.AllocsPerRun(500, add); n != 2 {
		t.Errorf("Add with a subscriber: %v allocations, want 2", n)
	}
}

// TestRingKeepsFewObjects checks what the garbage collector finds of a
// kept flow: one object without pointers (its packed bytes), not the
// dozen a Flow with its header maps, value slices and strings would be,
// which every GC cycle would mark again for as long as the ring holds it.
func TestRingKeepsFewObjects(t *testing.T) {
	const n = 1000
	r := NewRing(Options{MaxFlows: n})
	objects := func() uint64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/heap/objects:objects"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := objects()
	for i := range n {
		f := newFlow(i, 10, 100)
		f.RequestHeader["Cookie"] = []string{"a=1"} // redacted too
		f.ResponseHeader["Date"] = []string{time.Now().String()}
		r.Add(f) // only the ring keeps it
	}
	after := objects()
	per := float64(int64(after)-int64(before)) / n
	t.Logf("%.2f objects per kept flow", per)
	if per > 1.2 {
		t.Errorf("the ring keeps %.2f heap objects per flow, want 1 (its packed bytes)", per)
	}
	runtime.KeepAlive(r)
}
