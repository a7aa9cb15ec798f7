package fwdproxy

import "time"

// The names options had before they were all named With…. Each is a thin
// wrapper of the new one and stays so that no build breaks; errors name the
// new option.

// DNSServers sets the DNS servers a Resolver queries.
//
// Deprecated: use WithDNSServers.
func DNSServers(addrs ...string) ResolverOption { return WithDNSServers(addrs...) }

// DNSResolvConf sets the resolv.conf file a Resolver reads its servers from.
//
// Deprecated: use WithResolvConf.
func DNSResolvConf(path string) ResolverOption { return WithResolvConf(path) }

// DNSHostsFile sets the hosts file a Resolver answers from.
//
// Deprecated: use WithHostsFile.
func DNSHostsFile(path string) ResolverOption { return WithHostsFile(path) }

// DNSCacheSize bounds the names a Resolver caches.
//
// Deprecated: use WithDNSCacheSize.
func DNSCacheSize(n int) ResolverOption { return WithDNSCacheSize(n) }

// DNSTTL clamps the time a Resolver caches answers.
//
// Deprecated: use WithDNSTTL.
func DNSTTL(min, max time.Duration) ResolverOption { return WithDNSTTL(min, max) }

// DNSNegativeTTL caps the time a Resolver caches negative answers.
//
// Deprecated: use WithDNSNegativeTTL.
func DNSNegativeTTL(max time.Duration) ResolverOption { return WithDNSNegativeTTL(max) }

// DNSErrorTTL sets how long a Resolver caches failed lookups.
//
// Deprecated: use WithDNSErrorTTL.
func DNSErrorTTL(d time.Duration) ResolverOption { return WithDNSErrorTTL(d) }

// DNSServeStale sets how long a Resolver serves expired answers when its
// servers fail.
//
// Deprecated: use WithDNSServeStale.
func DNSServeStale(window time.Duration) ResolverOption { return WithDNSServeStale(window) }

// DNSTimeout bounds each exchange of a Resolver with a server.
//
// Deprecated: use WithDNSTimeout.
func DNSTimeout(d time.Duration) ResolverOption { return WithDNSTimeout(d) }

// DNSPrefetch enables or disables a Resolver's prefetching.
//
// Deprecated: use WithDNSPrefetch.
func DNSPrefetch(enabled bool) ResolverOption { return WithDNSPrefetch(enabled) }

// BypassHosts tunnels CONNECTs to matching destinations instead of
// intercepting them.
//
// Deprecated: use WithInterceptBypass.
func BypassHosts(patterns ...string) InterceptOption { return WithInterceptBypass(patterns...) }

// InterceptIf sets the function that decides which CONNECTs are
// intercepted.
//
// Deprecated: use WithInterceptFunc.
func InterceptIf(f InterceptFunc) InterceptOption { return WithInterceptFunc(f) }

// CertCacheSize sets how many leaf certificates the default store keeps.
//
// Deprecated: use WithCertCacheSize.
func CertCacheSize(n int) InterceptOption { return WithCertCacheSize(n) }

// ShareCertStore makes the proxy keep its leaf certificates in cs.
//
// Deprecated: use WithCertStore.
func ShareCertStore(cs CertStore) InterceptOption { return WithCertStore(cs) }
