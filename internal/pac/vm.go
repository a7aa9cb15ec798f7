package pac

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/dop251/goja"
)

// maxCallStack bounds a script's call depth, so that runaway recursion is
// an error rather than memory use until the timeout.
const maxCallStack = 1000

// vm is one goja runtime with the script loaded. It is used by one
// goroutine at a time.
type vm struct {
	e           *Evaluator
	rt          *goja.Runtime
	find        goja.Callable
	ctx         context.Context // the evaluation under way, for the DNS functions
	interrupted bool
}

// newVM makes a runtime, installs the helper functions and runs the
// script's top level, bounded by ctx.
func (e *Evaluator) newVM(ctx context.Context) (*vm, error) {
	rt := goja.New()
	rt.SetMaxCallStackSize(maxCallStack)
	rt.SetTimeSource(e.opts.now)
	v := &vm{e: e, rt: rt}
	if err := v.install(); err != nil {
		return nil, err
	}
	if _, err := v.call(ctx, func() (goja.Value, error) { return rt.RunProgram(e.prog) }); err != nil {
		return nil, err
	}
	find, ok := goja.AssertFunction(rt.Get("FindProxyForURL"))
	if !ok {
		return nil, errors.New("pac: the file does not define a function FindProxyForURL")
	}
	v.find = find
	return v, nil
}

// call runs f, interrupting the script when ctx ends. An interrupted
// runtime is marked so and must not be reused.
func (v *vm) call(ctx context.Context, f func() (goja.Value, error)) (goja.Value, error) {
	v.ctx = ctx
	defer func() { v.ctx = nil }()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		v.rt.Interrupt(ErrTimeout)
		close(fired)
	})
	ret, err := f()
	if !stop() {
		// The interrupt was sent, maybe after f returned: wait for it so
		// that it cannot land in a later use, and retire the runtime.
		<-fired
		v.interrupted = true
		v.rt.ClearInterrupt()
	}
	if err != nil {
		return nil, scriptError(ctx, err)
	}
	if ctx.Err() != nil {
		// A DNS function saw the end of ctx and the script went on.
		return nil, fmt.Errorf("pac: %w", timeoutError(ctx))
	}
	return ret, nil
}

// scriptError describes a failure of the script.
func scriptError(ctx context.Context, err error) error {
	var ie *goja.InterruptedError
	if errors.As(err, &ie) {
		return fmt.Errorf("pac: interrupted after the timeout: %w", timeoutError(ctx))
	}
	var so *goja.StackOverflowError
	if errors.As(err, &so) {
		return fmt.Errorf("pac: script error: call stack deeper than %d", maxCallStack)
	}
	var ex *goja.Exception
	if errors.As(err, &ex) {
		return fmt.Errorf("pac: script error: %s", strings.TrimSpace(ex.Error()))
	}
	return fmt.Errorf("pac: %w", err)
}

// install defines the helper functions of the PAC specification.
func (v *vm) install() error {
	fns := map[string]func(goja.FunctionCall) goja.Value{
		"isPlainHostName":     v.isPlainHostName,
		"dnsDomainIs":         v.dnsDomainIs,
		"localHostOrDomainIs": v.localHostOrDomainIs,
		"isResolvable":        v.isResolvable,
		"isInNet":             v.isInNet,
		"dnsResolve":          v.dnsResolve,
		"convert_addr":        v.convertAddr,
		"myIpAddress":         v.myIPAddress,
		"dnsDomainLevels":     v.dnsDomainLevels,
		"shExpMatch":          v.shExpMatch,
		"weekdayRange":        v.weekdayRange,
		"dateRange":           v.dateRange,
		"timeRange":           v.timeRange,
		"alert":               v.alert,
	}
	for name, f := range fns {
		if err := v.rt.Set(name, f); err != nil {
			return fmt.Errorf("pac: defining %s: %w", name, err)
		}
	}
	return nil
}

// arg returns argument i as a string ("" if absent, undefined or null).
func arg(c goja.FunctionCall, i int) string {
	a := c.Argument(i)
	if goja.IsUndefined(a) || goja.IsNull(a) {
		return ""
	}
	return a.String()
}

func (v *vm) bool(b bool) goja.Value { return v.rt.ToValue(b) }

func (v *vm) isPlainHostName(c goja.FunctionCall) goja.Value {
	return v.bool(!strings.Contains(arg(c, 0), "."))
}

