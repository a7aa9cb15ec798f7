package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fwdproxy/fwdproxy"
)

// The settings of the upstream proxies (the library's WithUpstreams,
// WithPAC, WithUpstreamResolvesNames, WithUpstreamProbe): -upstream for one
// pool in failover order, upstreams for routes, -pac for a PAC file. They
// reload live, like the library's routes.

// upstreamFlags are the upstream settings.
type upstreamFlags struct {
	upstream       listFlag   // -upstream: the default route's pool, in failover order
	routes         routesFlag // upstreams: routes
	pac            string     // -pac FILE
	pacCredentials listFlag   // -pac-credentials
	resolvesNames  bool       // -upstream-resolves-names
	probeInterval  time.Duration
	probeTarget    string
}

// register defines the flags on fs; def records each in the flag order.
func (u *upstreamFlags) register(fs *flag.FlagSet, def func(name string)) {
	fs.Var(&u.upstream, "upstream", "send requests and tunnels through the upstream proxy `URL`: http://, https:// or socks5://host:port, credentials as user:password@ (percent-encoded), or DIRECT; repeatable: tried in order, the next when one fails")
	def("upstream")
	fs.Var(&u.routes, "upstreams", "route by `ROUTES`, a YAML list: each route matches by hosts (host, *.domain or CIDR), ports, schemes (http, https: CONNECT and intercepted) and users, and sends through via (proxy URLs as for -upstream, DIRECT) by policy (failover, round-robin, least-outstanding, consistent-hash); the first route that matches wins, one without a match is the default, a request no route matches goes directly")
	def("upstreams")
	fs.StringVar(&u.pac, "pac", "", "route by the PAC file `FILE` (FindProxyForURL; read again on reload); excludes -upstream and upstreams")
	def("pac")
	fs.Var(&u.pacCredentials, "pac-credentials", "credentials for a proxy the PAC file names: its `URL` with user:password@ (repeatable)")
	def("pac-credentials")
	fs.BoolVar(&u.resolvesNames, "upstream-resolves-names", false, "let the upstream proxies resolve the names they are sent; without it a name is resolved here too and refused when an address is private (addresses are always checked)")
	def("upstream-resolves-names")
	fs.DurationVar(&u.probeInterval, "upstream-probe-interval", 0, "check each upstream proxy every `D` (a connection, or a tunnel to -upstream-probe-target); 0: only requests tell")
	def("upstream-probe-interval")
	fs.StringVar(&u.probeTarget, "upstream-probe-target", "", "probe by opening a tunnel to `host:port` through each upstream proxy")
	def("upstream-probe-target")
}

