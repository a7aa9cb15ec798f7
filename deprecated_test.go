package fwdproxy

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestDeprecatedNames: each name an option had before every option was
// named With… still works: it configures exactly what its new name
// configures, and NewResolver or New takes it.
func TestDeprecatedNames(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 192.0.2.53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		old, new ResolverOption
	}{
		{"DNSServers", DNSServers("192.0.2.1", "[::1]:5353"), WithDNSServers("192.0.2.1", "[::1]:5353")},
		{"DNSResolvConf", DNSResolvConf(conf), WithResolvConf(conf)},
		{"DNSHostsFile", DNSHostsFile(""), WithHostsFile("")},
		{"DNSCacheSize", DNSCacheSize(7), WithDNSCacheSize(7)},
		{"DNSTTL", DNSTTL(time.Second, time.Minute), WithDNSTTL(time.Second, time.Minute)},
		{"DNSNegativeTTL", DNSNegativeTTL(time.Minute), WithDNSNegativeTTL(time.Minute)},
		{"DNSErrorTTL", DNSErrorTTL(3 * time.Second), WithDNSErrorTTL(3 * time.Second)},
		{"DNSServeStale", DNSServeStale(time.Minute), WithDNSServeStale(time.Minute)},
		{"DNSTimeout", DNSTimeout(time.Second), WithDNSTimeout(time.Second)},
		{"DNSPrefetch", DNSPrefetch(false), WithDNSPrefetch(false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := defaultResolverConfig(), defaultResolverConfig()
			if err := tc.old.applyResolver(&got); err != nil {
				t.Fatal(err)
			}
			if err := tc.new.applyResolver(&want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) || reflect.DeepEqual(got, defaultResolverConfig()) {
				t.Errorf("%s configures %+v, want %+v", tc.name, got, want)
			}
			r, err := NewResolver(tc.old, DNSServers("192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			p, err := New(tc.old)
			if err != nil {
				t.Fatal(err)
			}
			_ = p.Shutdown(context.Background())
		})
	}

	ca, _ := newTestCA(t)
	store, err := NewMemoryCertStore(8)
	if err != nil {
		t.Fatal(err)
	}
	decide := func(context.Context, string, *http.Request) bool { return true }
	for _, tc := range []struct {
		name     string
		old, new InterceptOption
	}{
		{"BypassHosts", BypassHosts("example.com", "*.example.org", "10.0.0.0/8"), WithInterceptBypass("example.com", "*.example.org", "10.0.0.0/8")},
		{"InterceptIf", InterceptIf(decide), WithInterceptFunc(decide)},
		{"CertCacheSize", CertCacheSize(7), WithCertCacheSize(7)},
		{"ShareCertStore", ShareCertStore(store), WithCertStore(store)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, want interceptSettings
			if err := tc.old(&got); err != nil {
				t.Fatal(err)
			}
			if err := tc.new(&want); err != nil {
				t.Fatal(err)
			}
			// Functions compare by the code they run.
			if reflect.ValueOf(got.decide).Pointer() != reflect.ValueOf(want.decide).Pointer() {
				t.Errorf("%s sets another InterceptFunc", tc.name)
			}
			got.decide, want.decide = nil, nil
			if !reflect.DeepEqual(got, want) || reflect.DeepEqual(got, interceptSettings{}) && tc.name != "InterceptIf" {
				t.Errorf("%s configures %+v, want %+v", tc.name, got, want)
			}
			p, err := New(WithInterception(ca, tc.old))
			if err != nil {
				t.Fatal(err)
			}
			_ = p.Shutdown(context.Background())
		})
	}
}
