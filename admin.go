package fwdproxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
	"github.com/fwdproxy/fwdproxy/internal/dashboard"
	"github.com/fwdproxy/fwdproxy/internal/flows"
)

// AdminOptions configures an Admin (NewAdmin). The zero value is a working
// admin handler: no token, 1,000 flows or 64 MiB of them kept, no HAR file.
type AdminOptions struct {
	// Token, when not empty, is required on every admin request but
	// /healthz, /readyz and the Public paths: as "Authorization: Bearer
	// TOKEN", or once as ?token=TOKEN in a page's URL, which sets an
	// HttpOnly, SameSite=Strict cookie for the pages and their event
	// streams. Without a token, requests must name an IP address,
	// localhost or one of AllowedHosts in their Host header, so that a web
	// page cannot reach the admin pages by rebinding its name (DNS
	// rebinding); listen on a loopback address then. SetToken changes it.
	Token string
	// AllowedHosts are host names that requests may name in their Host
	// header without a token, besides IP addresses and localhost.
	AllowedHosts []string
	// Public are paths, besides /healthz and /readyz, served without the
	// token (exact paths, such as "/proxy.pac").
	Public []string
	// MaxFlows and MaxFlowBytes cap the flow ring: the most recent flows
	// are kept, at most MaxFlows of them (default 1,000) and at most
	// MaxFlowBytes of memory (default 64 MiB) with their headers and body
	// prefixes.
	MaxFlows     int
	MaxFlowBytes int64
	// HARFile, when not empty, is a file to which every flow recorded is
	// written as HAR 1.2, as it is recorded; the file is complete (valid
	// JSON) once Close returns. Past HARFileMaxBytes (when above 0) the
	// file is completed and renamed with the time added to its name
	// (flows.har becomes flows-20260102T150405.000Z.har), and a new one
	// started.
	HARFile         string
	HARFileMaxBytes int64
	// ReadyChecks are checked by /readyz after the Proxy's own (a
	// configuration in force, Serve running, not shutting down).
	ReadyChecks []ReadyCheck
}

// ReadyCheck is one check of /readyz: Check reports why the service is not
// ready to take traffic, or nil. It is called with a context that ends
// after a few seconds.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Admin serves a Proxy's admin pages, and records its flows while it is
// open. It is an http.Handler, meant for a listener of its own (the
// example server's -admin-listen), on a loopback address or behind its
// token:
//
//	GET  /                     the dashboard: rates, errors, latency, bytes, connections, top destinations, live
//	GET  /flows                the flow inspector: the recent requests, their headers, bodies and timing phases
//	GET  /flows.har            the flows the inspector's filters select, as HAR 1.2
//	GET  /api/stats            the dashboard's data as JSON; /api/stats/stream as Server-Sent Events
//	GET  /api/flows            flows as JSON (filters host, status, method, user, after, before, limit);
//	                           /api/flows/{id} one with its headers and bodies; /api/flows/stream new ones as events
//	POST /api/flows/pause      stop recording; /api/flows/resume, /api/flows/clear
//	GET  /healthz              200 while the process serves
//	GET  /readyz               200 when ready to take traffic, else 503; each check's outcome on a line
//
// Handle adds more (the example server's /metrics and pprof).
//
// What is recorded: for every request (a tunnel's CONNECT, each request
// decrypted from an intercepted one) its method, URL, status, user, client
// and upstream addresses, byte counts, error, timing phases (DNS, connect,
// TLS, first byte, total), the client's request header and the response
// header, and with WithCapture the first bytes of each body (up to 64 KiB).
// The values of Authorization, Proxy-Authorization, Cookie and Set-Cookie
// and passwords in URLs are redacted. Recording costs each request its
// record and the state that builds it, and nothing while paused.
type Admin struct {
	p      *Proxy
	rec    *recorder
	mux    *http.ServeMux
	guard  *adminui.Guarded
	insp   *flows.Handler
	har    *flows.HARFile
	checks []ReadyCheck

	closeOnce sync.Once
	closeErr  error
}

// NewAdmin returns the admin handler of p and starts recording p's flows,
// until Close. One Admin at a time may be open on a Proxy.
func (p *Proxy) NewAdmin(o AdminOptions) (*Admin, error) {
	if o.MaxFlows < 0 || o.MaxFlowBytes < 0 || o.HARFileMaxBytes < 0 {
		return nil, errors.New("fwdproxy.NewAdmin: negative MaxFlows, MaxFlowBytes or HARFileMaxBytes")
	}
	for _, c := range o.ReadyChecks {
		if c.Name == "" || c.Check == nil {
			return nil, errors.New("fwdproxy.NewAdmin: a ReadyCheck needs a Name and a Check")
		}
	}
	a := &Admin{p: p, mux: http.NewServeMux(), checks: o.ReadyChecks}
	ring := flows.NewRing(flows.Options{MaxFlows: o.MaxFlows, MaxBytes: o.MaxFlowBytes})
	a.rec = &recorder{ring: ring, dash: dashboard.New(dashboard.SourceFunc(a.sample), dashboard.Options{})}
	if o.HARFile != "" {
		har, err := flows.OpenHARFile(ring, o.HARFile, flows.HARFileOptions{MaxBytes: o.HARFileMaxBytes})
		if err != nil {
			return nil, errors.New("fwdproxy.NewAdmin: HARFile: " + err.Error())
		}
		a.har = har
	}
	if !p.rec.CompareAndSwap(nil, a.rec) {
		if a.har != nil {
			a.har.Close()
		}
		return nil, errors.New("fwdproxy.NewAdmin: an Admin is open on this Proxy already; Close it first")
	}
	a.rec.dash.Start()
	a.insp = flows.NewHandler(ring, flows.HandlerOptions{})
	a.rec.dash.Register(a.mux)
	a.insp.Register(a.mux)
	a.mux.HandleFunc("GET /healthz", healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	public := append([]string{"/healthz", "/readyz"}, o.Public...)
	a.guard = adminui.Guard(a.mux, adminui.GuardOptions{Token: o.Token, AllowedHosts: o.AllowedHosts, Public: public})
	return a, nil
}

// ServeHTTP serves the admin pages (see Admin).
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.guard.ServeHTTP(w, r) }