// options returns the library options of the upstream settings of l, or
// the problems, each located at its setting.
func (u *upstreamFlags) options(l *loaded) ([]fwdproxy.Option, []error) {
	var opts []fwdproxy.Option
	var errs []error
	bad := func(key, msg string) { errs = append(errs, l.problem(key, msg)) }
	switch {
	case u.pac != "" && len(u.upstream) > 0:
		bad("pac", "-pac and -upstream exclude each other: route by the PAC file or through -upstream, not both")
	case u.pac != "" && len(u.routes.routes) > 0:
		bad("pac", "-pac and upstreams exclude each other: route by the PAC file or by upstreams, not both")
	case len(u.upstream) > 0 && len(u.routes.routes) > 0:
		bad("upstream", "-upstream and upstreams exclude each other: make -upstream's pool the last (default) route of upstreams")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	switch {
	case len(u.upstream) > 0:
		opts = append(opts, fwdproxy.WithUpstreams(fwdproxy.Route{Upstreams: u.upstream}))
	case len(u.routes.routes) > 0:
		rs := make([]fwdproxy.Route, len(u.routes.routes))
		for i, r := range u.routes.routes {
			rs[i] = r.route
		}
		opts = append(opts, fwdproxy.WithUpstreams(rs...))
	case u.pac != "":
		src, err := os.ReadFile(u.pac)
		if err != nil {
			bad("pac", err.Error())
			break
		}
		opts = append(opts, fwdproxy.WithPAC(src, u.pacCredentials...))
	}
	if len(u.pacCredentials) > 0 && u.pac == "" {
		bad("pac-credentials", "needs -pac")
	}
	if u.resolvesNames {
		opts = append(opts, fwdproxy.WithUpstreamResolvesNames())
	}
	switch {
	case u.probeInterval > 0:
		opts = append(opts, fwdproxy.WithUpstreamProbe(u.probeInterval, u.probeTarget))
	case u.probeInterval < 0:
		bad("upstream-probe-interval", "want a positive duration, or 0 for none")
	case u.probeTarget != "":
		bad("upstream-probe-target", "needs -upstream-probe-interval")
	}
	return opts, errs
}

// routeLine matches the route number in the library's errors about a
// route ("WithUpstreams: route 2: …").
var routeLine = regexp.MustCompile(`\bWithUpstreams: route (\d+): `)

// refine moves a problem with the upstream settings to where it is: an
// error about route N of upstreams to that route's line in the file, and
// a PAC file's syntax error to the PAC file. It returns the problem
// unchanged otherwise.
func (u *upstreamFlags) refine(key string, at origin, msg string) (origin, string) {
	switch key {
	case "upstreams":
		if m := routeLine.FindStringSubmatch(msg); m != nil && at.file != "" {
			if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(u.routes.routes) && u.routes.routes[n-1].line > 0 {
				at.line = u.routes.routes[n-1].line
			}
		}
	case "pac":
		msg = strings.Replace(msg, "WithPAC: pac: syntax error at line ", u.pac+": syntax error at line ", 1)
	}
	return at, msg
}

// routesFlag is the upstreams setting: a YAML list of routes. In the file
// it is a YAML value, each route with its line; on the command line and in
// the environment, the same YAML in flow style:
//
//	upstreams: [{hosts: ["*.corp.example"], via: [http://proxy:3128, DIRECT]}, {via: [socks5://s:1080]}]
type routesFlag struct {
	routes []routeEntry
}

// routeEntry is one route, and the line of the file it starts on (0 when
// it did not come from the file).
type routeEntry struct {
	route fwdproxy.Route
	line  int
}

// String returns the routes in YAML flow style, credentials included: the
// setting's value, compared between reloads, never logged.
func (r *routesFlag) String() string {
	if len(r.routes) == 0 {
		return "[]"
	}
	parts := make([]string, len(r.routes))
	for i, e := range r.routes {
		var fields []string
		list := func(key string, items []string) {
			if len(items) > 0 {
				q := make([]string, len(items))
				for j, it := range items {
					q[j] = strconv.Quote(it)
				}
				fields = append(fields, key+": ["+strings.Join(q, ", ")+"]")
			}
		}
		list("hosts", e.route.Hosts)
		ports := make([]string, len(e.route.Ports))
		for j, p := range e.route.Ports {
			ports[j] = strconv.Itoa(int(p))
		}
		if len(ports) > 0 {
			fields = append(fields, "ports: ["+strings.Join(ports, ", ")+"]")
		}
		list("schemes", e.route.Schemes)
		list("users", e.route.Users)
		list("via", e.route.Upstreams)
		if e.route.Policy != "" {
			fields = append(fields, "policy: "+e.route.Policy)
		}
		parts[i] = "{" + strings.Join(fields, ", ") + "}"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Set parses YAML text (flow style on a command line).
func (r *routesFlag) Set(v string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(v), &doc); err != nil {
		return fmt.Errorf("not YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		r.routes = nil
		return nil
	}
	if line, msg := r.setNode(doc.Content[0]); msg != "" {
		return fmt.Errorf("line %d: %s", line, msg)
	}
	for i := range r.routes {
		r.routes[i].line = 0 // no file to point into
	}
	return nil
}

// setNode sets the routes from a YAML value; on failure it returns the
// line at fault and the problem, which never shows a value (an upstream's
// credentials may be in it).
func (r *routesFlag) setNode(n *yaml.Node) (int, string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	r.routes = nil
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return 0, ""
	}
	if n.Kind != yaml.SequenceNode {
		return n.Line, "want a list of routes, got " + nodeKind(n)
	}
	for i, item := range n.Content {
		for item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		at := fmt.Sprintf("route %d: ", i+1)
		if item.Kind != yaml.MappingNode {
			return item.Line, at + "want a mapping (hosts, ports, schemes, users, via, policy), got " + nodeKind(item)
		}
		e := routeEntry{line: item.Line}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			var err error
			switch k.Value {
			case "hosts":
				e.route.Hosts, err = strings1(v)
			case "schemes":
				e.route.Schemes, err = strings1(v)
			case "users":
				e.route.Users, err = strings1(v)
			case "via":
				e.route.Upstreams, err = strings1(v)
			case "ports":
				var ports []string
				if ports, err = strings1(v); err == nil {
					for _, p := range ports {
						n, perr := strconv.ParseUint(p, 10, 16)
						if perr != nil || n == 0 {
							err = fmt.Errorf("%q is not a port number", p)
							break
						}
						e.route.Ports = append(e.route.Ports, uint16(n))
					}
				}
			case "policy":
				if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
					err = errors.New("want failover, round-robin, least-outstanding or consistent-hash, got " + nodeKind(v))
				} else {
					e.route.Policy = v.Value
				}
			default:
				return k.Line, at + fmt.Sprintf("unknown key %q: want hosts, ports, schemes, users, via or policy", k.Value)
			}
			if err != nil {
				return v.Line, at + k.Value + ": " + err.Error()
			}
		}
		if len(e.route.Upstreams) == 0 {
			return item.Line, at + "no via: list the proxies (or DIRECT) it sends through"
		}
		r.routes = append(r.routes, e)
	}
	return 0, ""
}

// strings1 reads a YAML list of scalars, or one scalar.
func strings1(v *yaml.Node) ([]string, error) {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		for it.Kind == yaml.AliasNode && it.Alias != nil {
			it = it.Alias
		}
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" || it.Value == "" {
			return nil, errors.New("want a list of strings (or one string), got " + nodeKind(it))
		}
		out = append(out, it.Value)
	}
	return out, nil
}

func (r *routesFlag) reset() { r.routes = nil }

func (r *routesFlag) Get() any { return r.String() }

func (r *routesFlag) accepts() string {
	return "a list of routes, each a mapping of hosts, ports, schemes, users, via and policy"
}

// clientPAC serves a PAC file for the proxy's clients at /proxy.pac on the
// metrics listener: DIRECT for plain host names and loopback, this proxy
// (listening on proxyAddr) for the rest. When the proxy listens on every
// address, the host the client asked the metrics listener by stands for
// it.
func clientPAC(proxyAddr net.Addr) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, port, _ := net.SplitHostPort(proxyAddr.String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			} else {
				host = r.Host
			}
		}
		w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
		fmt.Fprintf(w, `// fwdproxy: send every request through the proxy, but for local names.
function FindProxyForURL(url, host) {
  if (isPlainHostName(host) || host == "localhost" || shExpMatch(host, "127.*") || host == "::1" || host == "[::1]") {
    return "DIRECT";
  }
  return "PROXY %s";
}
`, net.JoinHostPort(strings.Trim(host, "[]"), port))
	})
}
