package upstream

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// Policy is how a Pool orders its upstreams for a request.
type Policy uint8

// The policies.
const (
	// Failover tries the upstreams in the order given.
	Failover Policy = iota
	// RoundRobin starts each request on the next upstream in turn.
	RoundRobin
	// LeastOutstanding starts on the upstream with the fewest requests
	// between Begin and End; ties go round robin.
	LeastOutstanding
	// ConsistentHash starts on the upstream that rendezvous hashing
	// (highest random weight) gives the destination host, so that a host
	// keeps its exit while the set of upstreams up is unchanged; when one
	// goes down, only the hosts it served move, spread over the others.
	ConsistentHash
)

var policyNames = [...]string{"failover", "round-robin", "least-outstanding", "consistent-hash"}

// String returns the policy's name as ParsePolicy accepts it.
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", p)
}

// ParsePolicy parses "failover", "round-robin", "least-outstanding" or
// "consistent-hash" (case-insensitive; "" is failover).
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return Failover, nil
	}
	for i, n := range policyNames {
		if strings.EqualFold(s, n) {
			return Policy(i), nil
		}
	}
	return 0, fmt.Errorf("upstream: unknown policy %q: want one of %s", s, strings.Join(policyNames[:], ", "))
}

// maxPool bounds a pool's size, so that the round-robin orders can be
// precomputed (n² pointers) and picks sort with insertion sort.
const maxPool = 64

// A Pool is a set of upstreams and a policy that orders them for each
// request. It is safe for concurrent use; its upstreams' health is theirs
// and shared with other pools that hold them.
type Pool struct {
	policy Policy
	ups    []*Upstream
	orders [][]*Upstream // RoundRobin: the n rotations of ups, for the all-up pick
	next   atomic.Uint64 // RoundRobin, LeastOutstanding: the turn
}

// NewPool returns a pool of ups (at most 64, none nil, none twice) with the
// given policy.
func NewPool(policy Policy, ups ...*Upstream) (*Pool, error) {
	if int(policy) >= len(policyNames) {
		return nil, fmt.Errorf("upstream: unknown policy %d", policy)
	}
	if len(ups) == 0 {
		return nil, errors.New("upstream: a pool needs at least one upstream")
	}
	if len(ups) > maxPool {
		return nil, fmt.Errorf("upstream: a pool holds at most %d upstreams, not %d", maxPool, len(ups))
	}
	for i, u := range ups {
		if u == nil {
			return nil, fmt.Errorf("upstream: pool entry %d is nil", i)
		}
		if slices.Index(ups, u) != i {
			return nil, fmt.Errorf("upstream: %s is in the pool twice", u.Name())
		}
	}
	p := &Pool{policy: policy, ups: slices.Clone(ups)}
	if policy == RoundRobin {
		n := len(p.ups)
		p.orders = make([][]*Upstream, n)
		for i := range n {
			p.orders[i] = append(slices.Clone(p.ups[i:]), p.ups[:i]...)
		}
	}
	return p, nil
}

// Policy returns the pool's policy.
func (p *Pool) Policy() Policy { return p.policy }

// Upstreams returns the pool's upstreams in the order given to NewPool.
// The slice is shared: do not modify it.
func (p *Pool) Upstreams() []*Upstream { return p.ups }

// Pick returns the order in which to try the pool's upstreams for a
// request to host (a name or IP without port; only ConsistentHash uses
// it): every upstream, those available first in the policy's order, then
// those down, least recently failed first. So when every upstream of the
// pool is down they are still tried, rather than the request failing
// outright. A down upstream whose back-off has passed is available to one
// Pick (a trial); the others see it down until its outcome is observed.
//
// The caller tries them in order, applying MayRetry between attempts and
// capping the attempts as it sees fit. The returned slice may be shared:
// do not modify it. A pool of one upstream, and Failover and RoundRobin
// with every upstream up, return a precomputed slice without allocating;
// see AppendPick for the other cases.
func (p *Pool) Pick(host string) []*Upstream {
	if len(p.ups) == 1 {
		p.ups[0].available() // a trial, if it is due
		return p.ups
	}
	switch p.policy {
	case Failover:
		if p.allUp() {
			return p.ups
		}
	case RoundRobin:
		if p.allUp() {
			return p.orders[(p.next.Add(1)-1)%uint64(len(p.ups))]
		}
	}
	return p.AppendPick(make([]*Upstream, 0, len(p.ups)), host)
}

