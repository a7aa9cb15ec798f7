package fwdproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/netx"
	"github.com/fwdproxy/fwdproxy/internal/policy"
	"github.com/fwdproxy/fwdproxy/internal/quota"
)

// Per-user policy (WithPolicies) and its enforcement in the one pipeline:
// admit matches the request's policy and applies its rules, rate and byte
// quota (policyAdmit); serveConnect holds a lease per tunnel while it is open
// (holdTunnel); the response and request bodies and the tunnel's relay count
// their bytes against the byte quota and stop at it (meteredBody,
// copyMetered). The policies are the configuration's; the usage they are
// enforced against is the store's (WithSharedState), or the Proxy's memory,
// and outlives a configuration.

// userPolicies are a configuration's compiled policies.
type userPolicies struct {
	list     []userPolicy
	shared   SharedState // nil: the Proxy's memory
	leaseTTL time.Duration
}

// userPolicy is one compiled Policy.
type userPolicy struct {
	Policy
	index     int                 // 1-based: the routes of the policy carry it (route.go)
	users     map[string]struct{} // nil: no Users
	clients   *policy.PrefixSet   // nil: no Clients
	rules     *policy.Rules       // nil: no host or port rule
	intercept int8                // 0: the Proxy's; 1: on; -1: off
}

// day is the window of BytesPerDay.
const day = 24 * time.Hour

