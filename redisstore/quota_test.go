package redisstore

import (
	"github.com/fwdproxy/fwdproxy"

	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAddBytesWindow(t *testing.T) {
	r := startRedis(t)
	a, b := openStore(t, r), openStore(t, r)
	ctx := context.Background()
	const window = time.Second
	// Start right after a window begins, so that the adds share one.
	time.Sleep(time.Duration(window.Nanoseconds()-time.Now().UnixNano()%window.Nanoseconds()) + 5*time.Millisecond)
	used, reset, err := a.AddBytes(ctx, "alice", 1000, window)
	if err != nil || used != 1000 {
		t.Fatalf("AddBytes: %d, %v", used, err)
	}
	if reset.UnixMilli()%window.Milliseconds() != 0 || time.Until(reset) <= 0 || time.Until(reset) > window {
		t.Errorf("reset %v is not the end of the current %v window", reset, window)
	}
	trips := b.Stats().RoundTrips
	used2, reset2, err := b.AddBytes(ctx, "alice", 500, window)
	if err != nil || used2 != 1500 || !reset2.Equal(reset) {
		t.Fatalf("second replica's AddBytes: %d, %v, %v; want 1500, %v", used2, reset2, err, reset)
	}
	if n := b.Stats().RoundTrips - trips; n != 1 {
		t.Errorf("AddBytes took %d round trips, want 1", n)
	}
	if used, _, _ := a.AddBytes(ctx, "alice", 0, window); used != 1500 {
		t.Errorf("AddBytes of 0 reads %d, want 1500", used)
	}
	// Another window length counts apart.
	if used, _, _ := a.AddBytes(ctx, "alice", 1, time.Hour); used != 1 {
		t.Errorf("hourly usage %d, want 1", used)
	}
	time.Sleep(time.Until(reset) + 10*time.Millisecond)
	if used, reset3, _ := a.AddBytes(ctx, "alice", 7, window); used != 7 || !reset3.Equal(reset.Add(window)) {
		t.Errorf("after the reset: %d, %v; want 7, %v", used, reset3, reset.Add(window))
	}
	for _, bad := range []time.Duration{0, time.Microsecond, 1500 * time.Microsecond} {
		if _, _, err := a.AddBytes(ctx, "alice", 1, bad); err == nil {
			t.Errorf("window %v accepted", bad)
		}
	}
	if _, _, err := a.AddBytes(ctx, "alice", -1, time.Hour); err == nil {
		t.Error("negative bytes accepted")
	}
}

// cutReader is a download cut at the quota: before each read it asks the
// counter how much may still pass.
type cutReader struct {
	r io.Reader
	c *ByteCounter
}

func (cr *cutReader) Read(p []byte) (int, error) {
	left := cr.c.Remaining()
	if left == 0 {
		return 0, errQuota
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := cr.r.Read(p)
	cr.c.Add(n)
	return n, err
}

var errQuota = io.ErrUnexpectedEOF // stands for "closed at the quota"

// A byte quota cuts downloads at the quota, within one batch: two
// downloads of 8 MiB on two replicas share a quota of 1 MiB; together they
// pass at most the quota plus what one had moved and the other not seen
// yet: less than one batch (64 KiB; batches shrink near the quota), and what
// one moved while a flush of the other's was on its way, which only a Redis
// or a machine that stalls makes more than a read or two. Redis counts
// exactly what passed.
func TestByteCounterCutsDownloadsAtQuota(t *testing.T) {
	r := startRedis(t)
	stores := []*Store{openStore(t, r), openStore(t, r)}
	body := strings.Repeat("x", 8<<20)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, body)
	}))
	defer origin.Close()
	const quota = 1 << 20
	ctx := context.Background()

	// One download alone stops exactly at the quota.
	got := download(t, origin.URL, stores[0], "solo", quota)
	if got != quota {
		t.Errorf("a lone download passed %d bytes, want exactly the quota %d", got, quota)
	}

	// Two at once, on two replicas.
	var wg sync.WaitGroup
	passed := make([]int64, 2)
	timers := make([]*timedQuota, 2)
	for i, s := range stores {
		timers[i] = &timedQuota{QuotaStore: s}
		wg.Go(func() { passed[i] = download(t, origin.URL, timers[i], "shared", quota) })
	}
	wg.Wait()
	slowest := max(timers[0].max(), timers[1].max())
	// Each download moves at most one read a millisecond (it sleeps 1 ms
	// between reads): what it moves during the other's slowest flush.
	during := int64(readSize) * (1 + slowest.Milliseconds())
	total := passed[0] + passed[1]
	used, _, err := stores[0].AddBytes(ctx, "shared", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two downloads passed %d + %d = %d bytes for a quota of %d (over by %d; one batch is %d; the slowest flush took %v); Redis counted %d",
		passed[0], passed[1], total, quota, total-quota, DefaultFlushBytes, slowest.Round(time.Microsecond), used)
	if limit := quota + DefaultFlushBytes + during; total < quota || total > limit {
		t.Errorf("two downloads passed %d bytes, want %d..%d (the quota, a batch, and %d bytes moved during the slowest flush)", total, quota, limit, during)
	}
	if used != total {
		t.Errorf("Redis counted %d bytes, the downloads passed %d", used, total)
	}
}

