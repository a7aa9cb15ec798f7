package oteltest

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// TestUpstreamTelemetry: a request and a tunnel through an upstream proxy
// carry its name (never its credentials) in their spans, as
// fwdproxy.upstream.proxy on the server span and on the client span; the
// fwdproxy.upstream.proxy.* metrics count the attempts per upstream by
// outcome, and say which is up, also for one that failed.
func TestUpstreamTelemetry(t *testing.T) {
	const user, pass = "span-u53r", "span-Pa55w0rd-z3"
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	echoAddr := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	up := startProxy(t, allowPortOf(t, echoAddr), fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{user: pass})))
	dead := proxytest.ClosedPort(t)
	name, deadName := "http://"+up.Addr, "http://"+dead
	traceOpt, rec := tracing(t)
	meterOpt, rd := metering(t)
	tp := startProxy(t, traceOpt, meterOpt, allowPortOf(t, echoAddr),
		fwdproxy.WithUpstreams(fwdproxy.Route{Upstreams: []string{"http://" + user + ":" + pass + "@" + dead, "http://" + user + ":" + pass + "@" + up.Addr}}))

	resp, body := proxytest.MustGet(t, proxytest.Client(t, tp.URL, nil), o.URL+"/x")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	proxytest.TunnelRoundTrip(t, tp.Addr, echoAddr, 10)
	quiesce(t, tp.Proxy)

	secret := []string{pass, base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
	var servers, clients int
	for _, s := range rec.Ended() {
		attrs := attrMap(s.Attributes())
		for k, v := range attrs {
			for _, sec := range secret {
				if strings.Contains(v, sec) {
					t.Errorf("span %s attribute %s holds a credential: %s", s.Name(), k, v)
				}
			}
		}
		switch s.SpanKind() {
		case trace.SpanKindServer:
			servers++
			if attrs["fwdproxy.upstream.proxy"] != name {
				t.Errorf("server span %s: fwdproxy.upstream.proxy = %q, want %q", s.Name(), attrs["fwdproxy.upstream.proxy"], name)
			}
		case trace.SpanKindClient:
			clients++
			if got := attrs["fwdproxy.upstream.proxy"]; got != name && got != deadName {
				t.Errorf("client span: fwdproxy.upstream.proxy = %q, want one of the upstreams", got)
			}
		}
	}
	if servers != 2 || clients < 1 {
		t.Errorf("%d server spans and %d client spans; want 2 and at least 1", servers, clients)
	}

	m := collect(t, rd)
	upGauge, ok := m["fwdproxy.upstream.proxy.up"].Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("fwdproxy.upstream.proxy.up is %T", m["fwdproxy.upstream.proxy.up"].Data)
	}
	state := map[string]int64{}
	for _, dp := range upGauge.DataPoints {
		v, _ := dp.Attributes.Value("upstream")
		state[v.AsString()] = dp.Value
	}
	if state[name] != 1 || state[deadName] != 0 {
		t.Errorf("fwdproxy.upstream.proxy.up = %v; want %s up and %s down", state, name, deadName)
	}
	attempts := m["fwdproxy.upstream.proxy.attempts"]
	for _, c := range []struct {
		upstream, outcome string
		want              int64
	}{{name, "success", 2}, {deadName, "failure", 1}, {name, "failure", 0}} {
		got := sumOf(t, attempts, attribute.String("upstream", c.upstream), attribute.String("outcome", c.outcome))
		if got != c.want {
			t.Errorf("attempts{upstream=%s, outcome=%s} = %d, want %d", c.upstream, c.outcome, got, c.want)
		}
	}
	for k, mm := range m {
		if s := fmt.Sprint(mm.Data); strings.Contains(s, pass) {
			t.Errorf("metric %s holds a credential", k)
		}
	}
}