// compilePolicies compiles s's policies; nil when there are none.
func compilePolicies(s *settings) (*userPolicies, error) {
	if len(s.policies) == 0 {
		return nil, nil
	}
	ups := &userPolicies{shared: s.shared, leaseTTL: s.leaseTTL}
	names := map[string]bool{}
	var errs []error
	catchAll := -1
	for i := range s.policies {
		p := &s.policies[i]
		at := "WithPolicies: policy " + strconv.Itoa(i+1) + " (" + strconv.Quote(p.Name) + "): "
		if catchAll >= 0 {
			errs = append(errs, errors.New(at+"it is never used: policy "+strconv.Itoa(catchAll+1)+" before it matches every request (a policy without Users and Clients is the default; put it last)"))
			continue
		}
		if err := validatePolicy(p, at); err != nil {
			errs = append(errs, err)
			continue
		}
		if names[p.Name] {
			errs = append(errs, errors.New(at+"the name is used twice"))
		}
		names[p.Name] = true
		up := userPolicy{Policy: *p, index: i + 1}
		if len(p.Users) > 0 {
			up.users = make(map[string]struct{}, len(p.Users))
			for _, u := range p.Users {
				if u == "" {
					errs = append(errs, errors.New(at+"an empty user name in Users"))
				}
				up.users[u] = struct{}{}
			}
		}
		if len(p.Clients) > 0 {
			ps, err := parsePrefixes(at+"Clients", p.Clients)
			if err == nil {
				up.clients, err = policy.NewPrefixSet(ps...)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		if up.users == nil && up.clients == nil {
			catchAll = i
		}
		if len(p.AllowHosts) > 0 || len(p.DenyHosts) > 0 || len(p.Ports) > 0 {
			var conf policy.Config
			var err1, err2 error
			conf.AllowHosts, conf.AllowCIDRs, err1 = parseHostRules(at+"AllowHosts", p.AllowHosts)
			conf.DenyHosts, conf.DenyCIDRs, err2 = parseHostRules(at+"DenyHosts", p.DenyHosts)
			if err := errors.Join(err1, err2); err != nil {
				errs = append(errs, err)
				continue
			}
			ports := []policy.PortRange{{Lo: 1, Hi: 65535}}
			if len(p.Ports) > 0 {
				ports = ports[:0]
				for _, port := range p.Ports {
					ports = append(ports, policy.PortRange{Lo: port, Hi: port})
				}
			}
			conf.Ports, conf.ConnectPorts = ports, ports
			r, err := policy.NewRules(conf)
			if err != nil {
				errs = append(errs, errors.New(at+err.Error()))
				continue
			}
			up.rules = r
		}
		switch p.Intercept {
		case "on":
			up.intercept = 1
			if s.interception == nil {
				errs = append(errs, errors.New(at+`Intercept "on" needs WithInterception`))
			}
		case "off":
			up.intercept = -1
		}
		if len(p.Routes) > 0 && s.pacSrc != nil {
			errs = append(errs, errors.New(at+"Routes cannot be combined with WithPAC"))
		}
		ups.list = append(ups.list, up)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ups, nil
}

// match returns the first policy that matches the user (or, without one,
// the client's address), nil when none does.
func (ups *userPolicies) match(user, remote string) *userPolicy {
	var ip netip.Addr
	parsed := false
	for i := range ups.list {
		up := &ups.list[i]
		if user != "" {
			if _, ok := up.users[user]; ok {
				return up
			}
		} else if up.clients != nil {
			if !parsed {
				parsed = true
				if ap, err := netip.ParseAddrPort(remote); err == nil {
					ip = ap.Addr().Unmap()
				}
			}
			if _, ok := up.clients.Lookup(ip); ok && ip.IsValid() {
				return up
			}
		}
		if up.users == nil && up.clients == nil {
			return up
		}
	}
	return nil
}

// policyMatch is a request's policy and the state its quotas are kept in:
// it rides in the dialPolicy (access.go) from admit on.
type policyMatch struct {
	pol     *userPolicy
	subject string      // "u:" and the user, or "c:" and the client address
	store   SharedState // the configuration's, or the Proxy's memory
	meter   *quota.Meter
	leases  time.Duration // the configuration's lease ttl
}

type ctxKeyPolicy struct{}

// policyOf returns the policy that admitted the request of ctx, or nil.
func policyOf(ctx context.Context) *policyMatch {
	m, _ := ctx.Value(ctxKeyPolicy{}).(*policyMatch)
	return m
}

// policyIf is policyOf for a request under c, at no cost when c has no
// policies (the usual path).
func policyIf(ctx context.Context, c *config) *policyMatch {
	if c.users == nil {
		return nil
	}
	return policyOf(ctx)
}

// policyIndex is the 1-based index of ctx's policy, 0 for none: what
// routes of a policy match (route.go).
func policyIndex(ctx context.Context, c *config) int {
	if m := policyIf(ctx, c); m != nil {
		return m.pol.index
	}
	return 0
}

// quotaState is what outlives a configuration for the policies: the
// in-memory store, the byte meters and the counters.
type quotaState struct {
	mem memoryState

	mu     sync.Mutex
	meters map[string]*quota.Meter // subject → its meter
	stocks map[string]*rateStock   // subject → its batch of a shared rate limit

	cuts, storeErrors atomic.Uint64
	storeDown         atomic.Bool // the last store call failed: logged once per change
}

// maxMeters bounds the meters kept; beyond it they are all dropped (their
// usage is in the store; what they had not flushed is flushed first).
const maxMeters = 65536

func newQuotaState() *quotaState {
	return &quotaState{mem: memoryState{quota.NewMemory(nil)}, meters: make(map[string]*quota.Meter),
		stocks: make(map[string]*rateStock)}
}

// rateStock is a subject's batch of events of a shared rate limit (see
// RateTaker), for one store and rate.
type rateStock struct {
	*quota.Stock
	store RateTaker
	rate  Rate
}

// stock returns the batch of subject's rate limit r on store, or nil when
// the store takes no batches (it is the Proxy's memory, it has no
// RateTaker, or batches of r would be single events): then each decision
// asks the store.
func (p *Proxy) stock(store SharedState, subject string, r Rate) *quota.Stock {
	t, ok := store.(RateTaker)
	if !ok {
		return nil
	}
	if _, mem := store.(memoryState); mem {
		return nil
	}
	k := quota.BatchSize(r.PerSecond, r.Burst, RateBatchWindow)
	if k <= 1 {
		return nil
	}
	q := p.quotas
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.stocks[subject]; s != nil && s.store == t && s.rate == r {
		return s.Stock
	}
	if len(q.stocks) >= maxMeters {
		// The events held are lost: at most one batch each, refused to
		// no one but this replica's own requests.
		clear(q.stocks)
	}
	key := "rate:" + subject
	s := &rateStock{store: t, rate: r, Stock: quota.NewStock(k, DefaultStoreTimeout, func(ctx context.Context, n int) (int, time.Duration, error) {
		return t.Take(ctx, key, r, n)
	})}
	q.stocks[subject] = s
	return s.Stock
}

// storeOf returns the store the configuration's policies use.
func (p *Proxy) storeOf(ups *userPolicies) SharedState {
	if ups.shared != nil {
		return ups.shared
	}
	return p.quotas.mem
}

// meter returns the byte meter of subject on store with limit, made when
// there is none or its store or limit changed (a reload).
func (p *Proxy) meter(store SharedState, subject string, limit int64) *quota.Meter {
	q := p.quotas
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.meters[subject]
	if m != nil && m.Store() == quota.Adder(store) && m.Limit() == limit {
		return m
	}
	if m != nil {
		go m.Close()
	}
	if len(q.meters) >= maxMeters {
		for k, old := range q.meters {
			go old.Close()
			delete(q.meters, k)
		}
	}
	m = quota.NewMeter(store, "bytes:"+subject, limit, day, DefaultStoreTimeout, p.storeFailed)
	q.meters[subject] = m
	return m
}

// storeFailed counts a failed call to the shared store and logs the first
// of a run of failures; storeOK logs the end of one.
func (p *Proxy) storeFailed(err error) {
	p.quotas.storeErrors.Add(1)
	if p.quotas.storeDown.CompareAndSwap(false, true) {
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "shared state failing: deciding quotas in memory",
			slog.String("error", err.Error()))
	}
}

func (p *Proxy) storeOK() {
	if p.quotas.storeDown.Load() && p.quotas.storeDown.CompareAndSwap(true, false) {
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "shared state answering again")
	}
}

// storeCtx bounds a call to a shared store by DefaultStoreTimeout; the
// in-memory store needs no bound.
func storeCtx(ctx context.Context, store SharedState) (context.Context, context.CancelFunc) {
	if _, mem := store.(memoryState); mem {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultStoreTimeout)
}

// policyAdmit applies the policy that matches a request (its rules, rate
// and byte quota) under c; it returns the match (nil: no policy) or the
// refusal, with Retry-After set on w for a quota.
func (p *Proxy) policyAdmit(ctx context.Context, c *config, w http.ResponseWriter, r *http.Request, target, host string, port uint16, connect bool) (*policyMatch, *Error) {
	user := authUser(ctx)
	up := c.users.match(user, r.RemoteAddr)
	if up == nil {
		return nil, nil
	}
	subject := "u:" + user
	if user == "" {
		subject = "c:" + clientIP(r.RemoteAddr)
	}
	if up.rules != nil {
		ip, _ := policy.ParseHost(host)
		if ok, reason := up.rules.Check(host, ip, port, connect); !ok {
			return nil, denied(ErrForbidden, "policy", target, "access denied by policy "+strconv.Quote(up.Name)+": "+reason)
		}
	}
	store := p.storeOf(c.users)
	m := &policyMatch{pol: up, subject: subject, store: store, leases: c.users.leaseTTL}
	if up.Rate.PerSecond > 0 {
		var d Decision
		var err error
		if st := p.stock(store, subject, up.Rate); st != nil {
			var qd quota.Decision
			qd, err = st.Allow(ctx)
			d = Decision(qd)
		} else {
			sctx, cancel := storeCtx(ctx, store)
			d, err = store.Allow(sctx, "rate:"+subject, up.Rate)
			cancel()
		}
		if err != nil {
			p.storeFailed(err)
			d, _ = p.quotas.mem.Allow(ctx, "rate:"+subject, up.Rate)
		} else {
			p.storeOK()
		}
		if !d.Allowed {
			w.Header()["Retry-After"] = []string{retryAfter(d.RetryAfter)}
			return nil, denied(ErrRateLimited, "quota_rate", target, "too many requests: policy "+strconv.Quote(up.Name)+
				" allows "+strconv.FormatFloat(up.Rate.PerSecond, 'g', -1, 64)+" a second (burst "+strconv.Itoa(up.Rate.Burst)+") per user")
		}
	}
	if up.BytesPerDay > 0 {
		m.meter = p.meter(store, subject, up.BytesPerDay)
		now := time.Now()
		if m.meter.Stale(now) {
			if err := m.meter.Flush(ctx); err == nil {
				p.storeOK()
			}
		}
		if m.meter.Remaining() <= 0 {
			reset := m.meter.Reset()
			if !reset.After(now) {
				_, reset = quota.WindowOf(now, day)
			}
			w.Header()["Retry-After"] = []string{retryAfter(reset.Sub(now))}
			return nil, denied(ErrRateLimited, "quota_bytes", target, "byte quota used up: policy "+strconv.Quote(up.Name)+
				" allows "+strconv.FormatInt(up.BytesPerDay, 10)+" bytes a day per user; it resets at "+reset.UTC().Format(time.RFC3339))
		}
	}
	return m, nil
}

// retryAfter is a Retry-After value: whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// holdTunnel takes one of the policy's tunnel leases for a tunnel of m; it
// returns the release, or false when the user has MaxTunnels open.
func (p *Proxy) holdTunnel(ctx context.Context, m *policyMatch) (release func(), ok bool) {
	key := "tunnels:" + m.subject
	store := m.store
	sctx, cancel := storeCtx(ctx, store)
	id, ok, err := store.Acquire(sctx, key, m.pol.MaxTunnels, m.leases)
	cancel()
	if err != nil {
		p.storeFailed(err)
		store = p.quotas.mem
		id, ok, _ = store.Acquire(ctx, key, m.pol.MaxTunnels, m.leases)
	} else if _, mem := store.(memoryState); !mem {
		p.storeOK()
	}
	if !ok {
		return nil, false
	}
	l := quota.NewLease(store, key, id, m.leases, p.storeFailed)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStoreTimeout)
		defer cancel()
		if err := l.Release(ctx); err != nil {
			p.storeFailed(err)
		}
	}, true
}

