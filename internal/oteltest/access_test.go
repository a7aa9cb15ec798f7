package oteltest

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
	"go.opentelemetry.io/otel/attribute"
)

// TestDenialMetrics: refusals by access control are counted by reason in
// the fwdproxy.denials metric and in Stats.
func TestDenialMetrics(t *testing.T) {
	_, port := proxytest.HitCountingOrigin(t)
	mopt, rd := metering(t)
	tp := startGuardedProxy(t, mopt, fwdproxy.WithDenyHosts("denied.test"), fwdproxy.WithRateLimit(1000, 1000),
		fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{"u": "p"})),
		fwdproxy.WithAccessHook(func(_ context.Context, a fwdproxy.Access) error {
			if a.Host == "hooked.test" {
				return errors.New("no")
			}
			return nil
		}))
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:p")) + "\r\n"
	req := func(host string, creds string) string {
		return "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n" + creds + "\r\n"
	}
	for _, r := range []string{
		req("127.0.0.1:"+port, auth),                  // private_address
		req("[::1]:"+port, auth),                      // private_address
		req("denied.test:"+port, auth),                // rule
		req("hooked.test:"+port, auth),                // hook
		req("denied.test:"+port, ""),                  // auth
		proxytest.ConnectRequest("127.0.0.1:" + port), // auth (no credentials)
	} {
		if status, body, _ := proxytest.Send(t, tp.Addr, r); status != 403 && status != 407 {
			t.Errorf("%.40q: %d %q", r, status, body)
		}
	}
	quiesce(t, tp.Proxy)
	m := collect(t, rd)["fwdproxy.denials"]
	for reason, want := range map[string]int64{"private_address": 2, "rule": 1, "hook": 1, "auth": 2} {
		if got := sumOf(t, m, attribute.String("fwdproxy.denial.reason", reason)); got != want {
			t.Errorf("denials{reason=%s} = %d, want %d", reason, got, want)
		}
	}
	if s := tp.Stats(); s.Denials != 6 || s.Errors.Forbidden != 4 || s.Errors.AuthRequired != 2 {
		t.Errorf("Stats: denials %d, errors %+v", s.Denials, s.Errors)
	}
}
