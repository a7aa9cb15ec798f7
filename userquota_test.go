package fwdproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/quota"
)

// TestByteQuotaCuts: a policy's BytesPerDay cuts a download (a response
// body, a tunnel) at the quota, not after, with one log line; the next
// request of the user is refused with 429 and a Retry-After at the end of
// the day (UTC); bytes sent up a tunnel count as well; another user is not
// touched. Without a shared store the count is this process's, so the cut
// is exact.
func TestByteQuotaCuts(t *testing.T) {
	const size, quota = 1 << 20, 300_000
	big := bytes.Repeat([]byte("x"), size)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(big)
	})
	download := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) { c.Write(big) })
	sink := tcpOrigin(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.Copy(io.Discard, c) })
	policies := WithPolicies(Policy{Name: "metered", Users: []string{"alice"}, BytesPerDay: quota})
	auth := WithBasicAuth(StaticCredentials(map[string]string{"alice": "a", "bob": "b"}))
	basic := func(u string) string { return creds{u, u[:1]}.header() }

	for _, tc := range []string{"GET", "tunnel down", "tunnel up"} {
		t.Run(tc, func(t *testing.T) {
			logs := &logCapture{}
			// At Info: the access records too.
			info := slog.New(slog.NewTextHandler(lockedWriter{&logs.mu, &logs.buf}, &slog.HandlerOptions{Level: slog.LevelInfo}))
			tp := startProxy(t, policies, auth, allowAnyConnectPort(), WithLogger(info))
			var got int64
			switch tc {
			case "GET":
				c, br := tp.rawConn(t)
				mustWrite(t, c, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic("alice")+"\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET: %v %v", resp, err)
				}
				got, err = io.Copy(io.Discard, resp.Body)
				if err == nil {
					t.Errorf("the body ended cleanly after %d bytes, want it cut", got)
				}
			case "tunnel down":
				c, br := connectAs(t, tp, download, basic("alice"))
				got, _ = io.Copy(io.Discard, br)
				c.Close()
			case "tunnel up":
				c, _ := connectAs(t, tp, sink, basic("alice"))
				chunk := make([]byte, 32<<10)
				for got < size {
					n, err := c.Write(chunk)
					got += int64(n)
					if err != nil {
						break
					}
				}
				c.Close()
				quiesce(t, tp.Proxy)
				got = int64(tp.Stats().Bytes.TunnelUp)
			}
			// A response body may lose what the server had buffered when
			// the connection is cut; a tunnel delivers exactly the quota.
			lo := int64(quota)
			if tc == "GET" {
				lo = quota - 64<<10
			}
			if got > quota || got < lo {
				t.Errorf("%d bytes moved, want %d..%d (the quota)", got, lo, quota)
			}
			quiesce(t, tp.Proxy)
			eventually(t, "one cut logged", func() bool { return strings.Count(logs.String(), "byte quota reached: transfer cut") == 1 })
			// The cut transfer's own record says why it ended.
			eventually(t, "the cut transfer's record with error=quota_bytes", func() bool {
				return strings.Contains(logs.String(), "error=quota_bytes")
			})
			if s := tp.Stats(); s.Quotas.Cuts != 1 {
				t.Errorf("Stats.Quotas.Cuts %d, want 1", s.Quotas.Cuts)
			}

			// Alice's next request is refused until the day ends; Bob's passes.
			status, _, h := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic("alice")+"\r\n\r\n")
			untilMidnight := time.Until(time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour))
			ra, _ := strconv.Atoi(h.Get("Retry-After"))
			if status != 429 || ra < 1 || time.Duration(ra)*time.Second < untilMidnight-time.Minute || time.Duration(ra)*time.Second > untilMidnight+time.Minute {
				t.Errorf("after the quota: %d, Retry-After %q; want 429 and about %v", status, h.Get("Retry-After"), untilMidnight)
			}
			if status, _, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic("bob")+"\r\n\r\n"); status != 200 {
				t.Errorf("bob: %d, want 200", status)
			}
			if s := tp.Stats(); s.DeniedBy.QuotaBytes != 1 {
				t.Errorf("Stats.DeniedBy.QuotaBytes %d, want 1", s.DeniedBy.QuotaBytes)
			}
		})
	}
}