// AppendPick appends Pick's order to dst and returns the extended slice.
// With a dst of enough capacity (a stack array of 8, say) it does not
// allocate, whatever the policy and health.
func (p *Pool) AppendPick(dst []*Upstream, host string) []*Upstream {
	start := len(dst)
	var downMask uint64 // bit i: p.ups[i] is not available
	for i, u := range p.ups {
		if u.available() {
			dst = append(dst, u)
		} else {
			downMask |= 1 << i
		}
	}
	avail := dst[start:]
	if (p.policy == RoundRobin || p.policy == LeastOutstanding) && len(avail) > 1 {
		// Rotate among those available, so that the turns of one that is
		// down spread over all the others, not onto its successor.
		k := int((p.next.Add(1) - 1) % uint64(len(avail)))
		slices.Reverse(avail[:k])
		slices.Reverse(avail[k:])
		slices.Reverse(avail)
	}
	switch p.policy {
	case LeastOutstanding:
		// Stable insertion sort: equal loads keep the rotated order.
		for i := 1; i < len(avail); i++ {
			for j := i; j > 0 && avail[j].Outstanding() < avail[j-1].Outstanding(); j-- {
				avail[j], avail[j-1] = avail[j-1], avail[j]
			}
		}
	case ConsistentHash:
		hostHash := hashHost(host)
		for i := 1; i < len(avail); i++ {
			for j := i; j > 0 && score(hostHash, avail[j]) > score(hostHash, avail[j-1]); j-- {
				avail[j], avail[j-1] = avail[j-1], avail[j]
			}
		}
	}
	if downMask == 0 {
		return dst
	}
	mid := len(dst)
	for i, u := range p.ups {
		if downMask&(1<<i) != 0 {
			dst = append(dst, u)
		}
	}
	down := dst[mid:]
	for i := 1; i < len(down); i++ {
		for j := i; j > 0 && down[j].lastFailureNs() < down[j-1].lastFailureNs(); j-- {
			down[j], down[j-1] = down[j-1], down[j]
		}
	}
	return dst
}

// AppendFailover appends ups (at most 64, the first 64 are taken) in the
// order a Failover pool of them would pick: those available first, in the
// order given, then those down, least recently failed first. It serves
// orders that are not known in advance, such as a PAC file's answers; with a
// dst of enough capacity it does not allocate.
func AppendFailover(dst []*Upstream, ups []*Upstream) []*Upstream {
	p := Pool{policy: Failover, ups: ups[:min(len(ups), maxPool)]}
	return p.AppendPick(dst, "")
}

// allUp reports whether no upstream of the pool is in back-off.
func (p *Pool) allUp() bool {
	for _, u := range p.ups {
		if u.health.down.Load() {
			return false
		}
	}
	return true
}

// Stats returns a snapshot of each upstream, in the order given to NewPool.
func (p *Pool) Stats() []Stats {
	s := make([]Stats, len(p.ups))
	for i, u := range p.ups {
		s[i] = u.Stats()
	}
	return s
}

// score is the rendezvous weight of upstream u for a host.
func score(hostHash uint64, u *Upstream) uint64 {
	return mix64(hostHash ^ u.nameHash)
}

// hashHost is FNV-1a of host in ASCII lower case without a trailing dot,
// so that spellings of one host agree.
func hashHost(host string) uint64 {
	host = strings.TrimSuffix(host, ".")
	h := uint64(14695981039346656037)
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