// dnsDomainIs reports whether host ends with domain (".example.com").
func (v *vm) dnsDomainIs(c goja.FunctionCall) goja.Value {
	host, domain := arg(c, 0), arg(c, 1)
	return v.bool(len(host) >= len(domain) && strings.EqualFold(host[len(host)-len(domain):], domain))
}

// localHostOrDomainIs reports whether host is hostdom, or is unqualified
// and hostdom's first label.
func (v *vm) localHostOrDomainIs(c goja.FunctionCall) goja.Value {
	host, hostdom := arg(c, 0), arg(c, 1)
	if strings.EqualFold(host, hostdom) {
		return v.bool(true)
	}
	return v.bool(!strings.Contains(host, ".") && len(hostdom) > len(host) &&
		strings.EqualFold(hostdom[:len(host)], host) && hostdom[len(host)] == '.')
}

// lookup returns host's addresses: host itself if it is an IP literal,
// else the resolver's answer within the evaluation's context.
func (v *vm) lookup(host string) []netip.Addr {
	if host == "" {
		return nil
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	ctx := v.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	addrs, err := v.e.opts.resolver.LookupNetIP(ctx, host)
	if err != nil {
		return nil
	}
	return addrs
}

// firstAddr returns the first IPv4 address of addrs, else the first.
func firstAddr(addrs []netip.Addr) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), true
		}
	}
	if len(addrs) > 0 {
		return addrs[0], true
	}
	return netip.Addr{}, false
}

func (v *vm) isResolvable(c goja.FunctionCall) goja.Value {
	return v.bool(len(v.lookup(arg(c, 0))) > 0)
}

// dnsResolve returns host's first IPv4 address (else its first address)
// as a string, or null.
func (v *vm) dnsResolve(c goja.FunctionCall) goja.Value {
	a, ok := firstAddr(v.lookup(arg(c, 0)))
	if !ok {
		return goja.Null()
	}
	return v.rt.ToValue(a.String())
}

// isInNet reports whether host (an address, or a name resolved) is in the
// IPv4 network pattern/mask, both dotted quads.
func (v *vm) isInNet(c goja.FunctionCall) goja.Value {
	pattern, err1 := netip.ParseAddr(arg(c, 1))
	mask, err2 := netip.ParseAddr(arg(c, 2))
	if err1 != nil || err2 != nil || !pattern.Is4() || !mask.Is4() {
		return v.bool(false)
	}
	a, ok := firstAddr(v.lookup(arg(c, 0)))
	if !ok || !a.Is4() {
		return v.bool(false)
	}
	m := u32(mask)
	return v.bool(u32(a)&m == u32(pattern)&m)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// convertAddr returns a dotted quad as a 32-bit number (0 if it is not one).
func (v *vm) convertAddr(c goja.FunctionCall) goja.Value {
	a, err := netip.ParseAddr(arg(c, 0))
	if err != nil || !a.Is4() {
		return v.rt.ToValue(0)
	}
	return v.rt.ToValue(u32(a))
}

func (v *vm) myIPAddress(goja.FunctionCall) goja.Value {
	return v.rt.ToValue(v.e.myIPAddress())
}

func (e *Evaluator) myIPAddress() string {
	e.myIPOnce.Do(func() {
		if e.opts.myIP.IsValid() {
			e.myIP = e.opts.myIP.String()
			return
		}
		e.myIP = "127.0.0.1"
		ifaces, err := net.Interfaces()
		if err != nil {
			return
		}
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
					e.myIP = p.Addr().String()
					return
				}
			}
		}
	})
	return e.myIP
}

func (v *vm) dnsDomainLevels(c goja.FunctionCall) goja.Value {
	return v.rt.ToValue(strings.Count(arg(c, 0), "."))
}

func (v *vm) shExpMatch(c goja.FunctionCall) goja.Value {
	return v.bool(shExpMatch(arg(c, 0), arg(c, 1)))
}

// shExpMatch matches s against a shell expression where '*' is any
// string and '?' any one character; every other character is itself.
// Matching is case-sensitive, as in browsers.
func shExpMatch(s, pattern string) bool {
	// Iterative wildcard matching with backtracking to the last '*':
	// linear in practice, never exponential.
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pattern) && (pattern[pi] == '?' || pattern[pi] == s[si]):
			si++
			pi++
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

func (v *vm) alert(c goja.FunctionCall) goja.Value {
	v.e.opts.logger.Info("pac alert", "message", arg(c, 0))
	return goja.Undefined()
}
