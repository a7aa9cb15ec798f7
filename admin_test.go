package fwdproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/flows"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// openAdmin opens an Admin on p with o and serves it on a loopback test
// server; both close with the test.
func openAdmin(t testing.TB, p *Proxy, o AdminOptions) (*Admin, *httptest.Server) {
	t.Helper()
	a, err := p.NewAdmin(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		a.Close() // first: it ends the event streams that srv.Close would wait for
		srv.Close()
	})
	return a, srv
}

// adminDo sends method path to the admin server with the header fields
// hdr (name, value, …) and returns the status, header and body.
func adminDo(t testing.TB, srv *httptest.Server, method, path string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// adminJSON GETs path and decodes its JSON into v.
func adminJSON(t testing.TB, srv *httptest.Server, path string, v any, hdr ...string) {
	t.Helper()
	code, h, b := adminDo(t, srv, "GET", path, hdr...)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s: %s", path, code, h.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// decodeHAR decodes a HAR and checks its frame: a log of version 1.2 with
// an array of entries. The HAR 1.2 schema check of what an Admin writes,
// under traffic of every shape, is internal/hartest's (a module of its
// own, so that the JSON-schema validator stays out of this go.mod).
func decodeHAR(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, b)
	}
	log, _ := m["log"].(map[string]any)
	if _, ok := log["entries"].([]any); !ok || log["version"] != "1.2" {
		t.Fatalf("not a HAR 1.2 log:\n%s", b)
	}
	return m
}

// flowJSON is a flow's detail as /api/flows/{id} sends it.
type flowJSON struct {
	ID          uint64 `json:"id"`
	Method      string `json:"method"`
	URL         string `json:"url"`
	Host        string `json:"host"`
	Proto       string `json:"proto"`
	Status      int    `json:"status"`
	User        string `json:"user"`
	Client      string `json:"client"`
	Upstream    string `json:"upstream"`
	BytesIn     int64  `json:"bytes_in"`
	BytesOut    int64  `json:"bytes_out"`
	Error       string `json:"error"`
	Reason      string `json:"reason"`
	Intercepted bool   `json:"intercepted"`
	Tunnel      bool   `json:"tunnel"`
	Timings     struct {
		DNS       float64 `json:"dns_ms"`
		Connect   float64 `json:"connect_ms"`
		TLS       float64 `json:"tls_ms"`
		FirstByte float64 `json:"first_byte_ms"`
		Total     float64 `json:"total_ms"`
	} `json:"timings"`
	Request, Response struct {
		Headers []struct{ Name, Value string }
		Body    struct {
			Kind string `json:"kind"`
			Text string `json:"text"`
			Size int64  `json:"size"`
		} `json:"body"`
	}
}

func (f *flowJSON) header(request bool, name string) []string {
	hs := f.Response.Headers
	if request {
		hs = f.Request.Headers
	}
	var vs []string
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			vs = append(vs, h.Value)
		}
	}
	return vs
}

// latestFlow returns the detail of the newest flow the admin server holds.
func latestFlow(t testing.TB, srv *httptest.Server, hdr ...string) *flowJSON {
	t.Helper()
	var list struct {
		Flows []struct {
			ID uint64 `json:"id"`
		} `json:"flows"`
	}
	adminJSON(t, srv, "/api/flows?limit=1", &list, hdr...)
	if len(list.Flows) == 0 {
		t.Fatal("no flow recorded")
	}
	var f flowJSON
	adminJSON(t, srv, "/api/flows/"+strconv.FormatUint(list.Flows[0].ID, 10), &f, hdr...)
	return &f
}

