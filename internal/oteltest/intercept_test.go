package oteltest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TestInterceptTelemetryAndRules: each decrypted request gets its own
// server and client span (https URL, its own status) and passes the same
// access rules as plain requests.
func TestInterceptTelemetryAndRules(t *testing.T) {
	o, originRoots := proxytest.TLSOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "ok")
	})
	ca, caPool := proxytest.NewCA(t)
	topt, rec := tracing(t)
	tp := startProxy(t, topt, fwdproxy.WithInterception(ca), fwdproxy.WithUpstreamRootCAs(originRoots), allowPortOf(t, o.Listener.Addr().String()),
		fwdproxy.WithAccessHook(func(_ context.Context, a fwdproxy.Access) error {
			if !a.Connect && a.Method == http.MethodDelete {
				return fwdproxy.Deny(http.StatusForbidden, "no deletes")
			}
			return nil
		}))
	target := o.Listener.Addr().String()
	tc, br := proxytest.ConnectTLS(t, tp.Addr, target, "127.0.0.1", caPool, "http/1.1")
	defer tc.Close()
	for _, req := range []struct {
		method, path string
		status       int
	}{{"GET", "/a", 200}, {"GET", "/missing", 404}, {"DELETE", "/a", 403}} {
		proxytest.MustWrite(t, tc, req.method+" "+req.path+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != req.status {
			t.Errorf("%s %s: %d, want %d", req.method, req.path, resp.StatusCode, req.status)
		}
	}
	tc.Close()
	quiesce(t, tp.Proxy)
	got := map[string]bool{}
	for _, s := range endedSpans(t, rec, trace.SpanKindServer) {
		a := attrMap(s.Attributes())
		got[a["http.request.method"]+" "+a["url.full"]+" "+a["http.response.status_code"]] = true
	}
	for _, want := range []string{
		"GET https://" + target + "/a 200",
		"GET https://" + target + "/missing 404",
		"DELETE https://" + target + "/a 403",
	} {
		if !got[want] {
			t.Errorf("no server span %q among %v", want, got)
		}
	}
	if n := len(endedSpans(t, rec, trace.SpanKindClient)); n != 2 {
		t.Errorf("%d client spans, want 2 (the denied request is not sent)", n)
	}
}

// countingConn counts the bytes a client reads and writes.
type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// TestInterceptAccounting: an intercepted CONNECT is a tunnel to Stats,
// the access log and its span: status 200, the bytes of the whole
// connection each way, the number of requests served inside, and an error
// only when there was one (a failed handshake).
func TestInterceptAccounting(t *testing.T) {
	o, originRoots := proxytest.TLSOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	target := o.Listener.Addr().String()
	ca, caPool := proxytest.NewCA(t)
	topt, rec := tracing(t)
	var buf proxytest.SyncBuffer
	p, err := fwdproxy.New(fwdproxy.WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))), fwdproxy.WithAllowPrivate(), allowPortOf(t, target),
		topt, fwdproxy.WithInterception(ca), fwdproxy.WithUpstreamRootCAs(originRoots))
	if err != nil {
		t.Fatal(err)
	}
	tp := serve(t, p)

	c, _ := proxytest.Connect(t, tp.Addr, target, "")
	cc := &countingConn{Conn: c}
	tc := tls.Client(cc, &tls.Config{RootCAs: caPool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	br := bufio.NewReader(tc)
	for i := range 3 {
		h := ""
		if i == 2 {
			h = "Connection: close\r\n"
		}
		proxytest.MustWrite(t, tc, "GET /"+fmt.Sprint(i)+" HTTP/1.1\r\nHost: "+target+"\r\n"+h+"\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i == 0 {
			if s := p.Stats(); s.ActiveTunnels != 1 {
				t.Errorf("ActiveTunnels = %d during an intercepted connection, want 1", s.ActiveTunnels)
			}
		}
	}
	if _, err := io.ReadAll(br); err != nil { // the proxy closes after Connection: close
		t.Fatal(err)
	}
	written, read := cc.written.Load(), cc.read.Load()
	tc.Close()

	// A client that does not trust the CA fails its handshake.
	c2, _ := proxytest.Connect(t, tp.Addr, target, "")
	if err := tls.Client(c2, &tls.Config{ServerName: "127.0.0.1"}).Handshake(); err == nil {
		t.Fatal("handshake succeeded without trusting the CA")
	}
	c2.Close()

	quiesce(t, p)
	recs := proxytest.ConnectRecords(t, &buf, 2)
	ok, failed := recs[0], recs[1]
	if ok["error"] != nil { // the records may come in either order
		ok, failed = failed, ok
	}
	for k, v := range map[string]any{"status": float64(200), "requests": float64(3), "bytes_in": float64(written), "bytes_out": float64(read), "error": nil} {
		if ok[k] != v {
			t.Errorf("intercepted CONNECT record %s = %v, want %v", k, ok[k], v)
		}
	}
	for k, v := range map[string]any{"status": float64(200), "requests": float64(0), "error": "tls_handshake"} {
		if failed[k] != v {
			t.Errorf("failed-handshake CONNECT record %s = %v, want %v", k, failed[k], v)
		}
	}
	if reason, _ := failed["reason"].(string); !strings.Contains(reason, "trust the interception CA") {
		t.Errorf("failed-handshake CONNECT record's reason %q does not say the client must trust the CA", reason)
	}
	if strings.Contains(buf.String(), "intercepted TLS handshake failed") {
		t.Error("the failed handshake has a log line besides its access record")
	}
	if s := p.Stats(); s.Errors != (fwdproxy.ErrorCounts{}) || s.ActiveTunnels != 0 {
		t.Errorf("Stats: errors %+v, active tunnels %d; want none", s.Errors, s.ActiveTunnels)
	}
	var spans []string
	for _, s := range endedSpans(t, rec, trace.SpanKindServer) {
		a := attrMap(s.Attributes())
		if a["http.request.method"] != "CONNECT" {
			continue
		}
		if s.Status().Code == codes.Error {
			t.Errorf("CONNECT span has error status %v", s.Status())
		}
		spans = append(spans, fmt.Sprintf("%s requests=%s error=%q", a["http.response.status_code"], a["fwdproxy.intercept.requests"], a["error.type"]))
	}
	slices.Sort(spans)
	if got, want := strings.Join(spans, "; "), `200 requests=0 error="tls_handshake"; 200 requests=3 error=""`; got != want {
		t.Errorf("CONNECT spans %q, want %q", got, want)
	}
}