// connectAs opens a tunnel to target as the user of the Proxy-Authorization
// value auth.
func connectAs(t *testing.T, tp *testProxy, target, auth string) (net.Conn, io.Reader) {
	t.Helper()
	c, br := tp.rawConn(t)
	mustWrite(t, c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+auth+"\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	return c, br
}

// failingState is a SharedState that fails every call while down is set,
// and otherwise keeps its state in memory.
type failingState struct {
	memoryState
	down atomic.Bool
}

var errStoreDown = errors.New("store down")

func (f *failingState) Allow(ctx context.Context, key string, r Rate) (Decision, error) {
	if f.down.Load() {
		return Decision{}, errStoreDown
	}
	return f.memoryState.Allow(ctx, key, r)
}

func (f *failingState) AddBytes(ctx context.Context, key string, n int64, w time.Duration) (int64, time.Time, error) {
	if f.down.Load() {
		return 0, time.Time{}, errStoreDown
	}
	return f.memoryState.AddBytes(ctx, key, n, w)
}

func (f *failingState) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (string, bool, error) {
	if f.down.Load() {
		return "", false, errStoreDown
	}
	return f.memoryState.Acquire(ctx, key, max, ttl)
}

// TestSharedStateFailing: while the shared store fails, the Proxy decides
// the quotas in memory (alice's burst still holds on this replica), counts
// each failure in Stats.Quotas, and logs once when the store starts
// failing, not per request; StoreFailing clears once it answers again.
func TestSharedStateFailing(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	st := &failingState{memoryState: newQuotaState().mem}
	logs := &logCapture{}
	tp := startProxy(t, WithLogger(logs.logger()), WithSharedState(st),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "a"})),
		WithPolicies(Policy{Name: "p", Users: []string{"alice"}, Rate: Rate{PerSecond: 0.001, Burst: 3}, BytesPerDay: 1 << 30}))
	get := func() int {
		status, _, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+creds{"alice", "a"}.header()+"\r\n\r\n")
		return status
	}
	st.down.Store(true)
	var got []int
	for range 5 {
		got = append(got, get())
	}
	if fmt.Sprint(got) != "[200 200 200 429 429]" {
		t.Errorf("with the store failing: %v, want alice's burst of 3 from memory", got)
	}
	s := tp.Stats().Quotas
	if s.StoreErrors < 5 || !s.StoreFailing {
		t.Errorf("Stats.Quotas %+v, want at least 5 store errors and StoreFailing", s)
	}
	st.down.Store(false)
	get()
	if s := tp.Stats().Quotas; s.StoreFailing {
		t.Errorf("Stats.Quotas %+v after the store answered again", s)
	}
	if n := strings.Count(logs.String(), "shared state failing"); n != 1 {
		t.Errorf("%d log lines for the failure, want 1:\n%s", n, logs.String())
	}
}

// takingState is a SharedState with RateTaker: it grants every Take from an
// unbounded pool, counting the calls; Allow, which it counts too, should
// not be asked for a rate that batches.
type takingState struct {
	failingState
	allows, takes, taken atomic.Int64
}

func (s *takingState) Allow(ctx context.Context, key string, r Rate) (Decision, error) {
	s.allows.Add(1)
	return s.failingState.Allow(ctx, key, r)
}

func (s *takingState) Take(_ context.Context, _ string, _ Rate, n int) (int, time.Duration, error) {
	s.takes.Add(1)
	if s.down.Load() {
		return 0, 0, errStoreDown
	}
	s.taken.Add(int64(n))
	return n, 0, nil
}