// TestAdminFlows: one table across the request paths a flow can take:
// plain HTTP on the own HTTP/1.1 path (with a response whose header goes
// out only after the handler returns), a request body on the shared
// transport, an https URL sent upstream over TLS, a CONNECT tunnel, a
// request decrypted from an intercepted CONNECT, a denial and an upstream
// failure. Each one's record has its method, URL, status, user, addresses,
// sizes, flags, timing phases, headers (credentials redacted, while the
// client got them as sent) and captured bodies.
func TestAdminFlows(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Set-Cookie", "sid=origin-secret; HttpOnly")
			io.WriteString(w, `{"hello":"world"}`)
		case "/empty":
			w.Header().Set("Set-Cookie", "sid=origin-secret")
			w.WriteHeader(http.StatusNoContent)
		case "/post":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Write(append([]byte("got "), b...))
		}
	})
	tlsO, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "tls "+r.URL.Path)
	})
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	ds := dnstest.NewServer(t)
	ds.Add("origin.test. 60 IN A 127.0.0.1")
	ds.Add("example.com. 60 IN A 127.0.0.1") // a name the TLS origin's certificate holds
	ds.Add("tunnel.test. 60 IN A 127.0.0.1")
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithDNSServers(ds.Addr()), WithCapture(4096), WithUpstreamRootCAs(roots),
		WithInterception(ca, WithInterceptBypass("tunnel.test")), WithDenyHosts("denied.test"),
		WithBasicAuth(StaticCredentials(map[string]string{"alice": "pw"})))
	_, srv := openAdmin(t, tp.Proxy, AdminOptions{})

	port := func(u string) string {
		_, p, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"))
		return p
	}
	plain := "origin.test:" + port(o.URL)
	secure := "example.com:" + port(tlsO.URL)
	tunnel := "tunnel.test:" + port("http://"+echoAddr)
	pu := *tp.URL
	pu.User = url.UserPassword("alice", "pw")
	auth := "Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"

	type check func(t *testing.T, f *flowJSON)
	for _, tc := range []struct {
		name string
		do   func(t *testing.T) // sends the request, checks what the client got
		want flowJSON           // the fields compared as they are
		more check
	}{
		{
			name: "GET, own HTTP/1.1 path",
			do: func(t *testing.T) {
				c := proxytest.Client(t, &pu, nil)
				req, _ := http.NewRequest("GET", "http://"+plain+"/json", nil)
				req.Header.Set("Authorization", "Bearer client-secret")
				req.Header.Set("Cookie", "a=client-secret")
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if got := resp.Header.Get("Set-Cookie"); got != "sid=origin-secret; HttpOnly" {
					t.Errorf("the client got Set-Cookie %q", got)
				}
				c.CloseIdleConnections()
			},
			want: flowJSON{Method: "GET", URL: "http://" + plain + "/json", Host: plain, Proto: "HTTP/1.1", Status: 200,
				User: "alice", BytesOut: 17},
			more: func(t *testing.T, f *flowJSON) {
				if f.Response.Body.Kind != "json" || !strings.Contains(f.Response.Body.Text, `"hello": "world"`) {
					t.Errorf("response body %+v", f.Response.Body)
				}
				if f.Timings.DNS <= 0 || f.Timings.Connect <= 0 || f.Timings.TLS != 0 {
					t.Errorf("a first request to a name: DNS %v ms, connect %v ms, TLS %v ms", f.Timings.DNS, f.Timings.Connect, f.Timings.TLS)
				}
				for _, h := range []struct {
					req  bool
					name string
				}{{true, "Authorization"}, {true, "Cookie"}, {true, "Proxy-Authorization"}, {false, "Set-Cookie"}} {
					if vs := f.header(h.req, h.name); len(vs) != 1 || vs[0] != redact.Redacted {
						t.Errorf("%s: %q, want it redacted", h.name, vs)
					}
				}
			},
		},
		{
			name: "204 whose header leaves after the handler",
			do: func(t *testing.T) {
				_, _, h := send(t, tp, "GET http://"+plain+"/empty HTTP/1.1\r\nHost: "+plain+"\r\n"+auth+"\r\n")
				if got := h.Get("Set-Cookie"); got != "sid=origin-secret" {
					t.Errorf("the client got Set-Cookie %q", got)
				}
			},
			want: flowJSON{Method: "GET", URL: "http://" + plain + "/empty", Host: plain, Status: 204, User: "alice"},
			more: func(t *testing.T, f *flowJSON) {
				if vs := f.header(false, "Set-Cookie"); len(vs) != 1 || vs[0] != redact.Redacted {
					t.Errorf("Set-Cookie %q in the flow", vs)
				}
			},
		},
		{
			name: "POST, shared transport",
			do: func(t *testing.T) {
				c := proxytest.Client(t, &pu, nil)
				resp, err := c.Post("http://"+plain+"/post", "text/plain", strings.NewReader("hello"))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				c.CloseIdleConnections()
			},
			want: flowJSON{Method: "POST", URL: "http://" + plain + "/post", Host: plain, Status: 200, User: "alice",
				BytesIn: 5, BytesOut: 9},
			more: func(t *testing.T, f *flowJSON) {
				if f.Request.Body.Text != "hello" || f.Response.Body.Text != "got hello" {
					t.Errorf("bodies %q and %q", f.Request.Body.Text, f.Response.Body.Text)
				}
			},
		},
		{
			name: "https URL sent over TLS",
			do: func(t *testing.T) {
				code, body, _ := send(t, tp, "GET https://"+secure+"/abs HTTP/1.1\r\nHost: "+secure+"\r\n"+auth+"\r\n")
				if code != 200 || body != "tls /abs" {
					t.Fatalf("%d %q", code, body)
				}
			},
			want: flowJSON{Method: "GET", URL: "https://" + secure + "/abs", Host: secure, Status: 200, User: "alice", BytesOut: 8},
			more: func(t *testing.T, f *flowJSON) {
				if f.Timings.Connect <= 0 || f.Timings.TLS <= 0 {
					t.Errorf("connect %v ms, TLS %v ms", f.Timings.Connect, f.Timings.TLS)
				}
			},
		},
		{
			name: "CONNECT tunnel",
			do: func(t *testing.T) {
				c, br := tp.rawConn(t)
				mustWrite(t, c, "CONNECT "+tunnel+" HTTP/1.1\r\nHost: "+tunnel+"\r\n"+auth+"\r\n")
				if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
					t.Fatalf("%v %v", resp, err)
				}
				mustWrite(t, c, "ping!")
				buf := make([]byte, 5)
				if _, err := io.ReadFull(br, buf); err != nil {
					t.Fatal(err)
				}
				c.Close()
			},
			want: flowJSON{Method: "CONNECT", URL: tunnel, Host: tunnel, Status: 200, User: "alice", Tunnel: true, BytesIn: 5, BytesOut: 5},
			more: func(t *testing.T, f *flowJSON) {
				if f.Timings.DNS <= 0 || f.Timings.Connect <= 0 {
					t.Errorf("DNS %v ms, connect %v ms", f.Timings.DNS, f.Timings.Connect)
				}
			},
		},
		{
			name: "intercepted",
			do: func(t *testing.T) {
				c := proxytest.Client(t, &pu, &tls.Config{RootCAs: caPool})
				_, body := mustGet(t, c, "https://"+secure+"/inside")
				if body != "tls /inside" {
					t.Fatalf("%q", body)
				}
				c.CloseIdleConnections()
			},
			want: flowJSON{Method: "GET", URL: "https://" + secure + "/inside", Host: secure, Status: 200, User: "alice",
				Intercepted: true, BytesOut: 11},
		},
		{
			name: "denied",
			do: func(t *testing.T) {
				if code, _, _ := send(t, tp, "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n"+auth+"\r\n"); code != 403 {
					t.Fatalf("%d", code)
				}
			},
			want: flowJSON{Method: "GET", URL: "http://denied.test/", Host: "denied.test", Status: 403, User: "alice", Error: "forbidden"},
			more: func(t *testing.T, f *flowJSON) {
				if !strings.Contains(f.Reason, "access denied") || !strings.Contains(f.Response.Body.Text, "access denied") {
					t.Errorf("reason %q, body %q", f.Reason, f.Response.Body.Text)
				}
			},
		},
		{
			name: "for the proxy itself",
			do: func(t *testing.T) {
				if code, _, _ := send(t, tp, "GET /itself?q=1 HTTP/1.1\r\nHost: proxy.test:8080\r\n"+auth+"\r\n"); code != 400 {
					t.Fatalf("%d", code)
				}
			},
			want: flowJSON{Method: "GET", URL: "http://proxy.test:8080/itself?q=1", Host: "proxy.test:8080", Status: 400, Error: "malformed"},
		},
		{
			name: "upstream down",
			do: func(t *testing.T) {
				down := closedPort(t)
				if code, _, _ := send(t, tp, "GET http://"+down+"/ HTTP/1.1\r\nHost: "+down+"\r\n"+auth+"\r\n"); code != 502 {
					t.Fatalf("%d", code)
				}
			},
			want: flowJSON{Method: "GET", Status: 502, User: "alice", Error: "upstream"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.do(t)
			quiesce(t, tp.Proxy)
			f := latestFlow(t, srv)
			got := *f
			// What the table does not compare.
			got.ID, got.Proto, got.Client, got.Upstream, got.Reason = 0, tc.want.Proto, "", "", ""
			got.Timings, got.Request, got.Response = tc.want.Timings, tc.want.Request, tc.want.Response
			if tc.want.URL == "" {
				got.URL, got.Host = "", ""
			}
			if tc.want.Status >= 400 { // the reason sent
				if got.BytesOut == 0 {
					t.Error("no bytes out for an error answer")
				}
				got.BytesOut = 0
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("flow\n%+v\nwant\n%+v", got, tc.want)
			}
			if host, _, err := net.SplitHostPort(f.Client); err != nil || host != "127.0.0.1" {
				t.Errorf("client %q", f.Client)
			}
			if tc.want.Status < 400 && !strings.HasPrefix(f.Upstream, "127.0.0.1:") {
				t.Errorf("upstream %q", f.Upstream)
			}
			if tm := f.Timings; tm.Total <= 0 || tm.FirstByte > tm.Total || (tc.want.Status == 200 && !tc.want.Tunnel && tm.FirstByte <= 0) {
				t.Errorf("timings %+v", tm)
			}
			if tc.more != nil {
				tc.more(t, f)
			}
		})
	}
	// Every shape in the HAR (internal/hartest checks it against the
	// schema).
	_, _, har := adminDo(t, srv, "GET", "/flows.har")
	var all struct {
		State struct{ Flows int }
	}
	adminJSON(t, srv, "/api/flows", &all)
	if n := len(decodeHAR(t, har)["log"].(map[string]any)["entries"].([]any)); n != all.State.Flows || n == 0 {
		t.Errorf("%d HAR entries, want the %d flows held", n, all.State.Flows)
	}
	// The intercepted CONNECT has no record of its own: its requests do.
	var list struct {
		Flows []struct{ Method, URL string }
	}
	adminJSON(t, srv, "/api/flows?method=CONNECT", &list)
	if len(list.Flows) != 1 || list.Flows[0].URL != tunnel {
		t.Errorf("CONNECT flows %+v, want the tunnel's alone", list.Flows)
	}
}

