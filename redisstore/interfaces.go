package redisstore

import (
	"github.com/fwdproxy/fwdproxy"
)

// Rate and Decision are the core's (fwdproxy.Rate, fwdproxy.Decision),
// named here so that this package's API reads on its own.
type (
	Rate     = fwdproxy.Rate
	Decision = fwdproxy.Decision
)

// The interfaces of shared state are the core library's (shared.go); a
// *Store implements every one of them.
var (
	_ fwdproxy.CertStore      = (*Store)(nil)
	_ fwdproxy.CertLocker     = (*Store)(nil)
	_ fwdproxy.RateLimitStore = (*Store)(nil)
	_ fwdproxy.RateTaker      = (*Store)(nil)
	_ fwdproxy.QuotaStore     = (*Store)(nil)
	_ fwdproxy.LeaseStore     = (*Store)(nil)
	_ fwdproxy.SharedState    = (*Store)(nil)
)