// interceptOverride reports the policy's choice on interception: decided
// and whether to intercept; not decided leaves it to the Proxy.
func (m *policyMatch) interceptOverride() (decided, on bool) {
	if m == nil || m.pol.intercept == 0 {
		return false, false
	}
	return true, m.pol.intercept > 0
}

// errQuotaReached ends a transfer at its byte quota.
var errQuotaReached = errors.New("byte quota reached")

// meteredBody counts a body's bytes against a byte quota and ends it with
// errQuotaReached there.
type meteredBody struct {
	io.ReadCloser
	m   *quota.Meter
	cut atomic.Bool // it ended at the quota
}

func (b *meteredBody) Read(p []byte) (int, error) {
	left := b.m.Remaining()
	if left <= 0 {
		b.cut.Store(true)
		return 0, errQuotaReached
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.ReadCloser.Read(p)
	b.m.Add(int64(n))
	return n, err
}

// meterChunk is the most a metered tunnel moves between two looks at its
// quota: io.CopyN of it keeps splice (a LimitedReader over a TCP
// connection).
const meterChunk = 64 << 10

// copyMetered copies src to dst like pump's io.Copy, counting into total
// and m and stopping with errQuotaReached at m's quota. With splice (both
// ends TCP: the kernel's counters show the idle watch that bytes move) it
// copies in chunks of up to meterChunk; otherwise it counts every read, so
// that a tunnel moving less than a chunk per idle timeout is not taken
// for idle.
func copyMetered(dst io.Writer, src io.Reader, total *atomic.Int64, m *quota.Meter, splice bool) error {
	if !splice {
		return copyMeteredBuffered(dst, src, total, m)
	}
	for {
		left := m.Remaining()
		if left <= 0 {
			return errQuotaReached
		}
		n, err := io.CopyN(dst, src, min(left, meterChunk))
		total.Add(n)
		m.Add(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// copyMeteredBuffered is copyMetered through a pooled buffer, each read at
// most what the quota has left.
func copyMeteredBuffered(dst io.Writer, src io.Reader, total *atomic.Int64, m *quota.Meter) error {
	buf := netx.GetBuffer()
	defer netx.PutBuffer(buf)
	for {
		left := m.Remaining()
		if left <= 0 {
			return errQuotaReached
		}
		n, rerr := src.Read(buf[:min(left, int64(len(buf)))])
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total.Add(int64(w))
			m.Add(int64(w))
			if werr != nil {
				return werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// logCut logs a transfer cut at its byte quota, once.
func (p *Proxy) logCut(ctx context.Context, m *policyMatch, target, client string) {
	p.quotas.cuts.Add(1)
	p.log.LogAttrs(ctx, slog.LevelWarn, "byte quota reached: transfer cut",
		slog.String("policy", m.pol.Name), slog.String("subject", m.subject),
		slog.String("target", target), slog.String("client", client),
		slog.Int64("quota", m.pol.BytesPerDay))
}

// requestPolicy returns the policy of the request resp answers, or nil.
func requestPolicy(resp *http.Response) *policyMatch {
	if resp.Request == nil {
		return nil
	}
	return policyOf(resp.Request.Context())
}

// describePolicies describes policies for the configuration's description
// (configdesc.go), their routes without credentials.
func describePolicies(ps []Policy) string {
	if len(ps) == 0 {
		return "off"
	}
	var b strings.Builder
	for i := range ps {
		p := &ps[i]
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d: %q users %v clients %v allow %v deny %v ports %v intercept %q rate %g/s burst %d bytes/day %d tunnels %d",
			i+1, p.Name, p.Users, p.Clients, p.AllowHosts, p.DenyHosts, p.Ports, p.Intercept,
			p.Rate.PerSecond, p.Rate.Burst, p.BytesPerDay, p.MaxTunnels)
		for j := range p.Routes {
			fmt.Fprintf(&b, " route %d: %s", j+1, describeRoute(&p.Routes[j]))
		}
	}
	return b.String()
}

// flush stops the meters' timers and flushes what they counted: Shutdown
// calls it, so that a replica that stops leaves its usage in the store.
func (q *quotaState) flush() {
	q.mu.Lock()
	ms := make([]*quota.Meter, 0, len(q.meters))
	for _, m := range q.meters {
		ms = append(ms, m)
	}
	q.mu.Unlock()
	for _, m := range ms {
		m.Close()
	}
}