// TestAdminEndpoints: every path of the admin handler through a real
// Proxy with real traffic: the pages, the JSON of /api/stats and
// /api/flows, the event streams, pause, resume and clear, the HAR (a HAR
// 1.2 log, the filter applied, credentials redacted; internal/hartest
// checks it against the schema), the health endpoints, and a route added
// with Handle.
func TestAdminEndpoints(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "sid=origin-secret")
		io.WriteString(w, "hello "+r.URL.Path)
	})
	tp := startProxy(t, WithCapture(1024), WithDenyHosts("denied.test"))
	a, srv := openAdmin(t, tp.Proxy, AdminOptions{})
	a.Handle("GET /extra", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "extra") }))

	// Streams opened before the traffic see it.
	flowEvents := openSSE(t, srv.URL+"/api/flows/stream")
	statsEvents := openSSE(t, srv.URL+"/api/stats/stream")
	if ev := flowEvents.next(t); ev.name != "state" {
		t.Fatalf("first flow stream event %q, want state", ev.name)
	}
	if ev := statsEvents.next(t); ev.name != "snapshot" || !json.Valid([]byte(ev.data)) {
		t.Fatalf("first stats stream event %q %q, want a snapshot", ev.name, ev.data)
	}

	c := tp.client(t, nil)
	for i := range 5 {
		req, _ := http.NewRequest("GET", o.URL+"/"+strconv.Itoa(i), nil)
		req.Header.Set("Authorization", "Bearer client-secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if code, _, _ := send(t, tp, "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n"); code != 403 {
		t.Fatal(code)
	}
	quiesce(t, tp.Proxy)
	for i := 1; i <= 6; i++ {
		ev := flowEvents.next(t)
		var f struct {
			ID  uint64 `json:"id"`
			URL string `json:"url"`
		}
		if ev.name != "flow" || json.Unmarshal([]byte(ev.data), &f) != nil || f.ID != uint64(i) || ev.id != strconv.Itoa(i) {
			t.Fatalf("flow event %d: %+v", i, ev)
		}
	}

	// The pages.
	for _, path := range []string{"/", "/flows"} {
		code, h, b := adminDo(t, srv, "GET", path)
		if code != 200 || h.Get("Content-Security-Policy") == "" || !strings.Contains(string(b), "<html") {
			t.Errorf("GET %s: %d, CSP %q", path, code, h.Get("Content-Security-Policy"))
		}
	}
	for _, path := range []string{"/ui/dashboard/dashboard.js", "/ui/flows/flows.js", "/ui/dashboard/uplot/uPlot.iife.min.js", "/ui/flows/admin.css"} {
		if code, _, _ := adminDo(t, srv, "GET", path); code != 200 {
			t.Errorf("GET %s: %d", path, code)
		}
	}

	// /api/stats: the totals the Proxy counted, and a history per column.
	var stats struct {
		Now struct {
			Totals struct {
				Requests, Errors, Denials uint64
				BytesOut                  uint64 `json:"bytes_out"`
			} `json:"totals"`
			Denials []struct {
				Name  string `json:"name"`
				Total uint64 `json:"total"`
			} `json:"denials"`
			Top []struct {
				Host string `json:"host"`
			} `json:"top"`
			Pool struct {
				Hits, Misses uint64
			} `json:"pool"`
		} `json:"now"`
		History map[string][]float64 `json:"history"`
	}
	eventually(t, "a sample after the traffic", func() bool {
		adminJSON(t, srv, "/api/stats", &stats)
		return stats.Now.Totals.Requests == 6
	})
	n := stats.Now
	if n.Totals.Errors != 1 || n.Totals.Denials != 1 || n.Totals.BytesOut == 0 {
		t.Errorf("totals %+v", n.Totals)
	}
	if len(n.Denials) != 1 || n.Denials[0].Name != "rule" || n.Denials[0].Total != 1 {
		t.Errorf("denials %+v, want rule: 1", n.Denials)
	}
	_, oport, _ := net.SplitHostPort(strings.TrimPrefix(o.URL, "http://"))
	if len(n.Top) == 0 || n.Top[0].Host != "127.0.0.1:"+oport {
		t.Errorf("top destinations %+v", n.Top)
	}
	if n.Pool.Hits+n.Pool.Misses != 5 || n.Pool.Misses < 1 {
		t.Errorf("pool: %d reused, %d new, want 5 requests", n.Pool.Hits, n.Pool.Misses)
	}
	for _, col := range []string{"t", "requests", "errors", "denials", "bytes_in", "bytes_out", "p50", "p95", "p99",
		"active_connections", "active_requests", "active_tunnels"} {
		if _, ok := stats.History[col]; !ok {
			t.Errorf("history has no %q", col)
		}
	}
	if ev := statsEvents.next(t); ev.name != "tick" || !strings.Contains(ev.data, `"now"`) {
		t.Errorf("stats stream: %q %q, want a tick", ev.name, ev.data)
	}

	// /api/flows with filters, and a flow's detail.
	var list struct {
		Flows []flowJSON `json:"flows"`
		State struct {
			Flows    int    `json:"flows"`
			MaxFlows int    `json:"max_flows"`
			MaxBytes int64  `json:"max_bytes"`
			LastID   uint64 `json:"last_id"`
			Paused   bool   `json:"paused"`
		} `json:"state"`
	}
	adminJSON(t, srv, "/api/flows?status=4xx", &list)
	// The defaults: 1,000 flows, 64 MiB.
	if len(list.Flows) != 1 || list.Flows[0].Status != 403 || list.State.Flows != 6 || list.State.MaxFlows != 1000 ||
		list.State.MaxBytes != 64<<20 || list.State.LastID != 6 {
		t.Errorf("4xx flows %+v, state %+v", list.Flows, list.State)
	}
	f := latestFlow(t, srv)
	if f.ID != 6 || f.Response.Body.Text == "" {
		t.Errorf("latest flow %+v", f)
	}
	if code, _, _ := adminDo(t, srv, "GET", "/api/flows/99"); code != 404 {
		t.Errorf("an unknown flow: %d", code)
	}

	// The HAR: valid HAR 1.2, the filter applied, no credential.
	code, h, har := adminDo(t, srv, "GET", "/flows.har?status=2xx")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Disposition"), "attachment") {
		t.Fatalf("/flows.har: %d %v", code, h)
	}
	m := decodeHAR(t, har)
	if entries := m["log"].(map[string]any)["entries"].([]any); len(entries) != 5 {
		t.Errorf("%d HAR entries, want the 5 2xx flows", len(entries))
	}
	if strings.Contains(string(har), "secret") {
		t.Error("a credential in the HAR")
	}

	// Pause, resume, clear.
	for _, step := range []struct {
		action  string
		traffic bool
		want    int // flows held after
	}{
		{"pause", true, 6},
		{"resume", true, 7},
		{"clear", false, 0},
	} {
		if code, _, b := adminDo(t, srv, "POST", "/api/flows/"+step.action); code != 200 {
			t.Fatalf("POST %s: %d %s", step.action, code, b)
		}
		if step.traffic {
			mustGet(t, c, o.URL+"/more")
			quiesce(t, tp.Proxy)
		}
		adminJSON(t, srv, "/api/flows", &list)
		if list.State.Flows != step.want || list.State.Paused != (step.action == "pause") {
			t.Errorf("after %s: %d flows, paused %v, want %d", step.action, list.State.Flows, list.State.Paused, step.want)
		}
	}

	// Health, and the route added.
	for _, tc := range []struct{ path, body string }{{"/healthz", "ok\n"}, {"/extra", "extra"}} {
		if code, _, b := adminDo(t, srv, "GET", tc.path); code != 200 || string(b) != tc.body {
			t.Errorf("GET %s: %d %q", tc.path, code, b)
		}
	}
	if code, _, b := adminDo(t, srv, "GET", "/readyz"); code != 200 || string(b) != "ready\nconfig: ok\nlistening: ok\ndraining: ok\n" {
		t.Errorf("GET /readyz: %d %q", code, b)
	}
	if code, _, _ := adminDo(t, srv, "DELETE", "/api/flows"); code != 405 {
		t.Errorf("DELETE /api/flows: %d, want 405", code)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, id, data string }