// TestSharedRateInBatches: with a store that has RateTaker, a rate of 100
// a second (batches of 10) asks the store once per few requests, never
// Allow; the events spent never exceed those taken, and at most one batch
// is held; when Take fails, the requests are decided in memory and the
// failure counted. A rate under 20 a second still asks Allow per request.
func TestSharedRateInBatches(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	st := &takingState{failingState: failingState{memoryState: newQuotaState().mem}}
	tp := startProxy(t, WithSharedState(st),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "a", "bob": "b"})),
		WithPolicies(Policy{Name: "fast", Users: []string{"alice"}, Rate: Rate{PerSecond: 100, Burst: 50}},
			Policy{Name: "slow", Users: []string{"bob"}, Rate: Rate{PerSecond: 10, Burst: 50}}))
	get := func(c creds) int {
		status, _, _ := send(t, tp, "GET "+o.URL+"/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+c.header()+"\r\n\r\n")
		return status
	}
	const n = 30
	for i := range n {
		if s := get(creds{"alice", "a"}); s != 200 {
			t.Fatalf("request %d: %d", i, s)
		}
	}
	if a := st.allows.Load(); a != 0 {
		t.Errorf("Allow asked %d times for a rate that batches", a)
	}
	// 10 at first, then the half batch spent: about one take per 5.
	if k := st.takes.Load(); k < 2 || k > n/5+1 {
		t.Errorf("%d takes for %d requests, want 2..%d", k, n, n/5+1)
	}
	if taken := st.taken.Load(); taken < n || taken > n+10 {
		t.Errorf("%d events taken for %d spent, want %d..%d (at most a batch held)", taken, n, n, n+10)
	}
	st.down.Store(true)
	for i := range n {
		if s := get(creds{"alice", "a"}); s != 200 {
			t.Fatalf("request %d with Take failing: %d, want 200 from memory", i, s)
		}
	}
	if q := tp.Stats().Quotas; q.StoreErrors == 0 || !q.StoreFailing {
		t.Errorf("Stats.Quotas %+v with Take failing, want errors counted", q)
	}
	st.down.Store(false)
	for range 3 {
		get(creds{"bob", "b"})
	}
	if a := st.allows.Load(); a != 3 {
		t.Errorf("Allow asked %d times for bob's 3 requests at 10 a second, want 3", a)
	}
}

// countAdder is a quota.Adder that only counts.
type countAdder struct{ n atomic.Int64 }

func (a *countAdder) AddBytes(_ context.Context, _ string, n int64, w time.Duration) (int64, time.Time, error) {
	return a.n.Add(n), time.Now().Add(w), nil
}

// TestMeteredTunnelNotIdle: a tunnel under a byte quota whose ends are not
// TCP (an HTTP/2 stream, a TLS connection: no kernel counters show its
// bytes) and which moves fewer bytes per idle timeout than a metering chunk
// is not taken for idle; without the quota neither.
func TestMeteredTunnelNotIdle(t *testing.T) {
	for _, metered := range []bool{false, true} {
		t.Run(fmt.Sprint("metered=", metered), func(t *testing.T) {
			tunnelEnd, client := net.Pipe()
			upstreamEnd, upstream := net.Pipe()
			tu := newTunnel(tunnelEnd, upstreamEnd, 300*time.Millisecond)
			if metered {
				tu.meter = quota.NewMeter(&countAdder{}, "alice", 1<<30, 24*time.Hour, time.Second, nil)
				tu.onCut = func() {}
				defer tu.meter.Close()
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				tu.run()
			}()
			go io.Copy(io.Discard, upstream)
			// A byte every 50 ms for four idle timeouts.
			for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); {
				if _, err := client.Write([]byte{'x'}); err != nil {
					t.Fatalf("the tunnel was closed while a byte moved every 50 ms (idle timeout 300 ms): %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			client.Close()
			upstream.Close()
			<-done
			if got := tu.up.Load(); got < 10 {
				t.Errorf("%d bytes counted up, want every byte sent", got)
			}
		})
	}
}
