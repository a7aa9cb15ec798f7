package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fwdproxy/fwdproxy"
)

// The policies setting (the library's WithPolicies): per-user policy and
// quotas, a YAML list like upstreams, each policy on its line of the file.
// With -redis, their limits and quotas are shared by every replica on the
// same Redis (redis.go).

// policiesFlag is the policies setting. In the file:
//
//	policies:
//	  - name: staff
//	    users: [alice, bob]
//	    deny-hosts: ["*.example.net"]
//	    rate: 10            # requests and tunnels a second per user
//	    burst: 100
//	    bytes-per-day: 10GiB
//	    max-tunnels: 20
//	  - name: office
//	    clients: [10.0.0.0/8]
//	    intercept: "off"
//	    upstreams: [{via: [http://proxy.corp:3128]}]
type policiesFlag struct {
	policies []policyEntry
}

// policyEntry is one policy and the line of the file it starts on (0 when
// it did not come from the file).
type policyEntry struct {
	policy fwdproxy.Policy
	line   int
}

// policyKeys are the keys of a policy, for errors.
const policyKeys = "name, users, clients, allow-hosts, deny-hosts, ports, intercept, upstreams, rate, burst, bytes-per-day, max-tunnels"

// String returns the policies as YAML in flow style, credentials of their
// routes included: the setting's value, compared between reloads, never
// logged.
func (p *policiesFlag) String() string {
	if len(p.policies) == 0 {
		return "[]"
	}
	parts := make([]string, len(p.policies))
	for i, e := range p.policies {
		q := e.policy
		var f []string
		list := func(key string, items []string) {
			if len(items) > 0 {
				qs := make([]string, len(items))
				for j, it := range items {
					qs[j] = strconv.Quote(it)
				}
				f = append(f, key+": ["+strings.Join(qs, ", ")+"]")
			}
		}
		f = append(f, "name: "+strconv.Quote(q.Name))
		list("users", q.Users)
		list("clients", q.Clients)
		list("allow-hosts", q.AllowHosts)
		list("deny-hosts", q.DenyHosts)
		if len(q.Ports) > 0 {
			ps := make([]string, len(q.Ports))
			for j, port := range q.Ports {
				ps[j] = strconv.Itoa(int(port))
			}
			f = append(f, "ports: ["+strings.Join(ps, ", ")+"]")
		}
		if q.Intercept != "" {
			f = append(f, "intercept: "+strconv.Quote(q.Intercept))
		}
		if len(q.Routes) > 0 {
			rf := routesFlag{}
			for _, r := range q.Routes {
				rf.routes = append(rf.routes, routeEntry{route: r})
			}
			f = append(f, "upstreams: "+rf.String())
		}
		if q.Rate.PerSecond != 0 || q.Rate.Burst != 0 {
			f = append(f, "rate: "+strconv.FormatFloat(q.Rate.PerSecond, 'g', -1, 64), "burst: "+strconv.Itoa(q.Rate.Burst))
		}
		if q.BytesPerDay != 0 {
			f = append(f, "bytes-per-day: "+strconv.FormatInt(q.BytesPerDay, 10))
		}
		if q.MaxTunnels != 0 {
			f = append(f, "max-tunnels: "+strconv.Itoa(q.MaxTunnels))
		}
		parts[i] = "{" + strings.Join(f, ", ") + "}"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Set parses YAML text (flow style on a command line).
func (p *policiesFlag) Set(v string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(v), &doc); err != nil {
		return fmt.Errorf("not YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		p.policies = nil
		return nil
	}
	if line, msg := p.setNode(doc.Content[0]); msg != "" {
		return fmt.Errorf("line %d: %s", line, msg)
	}
	for i := range p.policies {
		p.policies[i].line = 0 // no file to point into
	}
	return nil
}

// setNode sets the policies from a YAML value; on failure it returns the
// line at fault and the problem, which never shows a value of a route (an
// upstream's credentials may be in it).
func (p *policiesFlag) setNode(n *yaml.Node) (int, string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	p.policies = nil
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return 0, ""
	}
	if n.Kind != yaml.SequenceNode {
		return n.Line, "want a list of policies, got " + nodeKind(n)
	}
	for i, item := range n.Content {
		for item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		at := fmt.Sprintf("policy %d: ", i+1)
		if item.Kind != yaml.MappingNode {
			return item.Line, at + "want a mapping (" + policyKeys + "), got " + nodeKind(item)
		}
		e := policyEntry{line: item.Line}
		q := &e.policy
		burst := false
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			for v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			var err error
			scalar := func() (string, error) {
				if v.Kind != yaml.ScalarNode || v.Tag == "!!null" || v.Value == "" {
					return "", errors.New("want one value, got " + nodeKind(v))
				}
				return v.Value, nil
			}
			switch k.Value {
			case "name":
				q.Name, err = scalar()
			case "users":
				q.Users, err = strings1(v)
			case "clients":
				q.Clients, err = strings1(v)
			case "allow-hosts":
				q.AllowHosts, err = strings1(v)
			case "deny-hosts":
				q.DenyHosts, err = strings1(v)
			case "ports":
				var ports []string
				if ports, err = strings1(v); err == nil {
					for _, s := range ports {
						n, perr := strconv.ParseUint(s, 10, 16)
						if perr != nil || n == 0 {
							err = fmt.Errorf("%q is not a port number", s)
							break
						}
						q.Ports = append(q.Ports, uint16(n))
					}
				}
			case "intercept":
				var s string
				if s, err = scalar(); err == nil {
					if s != "on" && s != "off" {
						err = fmt.Errorf("want \"on\" or \"off\" (quoted: YAML 1.1 readers take them for booleans), got %q", s)
					}
					q.Intercept = s
				}
			case "upstreams":
				var rf routesFlag
				if line, msg := rf.setNode(v); msg != "" {
					return line, at + "upstreams: " + msg
				}
				for _, r := range rf.routes {
					q.Routes = append(q.Routes, r.route)
				}
			case "rate":
				var s string
				if s, err = scalar(); err == nil {
					if q.Rate.PerSecond, err = strconv.ParseFloat(s, 64); err != nil || !(q.Rate.PerSecond > 0) {
						err = fmt.Errorf("%q is not a positive number of requests a second", s)
					}
				}
			case "burst":
				var s string
				if s, err = scalar(); err == nil {
					if q.Rate.Burst, err = strconv.Atoi(s); err != nil || q.Rate.Burst < 1 {
						err = fmt.Errorf("%q is not a whole number from 1", s)
					}
					burst = true
				}
			case "bytes-per-day":
				var s string
				if s, err = scalar(); err == nil {
					q.BytesPerDay, err = parseSize(s)
				}
			case "max-tunnels":
				var s string
				if s, err = scalar(); err == nil {
					if q.MaxTunnels, err = strconv.Atoi(s); err != nil || q.MaxTunnels < 1 {
						err = fmt.Errorf("%q is not a whole number from 1", s)
					}
				}
			default:
				return k.Line, at + fmt.Sprintf("unknown key %q: want %s", k.Value, policyKeys)
			}
			if err != nil {
				return v.Line, at + k.Value + ": " + err.Error()
			}
		}
		switch {
		case q.Name == "":
			return item.Line, at + "no name: each policy needs one (it names the policy in logs and refusals)"
		case burst && q.Rate.PerSecond == 0:
			return item.Line, at + "burst needs rate"
		case q.Rate.PerSecond > 0 && !burst:
			q.Rate.Burst = max(1, int(q.Rate.PerSecond+0.999)) // the rate rounded up, as -rate-burst
		}
		p.policies = append(p.policies, e)
	}
	return 0, ""
}

func (p *policiesFlag) reset() { p.policies = nil }

func (p *policiesFlag) Get() any { return p.String() }

func (p *policiesFlag) accepts() string {
	return "a list of policies, each a mapping of " + policyKeys
}

// option returns WithPolicies of the policies; none without any.
func (p *policiesFlag) options() []fwdproxy.Option {
	if len(p.policies) == 0 {
		return nil
	}
	ps := make([]fwdproxy.Policy, len(p.policies))
	for i, e := range p.policies {
		ps[i] = e.policy
	}
	return []fwdproxy.Option{fwdproxy.WithPolicies(ps...)}
}

// policyLine matches the policy number in the library's errors about a
// policy ("WithPolicies: policy 2 (…): …", "WithPolicies: policy \"x\": route 1: …").
var policyLine = regexp.MustCompile(`\bWithPolicies: policy (\d+) `)

// refine moves a problem with a policy to that policy's line in the file.
func (p *policiesFlag) refine(at origin, msg string) origin {
	if m := policyLine.FindStringSubmatch(msg); m != nil && at.file != "" {
		if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(p.policies) && p.policies[n-1].line > 0 {
			at.line = p.policies[n-1].line
		}
	}
	return at
}