// sseStream reads the events of one stream.
type sseStream struct {
	events chan sseEvent
}

// openSSE opens an event stream at u, closed with the test.
func openSSE(t testing.TB, u string, hdr ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{events: make(chan sseEvent, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.events)
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return s
}

// next returns the next event, failing after 10 s.
func (s *sseStream) next(t testing.TB) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("the event stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event for 10 s")
	}
	return sseEvent{}
}

// TestAdminToken: with a token every admin path wants it, but the health
// endpoints and the Public paths; a page entered with ?token= once gets a
// cookie and is sent on without the token in the URL; SetToken replaces
// it. Without a token, a Host that is not an address or localhost is
// refused.
func TestAdminToken(t *testing.T) {
	tp := startProxy(t)
	a, srv := openAdmin(t, tp.Proxy, AdminOptions{Token: "s3cret", Public: []string{"/open"}})
	a.Handle("GET /open", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	a.Handle("GET /closed", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	bearer := []string{"Authorization", "Bearer s3cret"}
	for _, tc := range []struct {
		method, path string
		public       bool
	}{
		{"GET", "/", false}, {"GET", "/flows", false}, {"GET", "/flows.har", false},
		{"GET", "/api/stats", false}, {"GET", "/api/flows", false}, {"GET", "/api/flows/1", false},
		{"POST", "/api/flows/pause", false}, {"POST", "/api/flows/clear", false},
		{"GET", "/ui/dashboard/dashboard.js", false}, {"GET", "/closed", false},
		{"GET", "/healthz", true}, {"GET", "/readyz", true}, {"GET", "/open", true},
	} {
		code, h, _ := adminDo(t, srv, tc.method, tc.path)
		if tc.public {
			if code != 200 {
				t.Errorf("%s %s without the token: %d, want 200", tc.method, tc.path, code)
			}
			continue
		}
		if code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s without the token: %d, want 401 with a Bearer challenge", tc.method, tc.path, code)
		}
		if code, _, _ := adminDo(t, srv, tc.method, tc.path, "Authorization", "Bearer wrong"); code != 401 {
			t.Errorf("%s %s with a wrong token: %d", tc.method, tc.path, code)
		}
		if code, _, _ := adminDo(t, srv, tc.method, tc.path, bearer...); code == 401 || code == 403 {
			t.Errorf("%s %s with the token: %d", tc.method, tc.path, code)
		}
	}
	// The event streams take the token too.
	openSSE(t, srv.URL+"/api/flows/stream", bearer...).next(t)
	// ?token= once: a cookie, and the URL without it.
	code, h, _ := adminDo(t, srv, "GET", "/flows?token=s3cret&host=x")
	cookie := h.Get("Set-Cookie")
	if code != http.StatusSeeOther || h.Get("Location") != "/flows?host=x" || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Errorf("?token=: %d, Location %q, Set-Cookie %q", code, h.Get("Location"), cookie)
	}
	if code, _, _ := adminDo(t, srv, "GET", "/api/stats", "Cookie", strings.SplitN(cookie, ";", 2)[0]); code != 200 {
		t.Errorf("with the cookie: %d", code)
	}
	// SetToken.
	a.SetToken("n3w")
	if code, _, _ := adminDo(t, srv, "GET", "/api/stats", bearer...); code != 401 {
		t.Errorf("the old token after SetToken: %d", code)
	}
	if code, _, _ := adminDo(t, srv, "GET", "/api/stats", "Authorization", "Bearer n3w"); code != 200 {
		t.Errorf("the new token: %d", code)
	}
	a.SetToken("")
	if code, _, _ := adminDo(t, srv, "GET", "/api/stats"); code != 200 {
		t.Errorf("no token, Host an address: %d", code)
	}
	if code, _, _ := adminDo(t, srv, "GET", "/api/stats", "Host", "admin.example"); code != 403 {
		t.Errorf("no token, Host a name: %d, want 403", code)
	}
}

