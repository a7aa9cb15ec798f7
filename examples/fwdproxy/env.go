package main

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// envPrefix starts the name of every environment variable the server reads.
const envPrefix = "FWDPROXY_"

// envName is the environment variable that sets the flag called name:
// FWDPROXY_ followed by the name in upper case with dashes as underscores.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets each flag from its FWDPROXY_<NAME> variable, when that
// variable is set, over the configuration file and before the command line
// is parsed (so a flag on the command line wins), and records the variable
// in origins. A list variable replaces the file's list. environ is
// os.Environ() in the server. It returns the FWDPROXY_ variables that name
// no flag, for the caller to warn about once its logger exists.
func applyEnv(fs *flagSet, environ []string, origins map[string]origin) (unknown []unknownVar, err error) {
	known := make(map[string]*flag.Flag)
	fs.VisitAll(func(fl *flag.Flag) {
		if !noEnv[fl.Name] {
			known[envName(fl.Name)] = fl
		}
	})
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		fl, ok := known[name]
		if !ok {
			unknown = append(unknown, unknownVar{name, closestEnvName(known, name)})
			continue
		}
		key := canonical(fl.Name)
		if o, twice := origins[key]; twice && o.env != "" {
			return nil, fmt.Errorf("%s and %s: both set, and one is an alias of the other; set one", o.env, name)
		}
		if isBoolFlag(fl) {
			b, ok := parseEnvBool(value)
			if !ok {
				return nil, fmt.Errorf("%s=%q: want true or false (also 1/0, yes/no, on/off)", name, value)
			}
			value = b
		}
		if r, ok := fl.Value.(interface{ reset() }); ok {
			r.reset()
		}
		if e := fl.Value.Set(value); e != nil {
			return nil, fmt.Errorf("%s=%q: %w", name, value, e)
		}
		origins[key] = origin{env: name}
	}
	slices.SortFunc(unknown, func(a, b unknownVar) int { return strings.Compare(a.name, b.name) })
	return unknown, nil
}

// unknownVar is a FWDPROXY_ variable that names no flag, with the variable
// it was probably meant to be ("" when none is close).
type unknownVar struct{ name, closest string }

func isBoolFlag(fl *flag.Flag) bool {
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parseEnvBool reads the words people write in environment files for a
// boolean, case-insensitively, as "true" or "false".
func parseEnvBool(v string) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "y", "yes", "on":
		return "true", true
	case "0", "f", "false", "n", "no", "off":
		return "false", true
	}
	return "", false
}

// closestEnvName says what an unknown FWDPROXY_ variable was probably meant
// to be: the known variable closest to it, if one is close enough to be a
// typo.
func closestEnvName(known map[string]*flag.Flag, name string) string {
	best, bestD := "", 3 // more than two edits away is not a typo
	for _, v := range slices.Sorted(maps.Keys(known)) {
		if d := editDistance(name, v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