// Handle adds a handler for pattern (as http.ServeMux patterns go, which
// must not conflict with the admin pages' own), served behind the token
// like them, unless its path is in AdminOptions.Public.
func (a *Admin) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// SetToken changes the token (see AdminOptions.Token) from the next request
// on; "" removes it.
func (a *Admin) SetToken(token string) { a.guard.SetToken(token) }

// Close stops recording and sampling, ends the pages' event streams, and
// completes the HAR file, returning the error writing it met, if any.
// Close the Admin after shutting down the Proxy for the HAR file to hold
// every request. Its handler still answers after Close, with the flows it
// holds, until its server is shut down.
func (a *Admin) Close() error {
	a.closeOnce.Do(func() {
		a.p.rec.CompareAndSwap(a.rec, nil)
		a.rec.dash.Close()
		a.insp.Close()
		if a.har != nil {
			a.closeErr = a.har.Close()
		}
	})
	return a.closeErr
}

// sample is the dashboard's reading of p's counters, once a second.
func (a *Admin) sample() dashboard.Sample {
	s := a.p.Stats()
	e, d, b := s.Errors, s.DeniedBy, s.Bytes
	errs := counts(
		ErrMalformed, e.Malformed, ErrAuthRequired, e.AuthRequired, ErrForbidden, e.Forbidden,
		ErrUnavailable, e.Unavailable, ErrUpstream, e.Upstream, ErrUpstreamTimeout, e.UpstreamTimeout,
		ErrLoop, e.Loop, ErrRateLimited, e.RateLimited, ErrTooLarge, e.TooLarge, ErrClientTimeout, e.ClientTimeout)
	denials := counts(
		"rule", d.Rule, "private_address", d.PrivateAddress, "auth", d.Auth, "rate_limit", d.RateLimit,
		"body_size", d.BodySize, "hook", d.Hook, "forbidden", d.Forbidden, "auth_required", d.AuthRequired)
	return dashboard.Sample{
		Requests:          s.Requests,
		Errors:            errs,
		Denials:           denials,
		ActiveConnections: s.ActiveConnections,
		ActiveRequests:    s.ActiveRequests,
		ActiveTunnels:     s.ActiveTunnels,
		BytesIn:           b.RequestBodies + b.TunnelUp,
		BytesOut:          b.ResponseBodies + b.TunnelDown,
		DNSHits:           s.DNS.Hits,
		DNSMisses:         s.DNS.Misses,
		UpstreamNew:       s.Reuse.NewConns,
		UpstreamReused:    s.Reuse.Requests - min(s.Reuse.NewConns, s.Reuse.Requests),
		P50:               s.Latency.P50,
		P95:               s.Latency.P95,
		P99:               s.Latency.P99,
	}
}

// counts makes a map of the non-zero counts of name, count pairs, where a
// name is a string or an error kind (by kindName).
func counts(pairs ...any) map[string]uint64 {
	m := make(map[string]uint64)
	for i := 0; i+1 < len(pairs); i += 2 {
		n := pairs[i+1].(uint64)
		if n == 0 {
			continue
		}
		switch k := pairs[i].(type) {
		case string:
			m[k] = n
		case error:
			m[kindName(k)] = n
		}
	}
	return m
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// readyCheckTimeout bounds all of /readyz's checks together.
const readyCheckTimeout = 3 * time.Second

// readyz answers 200 "ready" when every check passes, else 503 "not ready",
// with a line per check: "name: ok" or "name: why not".
func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyCheckTimeout)
	defer cancel()
	var b strings.Builder
	ready := true
	for _, c := range append(a.p.readyChecks(), a.checks...) {
		b.WriteString(c.Name)
		if err := c.Check(ctx); err != nil {
			ready = false
			b.WriteString(": " + err.Error() + "\n")
		} else {
			b.WriteString(": ok\n")
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n" + b.String()))
		return
	}
	_, _ = w.Write([]byte("ready\n" + b.String()))
}

// readyChecks are the Proxy's own checks of /readyz: a configuration in
// force, not shutting down, and Serve running on a listener (when the
// Proxy was given one: a Proxy mounted on a server of yours has none, and
// that server's readiness is yours to check).
func (p *Proxy) readyChecks() []ReadyCheck {
	return []ReadyCheck{
		{"config", func(context.Context) error {
			if p.cfg.Load() == nil {
				return errors.New("no configuration loaded")
			}
			return nil
		}},
		{"listening", func(context.Context) error {
			if p.servedOnce.Load() && p.serving.Load() == 0 {
				return errors.New("Serve is not running on any listener")
			}
			return nil
		}},
		{"draining", func(context.Context) error {
			if p.isClosing() {
				return errors.New("shutting down: draining requests and tunnels")
			}
			return nil
		}},
	}
}