// TestAdminRingCaps: the ring keeps the newest flows under both caps.
func TestAdminRingCaps(t *testing.T) {
	big := strings.Repeat("x", 8<<10)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big)
	})
	for _, tc := range []struct {
		name    string
		opts    AdminOptions
		reqs    int
		wantMax int // flows held at most
	}{
		{"count", AdminOptions{MaxFlows: 5}, 12, 5},
		{"bytes", AdminOptions{MaxFlowBytes: 40 << 10}, 12, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t)
			_, srv := openAdmin(t, tp.Proxy, tc.opts)
			c := tp.client(t, nil)
			for range tc.reqs {
				mustGet(t, c, o.URL+"/")
			}
			quiesce(t, tp.Proxy)
			var list struct {
				Flows []struct {
					ID uint64 `json:"id"`
				} `json:"flows"`
				State struct {
					Flows   int    `json:"flows"`
					Bytes   int64  `json:"bytes"`
					Added   uint64 `json:"added"`
					Evicted uint64 `json:"evicted"`
				} `json:"state"`
			}
			adminJSON(t, srv, "/api/flows", &list)
			st := list.State
			if st.Flows == 0 || st.Flows > tc.wantMax || st.Added != uint64(tc.reqs) || st.Evicted != uint64(tc.reqs-st.Flows) {
				t.Errorf("state %+v, want at most %d flows of %d", st, tc.wantMax, tc.reqs)
			}
			if tc.opts.MaxFlowBytes > 0 && st.Bytes > tc.opts.MaxFlowBytes {
				t.Errorf("%d bytes held, over the cap of %d", st.Bytes, tc.opts.MaxFlowBytes)
			}
			if len(list.Flows) != st.Flows || list.Flows[0].ID != uint64(tc.reqs) {
				t.Errorf("flows %v: want the newest, %d first", list.Flows, tc.reqs)
			}
		})
	}
}