const readSize = 16 << 10

// timedQuota records the longest AddBytes.
type timedQuota struct {
	fwdproxy.QuotaStore
	mu      sync.Mutex
	slowest time.Duration
}

func (q *timedQuota) AddBytes(ctx context.Context, key string, n int64, window time.Duration) (int64, time.Time, error) {
	start := time.Now()
	used, reset, err := q.QuotaStore.AddBytes(ctx, key, n, window)
	d := time.Since(start)
	q.mu.Lock()
	q.slowest = max(q.slowest, d)
	q.mu.Unlock()
	return used, reset, err
}

func (q *timedQuota) max() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.slowest
}

// download reads url through a ByteCounter on key, cut at quota, and
// returns the bytes that passed.
func download(t *testing.T, url string, s fwdproxy.QuotaStore, key string, quota int64) int64 {
	c, err := NewByteCounter(s, key, quota, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, readSize)
	var n int64
	cr := &cutReader{r: resp.Body, c: c}
	for {
		m, err := cr.Read(buf)
		n += int64(m)
		if err == errQuota {
			break
		}
		if err != nil {
			t.Fatalf("download ended with %v before the quota", err)
		}
		time.Sleep(time.Millisecond) // a network's pace, so flushes overlap the other download
	}
	select {
	case <-c.Exceeded():
	default:
		t.Error("Exceeded not closed at the quota")
	}
	if c.Add(0) {
		t.Error("Add reports room past the quota")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Bytes below a batch are flushed FlushInterval after the first of them
// (300 ms here, so that a busy machine does not flush before the check);
// Close flushes the rest at once.
func TestByteCounterFlushes(t *testing.T) {
	r := startRedis(t)
	s := openStore(t, r)
	ctx := context.Background()
	c, err := NewByteCounter(s, "k", 1<<30, time.Hour, InitialUsage(10), FlushInterval(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(100)
	c.Add(23)
	if got := c.Used(); got != 133 {
		t.Errorf("Used %d, want 133", got)
	}
	used, _, _ := s.AddBytes(ctx, "k", 0, time.Hour)
	if used != 0 {
		t.Errorf("flushed %d bytes at once, want a batch", used)
	}
	deadline := time.Now().Add(2 * time.Second)
	for used != 123 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		used, _, _ = s.AddBytes(ctx, "k", 0, time.Hour)
	}
	if used != 123 {
		t.Fatalf("Redis has %d bytes after the flush interval, want 123", used)
	}
	trips := s.Stats().RoundTrips
	for range 1000 {
		c.Add(1000) // 1 MB: about 16 batches of 64 KiB
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if used, _, _ = s.AddBytes(ctx, "k", 0, time.Hour); used != 123+1000*1000 {
		t.Errorf("Redis has %d bytes after Close, want %d", used, 123+1000*1000)
	}
	n := s.Stats().RoundTrips - trips
	t.Logf("1000 adds of 1000 bytes: %d flushes", n-1)
	if n-1 > 1000*1000/DefaultFlushBytes+2 {
		t.Errorf("%d flushes for %d bytes, want about one per %d", n-1, 1000*1000, DefaultFlushBytes)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}
