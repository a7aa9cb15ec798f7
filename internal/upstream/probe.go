package upstream

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// ProbeConfig configures active health checks.
type ProbeConfig struct {
	// Interval is the time between rounds (default 10 s), varied at
	// random by ±10 % per round.
	Interval time.Duration
	// Timeout bounds each probe (default 5 s).
	Timeout time.Duration
	// Target, when set ("host:port"), makes each probe open a tunnel to it
	// through the upstream (CONNECT or SOCKS5) and close it; otherwise a
	// probe connects to the upstream (TCP, and TLS for HTTPS) and closes.
	Target string
}

// Probe checks u once as cfg says (Interval is not used) and reports the
// outcome to u's health, as Observe does; it returns that outcome. DIRECT
// is not probed: Probe returns nil.
func Probe(ctx context.Context, u *Upstream, cfg ProbeConfig) error {
	if u.kind == Direct {
		return nil
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if cfg.Target != "" {
		c, err := u.DialTunnel(ctx, cfg.Target) // observes
		if err != nil {
			return err
		}
		return c.Close()
	}
	c, e := u.connect(ctx, "")
	if e != nil {
		u.Observe(e)
		return e
	}
	u.Observe(nil)
	return c.Close()
}

// A Prober probes upstreams periodically until stopped.
type Prober struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartProbing probes every upstream of ups (DIRECT excepted) each round,
// concurrently, the first round at once. Stop ends it. A probe that fails
// marks its upstream down like a failed request; one that succeeds brings
// it back at once.
func StartProbing(ups []*Upstream, cfg ProbeConfig) *Prober {
	return StartProbingEach(func() []*Upstream { return ups }, cfg)
}

// StartProbingEach is StartProbing over the upstreams that list returns at
// the start of each round, for a set that grows (the upstreams a PAC file
// names, as they are met).
func StartProbingEach(list func() []*Upstream, cfg ProbeConfig) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{cancel: cancel}
	p.wg.Go(func() {
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			var round sync.WaitGroup
			for _, u := range list() {
				if u.kind != Direct {
					round.Go(func() { _ = Probe(ctx, u, cfg) })
				}
			}
			round.Wait()
			f := 0.9 + 0.2*rand.Float64()
			timer.Reset(time.Duration(float64(cfg.Interval) * f))
		}
	})
	return p
}

// Stop stops probing and waits for the probes under way to end (they are
// canceled). It may be called more than once.
func (p *Prober) Stop() {
	p.cancel()
	p.wg.Wait()
}