// TestAdminReadyz: /readyz is ready while Serve runs, not ready when a
// check of AdminOptions.ReadyChecks fails, and not ready as soon as
// Shutdown starts draining, while /healthz stays ok.
func TestAdminReadyz(t *testing.T) {
	echoAddr := tcpOrigin(t, "tcp", "127.0.0.1:0", echo)
	var failing error
	tp := startProxy(t)
	_, srv := openAdmin(t, tp.Proxy, AdminOptions{ReadyChecks: []ReadyCheck{
		{"custom", func(context.Context) error { return failing }},
	}})
	readyz := func() (int, string) {
		code, _, b := adminDo(t, srv, "GET", "/readyz")
		return code, string(b)
	}
	if code, body := readyz(); code != 200 || !strings.HasSuffix(body, "custom: ok\n") {
		t.Fatalf("serving: %d %q", code, body)
	}
	failing = fmt.Errorf("not today")
	if code, body := readyz(); code != 503 || !strings.Contains(body, "custom: not today\n") || !strings.HasPrefix(body, "not ready\n") {
		t.Errorf("a failing check: %d %q", code, body)
	}
	failing = nil

	// A tunnel keeps Shutdown draining.
	c, _ := tp.connect(t, echoAddr, "")
	defer c.Close()
	eventually(t, "the tunnel", func() bool { return tp.Stats().ActiveTunnels == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // Shutdown's goroutine ends with ctx if the test fails first
	shut := make(chan error, 1)
	go func() { shut <- tp.Shutdown(ctx) }()
	eventually(t, "not ready while draining", func() bool {
		code, body := readyz()
		return code == 503 && strings.Contains(body, "draining: shutting down")
	})
	if code, _, _ := adminDo(t, srv, "GET", "/healthz"); code != 200 {
		t.Errorf("healthz while draining: %d", code)
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "listening: Serve is not running") {
		t.Errorf("after Shutdown: %d %q", code, body)
	}
}

// TestAdminReadyzMounted: a Proxy that never had a listener of its own (a
// handler on a server of yours) is not held unready for it.
func TestAdminReadyzMounted(t *testing.T) {
	p, err := New(WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	_, srv := openAdmin(t, p, AdminOptions{})
	if code, _, b := adminDo(t, srv, "GET", "/readyz"); code != 200 {
		t.Errorf("%d %q", code, b)
	}
}

// TestAdminLifecycle: no recording without an Admin; one Admin at a time;
// Close stops recording (and a new Admin may open); bad options are
// refused.
func TestAdminLifecycle(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {})
	tp := startProxy(t)
	c := tp.client(t, nil)
	mustGet(t, c, o.URL+"/before")
	if tp.rec.Load() != nil {
		t.Fatal("a recorder without an Admin")
	}
	a, srv := openAdmin(t, tp.Proxy, AdminOptions{})
	if _, err := tp.NewAdmin(AdminOptions{}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second Admin: %v", err)
	}
	mustGet(t, c, o.URL+"/during")
	quiesce(t, tp.Proxy)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, o.URL+"/after")
	quiesce(t, tp.Proxy)
	var list struct {
		Flows []struct{ URL string } `json:"flows"`
	}
	adminJSON(t, srv, "/api/flows", &list) // the handler still answers with what it holds
	if len(list.Flows) != 1 || !strings.HasSuffix(list.Flows[0].URL, "/during") {
		t.Errorf("flows %+v, want /during alone", list.Flows)
	}
	a2, err := tp.NewAdmin(AdminOptions{})
	if err != nil {
		t.Fatalf("an Admin after Close: %v", err)
	}
	a2.Close()
	for _, o := range []AdminOptions{
		{MaxFlows: -1}, {MaxFlowBytes: -1}, {HARFileMaxBytes: -1},
		{ReadyChecks: []ReadyCheck{{Name: "x"}}}, {HARFile: filepath.Join(t.TempDir(), "no", "such", "dir.har")},
	} {
		if a, err := tp.NewAdmin(o); err == nil {
			a.Close()
			t.Errorf("NewAdmin(%+v) accepted", o)
		}
	}
	if tp.rec.Load() != nil {
		t.Error("a refused Admin left a recorder")
	}
}

// TestAdminHARFile: AdminOptions.HARFile holds every flow recorded, valid
// HAR 1.2 once Close returns, credentials redacted.
func TestAdminHARFile(t *testing.T) {
	o := origin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })
	tp := startProxy(t, WithCapture(64))
	path := filepath.Join(t.TempDir(), "flows.har")
	a, err := tp.NewAdmin(AdminOptions{HARFile: path, MaxFlows: 2})
	if err != nil {
		t.Fatal(err)
	}
	c := tp.client(t, nil)
	for i := range 5 {
		req, _ := http.NewRequest("GET", o.URL+"/"+strconv.Itoa(i), nil)
		req.Header.Set("Cookie", "sid=client-secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	quiesce(t, tp.Proxy)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeHAR(t, b)
	if n := len(m["log"].(map[string]any)["entries"].([]any)); n != 5 {
		t.Errorf("%d entries, want all 5 (more than the ring holds)", n)
	}
	if strings.Contains(string(b), "client-secret") {
		t.Error("a credential in the HAR file")
	}
}

// TestAdminFlowTrailersH2: a response with trailers to an HTTP/2 client
// (here, inside an intercepted CONNECT): the HTTP/2 server moves trailers
// into the header map after the handler has returned, so the flow keeps a
// copy, which the inspector reads while the server is still at it (go test
// -race tells).
func TestAdminFlowTrailersH2(t *testing.T) {
	o, roots := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "sum")
	})
	ca, caPool := newTestCA(t)
	tp := startProxy(t, WithInterception(ca), WithUpstreamRootCAs(roots))
	a, srv := openAdmin(t, tp.Proxy, AdminOptions{})
	c := tp.client(t, &tls.Config{RootCAs: caPool})
	// A reader of the newest flow's response header, as the inspector's
	// detail is, as soon as it is recorded.
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, f := range a.rec.ring.Query(flows.Filter{Limit: 1}) {
				for k, vv := range f.ResponseHeader {
					_, _ = k, len(vv)
				}
			}
		}
	}()
	defer func() {
		close(stop)
		<-read
	}()
	for range 20 {
		resp, err := c.Get(o.URL + "/t")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.Trailer.Get("X-Sum") != "sum" {
			t.Fatalf("%s, trailer %q", resp.Proto, resp.Trailer.Get("X-Sum"))
		}
		f := latestFlow(t, srv)
		if f.Status != 200 || !f.Intercepted {
			t.Errorf("flow %+v", f)
		}
	}
}

