package oteltest

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
)

// TestQuotaMetrics: a policy's refusals are counted by reason in
// fwdproxy.denials (policy, quota_rate, quota_bytes), and a download cut
// at the byte quota in fwdproxy.quota.cuts, as in Stats.
func TestQuotaMetrics(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 100_000)
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.Write(big)
	})
	mopt, rd := metering(t)
	tp := startProxy(t, mopt, fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{"alice": "a", "bob": "b"})),
		fwdproxy.WithPolicies(
			fwdproxy.Policy{Name: "metered", Users: []string{"alice"}, BytesPerDay: 50_000},
			fwdproxy.Policy{Name: "slow", Users: []string{"bob"}, Rate: fwdproxy.Rate{PerSecond: 0.001, Burst: 1}, DenyHosts: []string{"denied.test"}}))
	req := func(user, host string) string {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + user[:1]))
		return "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\nProxy-Authorization: Basic " + auth + "\r\n\r\n"
	}
	host := o.Listener.Addr().String()
	// alice: a download cut at her quota, then a refusal.
	c, br := proxytest.RawConn(t, tp.Addr)
	proxytest.MustWrite(t, c, req("alice", host))
	if resp, err := http.ReadResponse(br, nil); err == nil {
		io.Copy(io.Discard, resp.Body)
	}
	c.Close()
	quiesce(t, tp.Proxy)
	for _, tc := range []struct {
		user, host string
		want       int
	}{{"alice", host, 429}, {"bob", "denied.test", 403}, {"bob", host, 200}, {"bob", host, 429}} {
		if status, _, _ := proxytest.Send(t, tp.Addr, req(tc.user, tc.host)); status != tc.want {
			t.Errorf("%s to %s: %d, want %d", tc.user, tc.host, status, tc.want)
		}
	}
	quiesce(t, tp.Proxy)
	ms := collect(t, rd)
	for reason, want := range map[string]int64{"policy": 1, "quota_rate": 1, "quota_bytes": 1} {
		if got := sumOf(t, ms["fwdproxy.denials"], attribute.String("fwdproxy.denial.reason", reason)); got != want {
			t.Errorf("denials{reason=%s} = %d, want %d", reason, got, want)
		}
	}
	if got := sumOf(t, ms["fwdproxy.quota.cuts"]); got != 1 {
		t.Errorf("fwdproxy.quota.cuts = %d, want 1", got)
	}
	if got := sumOf(t, ms["fwdproxy.quota.store.errors"]); got != 0 {
		t.Errorf("fwdproxy.quota.store.errors = %d, want 0", got)
	}
	if s := tp.Stats(); s.Quotas.Cuts != 1 || s.DeniedBy.Policy != 1 || s.DeniedBy.QuotaRate != 1 || s.DeniedBy.QuotaBytes != 1 {
		t.Errorf("Stats: %+v, %+v", s.Quotas, s.DeniedBy)
	}
}
