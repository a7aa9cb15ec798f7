package fwdproxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// UpstreamStats is the health and the counters of one upstream of the
// routes (WithUpstreams, WithPAC), in Stats.Upstreams.
type UpstreamStats struct {
	// Name is the upstream as "scheme://host:port", or "DIRECT": never
	// with credentials.
	Name string
	// Up is false while the upstream is in back-off after a failure
	// (DIRECT is always up).
	Up bool
	// ConsecutiveFailures counts the failures since the last success.
	ConsecutiveFailures int
	// NextRetry is when an upstream that is down is next tried (zero
	// when up).
	NextRetry time.Time
	// LastFailure is when the latest failure was, and LastError what it
	// was (without credentials); zero and "" when there was none.
	LastFailure time.Time
	LastError   string
	// Outstanding counts the requests waiting for a response head and the
	// tunnels open through the upstream.
	Outstanding int64
	// Requests counts the requests and tunnels sent through the upstream;
	// Successes, Failures and Refusals the outcomes (of active checks
	// too): failures mark it down (it could not be reached, timed out or
	// broke the protocol), refusals do not (it answered, refusing the
	// target or our credentials).
	Requests, Successes, Failures, Refusals uint64
}

// upstreamStats returns Stats.Upstreams: the upstreams of the routes in
// force, nil without any.
func (p *Proxy) upstreamStats() []UpstreamStats {
	c := p.cfg.Load()
	if c == nil || c.routing == nil {
		return nil
	}
	ups := c.routing.all()
	out := make([]UpstreamStats, len(ups))
	for i, u := range ups {
		s := u.Stats()
		out[i] = UpstreamStats{Name: s.Name, Up: s.Up, ConsecutiveFailures: s.ConsecutiveFailures, NextRetry: s.NextRetry,
			LastFailure: s.LastFailure, LastError: s.LastError, Outstanding: s.Outstanding,
			Requests: s.Requests, Successes: s.Successes, Failures: s.Failures, Refusals: s.Refusals}
	}
	return out
}

// upstreamMetrics are the instruments of the upstream proxies: observed
// from their counters, labelled by their name (never credentials).
type upstreamMetrics struct {
	reg metric.Registration

	mu   sync.Mutex
	sets map[string]upstreamSets // attribute sets by name, made once
}

type upstreamSets struct {
	name                      metric.ObserveOption
	success, failure, refused metric.ObserveOption
}

// initUpstreamMetrics registers, with the meter of c's MeterProvider:
// fwdproxy.upstream.proxy.up (1 while an upstream is up, 0 while it is
// down), fwdproxy.upstream.proxy.active (its outstanding requests and
// tunnels) and fwdproxy.upstream.proxy.attempts (by outcome: success,
// failure or refused), each with the attribute upstream, the upstream's
// name. The unit of .up is {upstream}, not 1, so that Prometheus
// exporters call it fwdproxy_upstream_proxy_up (not …_up_ratio).
func (p *Proxy) initUpstreamMetrics(c *config) error {
	mp := c.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/fwdproxy/fwdproxy")
	up, err1 := m.Int64ObservableGauge("fwdproxy.upstream.proxy.up",
		metric.WithUnit("{upstream}"), metric.WithDescription("Whether an upstream proxy is up (1) or in back-off after a failure (0)."))
	active, err2 := m.Int64ObservableUpDownCounter("fwdproxy.upstream.proxy.active",
		metric.WithUnit("{request}"), metric.WithDescription("Requests waiting for a response head and tunnels open through an upstream proxy."))
	attempts, err3 := m.Int64ObservableCounter("fwdproxy.upstream.proxy.attempts",
		metric.WithUnit("{attempt}"), metric.WithDescription("Requests and tunnels sent through an upstream proxy, by outcome (success, failure, refused)."))
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	um := &p.upMetrics
	um.sets = map[string]upstreamSets{}
	var err error
	um.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c := p.cfg.Load()
		if c == nil || c.routing == nil {
			return nil
		}
		for _, u := range c.routing.all() {
			if u.IsDirect() {
				continue
			}
			s := u.Stats()
			sets := um.setsOf(s.Name)
			v := int64(0)
			if s.Up {
				v = 1
			}
			o.ObserveInt64(up, v, sets.name)
			o.ObserveInt64(active, s.Outstanding, sets.name)
			o.ObserveInt64(attempts, int64(s.Successes), sets.success)
			o.ObserveInt64(attempts, int64(s.Failures), sets.failure)
			o.ObserveInt64(attempts, int64(s.Refusals), sets.refused)
		}
		return nil
	}, up, active, attempts)
	return err
}

// setsOf returns the attribute sets of the upstream called name.
func (um *upstreamMetrics) setsOf(name string) upstreamSets {
	um.mu.Lock()
	defer um.mu.Unlock()
	s, ok := um.sets[name]
	if !ok {
		attr := attribute.String("upstream", name)
		set := func(outcome string) metric.ObserveOption {
			return metric.WithAttributeSet(attribute.NewSet(attr, attribute.String("outcome", outcome)))
		}
		s = upstreamSets{name: metric.WithAttributeSet(attribute.NewSet(attr)),
			success: set("success"), failure: set("failure"), refused: set("refused")}
		if len(um.sets) < maxPACUpstreams {
			um.sets[name] = s
		}
	}
	return s
}

// closeUpstreamMetrics unregisters the callback of initUpstreamMetrics.
func (p *Proxy) closeUpstreamMetrics() {
	if p.upMetrics.reg != nil {
		_ = p.upMetrics.reg.Unregister()
	}
}