// TestDestination: the host a request counts for in the top destinations,
// the port left out when it is the scheme's default, without allocating.
func TestDestination(t *testing.T) {
	for _, tc := range []struct{ method, url, host, want string }{
		{"GET", "http://example.com/", "", "example.com"},
		{"GET", "http://example.com:80/", "", "example.com"},
		{"GET", "http://example.com:8080/", "", "example.com:8080"},
		{"GET", "https://example.com:443/", "", "example.com"},
		{"GET", "https://example.com:80/", "", "example.com:80"},
		{"GET", "http://[::1]/", "", "[::1]"},
		{"GET", "http://[::1]:80/", "", "[::1]"},
		{"GET", "http://[::1]:81/", "", "[::1]:81"},
		{"CONNECT", "", "example.com:443", "example.com"},
		{"CONNECT", "", "example.com:22", "example.com:22"},
		{"CONNECT", "", "[2001:db8::1]:443", "[2001:db8::1]"},
		{"GET", "/itself", "proxy.test", ""},
	} {
		r := &http.Request{Method: tc.method, Host: tc.host, URL: &url.URL{}}
		if tc.url != "" {
			r.URL, _ = url.Parse(tc.url)
		}
		if got := flowDestination(r); got != tc.want {
			t.Errorf("%s %s %s: %q, want %q", tc.method, tc.url, tc.host, got, tc.want)
		}
		if n := testing.AllocsPerRun(10, func() { flowDestination(r) }); n != 0 {
			t.Errorf("%s %s %s: %v allocations", tc.method, tc.url, tc.host, n)
		}
	}
}

// leastAllocs is the fewest allocations per request of five measurements
// of p (proxytest.ServeHTTPAllocs): what other goroutines allocate meanwhile
// (the access log's queue writing records, the dashboard's sampling) is
// counted too, and only ever adds, most under -race, where a measurement
// takes longer.
func leastAllocs(p *Proxy) float64 {
	least := proxytest.ServeHTTPAllocs(p)
	for range 4 {
		least = min(least, proxytest.ServeHTTPAllocs(p))
	}
	return least
}

// TestRecordingAllocations: without an Admin, and with one whose ring is
// paused, a request allocates nothing more than with no Admin at all (the
// destination count allocates nothing once its host is tracked). While it
// records, the packed record the ring keeps is the one allocation more
// when the access log is on (its request state is already made for the log
// line; the Flow handed to the ring stays on the stack); with the log off,
// the request state is made for the record alone: four more (its reqState,
// the context value and the request copy that carry it, and the record).
// The headers, URL and upstream address are written into the record, not
// copied one by one.
func TestRecordingAllocations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		logger *slog.Logger
		more   float64
	}{
		{"access log on", slog.New(slog.NewTextHandler(io.Discard, nil)), 1},
		{"no access log", slog.New(slog.DiscardHandler), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(WithRequestHook(proxytest.NoContent), WithLogger(tc.logger))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			none := leastAllocs(p)
			a, err := p.NewAdmin(AdminOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			recording := leastAllocs(p)
			a.rec.ring.Pause()
			paused := leastAllocs(p)
			if paused != none || recording != none+tc.more {
				t.Errorf("allocations per request: %v without an Admin, %v paused, %v recording; want the same twice, then %v more",
					none, paused, recording, tc.more)
			}
		})
	}
}
