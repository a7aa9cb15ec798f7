package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The settings come in layers, each over the one before: the defaults, the
// configuration file (-config), the environment (FWDPROXY_<NAME>), the
// command line. A layer that sets a list replaces the list below it rather
// than adding to it: "-deny-host a" with "deny-host: [b]" in the file
// denies a only.

// loaded is the settings the layers make, and where each came from.
type loaded struct {
	s          *settings
	fs         *flagSet
	origins    map[string]origin // settings that are not at their default
	unknownEnv []unknownVar      // FWDPROXY_ variables that name no flag
	hash       [sha256.Size]byte // of the configuration file as read
}

// origin is where a setting got its value: a line of the file, an
// environment variable or the command line.
type origin struct {
	file string
	line int
	env  string
	flag bool
	name string // the alias it was given by, if one was (settings.go)
}

// where names the setting key as it was given there: "FILE:LINE: key",
// "FWDPROXY_KEY", "-key", or just the key for a default; by the alias it
// was given by, if one was.
func (o origin) where(key string) string {
	if o.name != "" {
		key = o.name
	}
	switch {
	case o.flag:
		return "-" + key
	case o.env != "":
		return o.env
	case o.file != "":
		return fmt.Sprintf("%s:%d: %s", o.file, o.line, key)
	}
	return key
}

// settingError is a problem with one setting, said where it was set (as
// nginx -t does: "fwdproxy.yaml:12: deny-host: …").
type settingError struct {
	key string
	at  origin
	msg string
}

func (e *settingError) Error() string { return e.at.where(e.key) + ": " + e.msg }

// fileError is a problem with the file that no key owns, such as a syntax
// error.
type fileError struct {
	file string
	line int
	msg  string
}

func (e *fileError) Error() string {
	if e.line == 0 {
		return e.file + ": " + e.msg
	}
	return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
}

// problem returns the error msg about the setting key, located where key
// was set.
func (l *loaded) problem(key, msg string) error {
	return &settingError{key: key, at: l.origins[key], msg: msg}
}

// value is the setting key as text (its flag's String).
func (l *loaded) value(key string) string { return l.fs.Lookup(key).Value.String() }

// load builds the settings from the command line args, the environment
// environ and the configuration file that either names. Usage and errors on
// the command line go to output; -h returns flag.ErrHelp. With problems in
// the file or the environment it returns them all, and the settings as far
// as they go (so that the caller knows whether -check-config was asked
// for); without a command line it returns nil. A server reloads by calling
// it again with the same args and environ.
func load(args, environ []string, output io.Writer) (*loaded, error) {
	// The command line alone first: it says what to do (and -h), which
	// file to read, and which flags it sets.
	cli := newFlagSet(&settings{}, output)
	cli.Usage = func() { usage(cli, output) }
	if err := cli.Parse(args); err != nil {
		return nil, err
	}
	path, err := configPath(cli, *cli.Lookup("check-config").Value.(*checkFlag), environ)
	if err != nil {
		return nil, err
	}

	l := &loaded{s: &settings{}, origins: make(map[string]origin)}
	l.fs = newFlagSet(l.s, io.Discard)
	var errs []error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("configuration file: %w", err)
		}
		l.hash = sha256.Sum256(data)
		errs = applyFile(l.fs, path, data, l.origins)
	}
	unknown, err := applyEnv(l.fs, environ, l.origins) // env.go
	if err != nil {
		errs = append(errs, err)
	}
	l.unknownEnv = unknown
	given := map[string]string{} // setting → the name it was given by on the command line
	cli.Visit(func(fl *flag.Flag) {
		if r, ok := l.fs.Lookup(fl.Name).Value.(interface{ reset() }); ok {
			r.reset()
		}
		key := canonical(fl.Name)
		if other, twice := given[key]; twice {
			errs = append(errs, fmt.Errorf("-%s and -%s: both given, and one is an alias of the other; give one", other, fl.Name))
		}
		given[key] = fl.Name
		l.origins[key] = origin{flag: true, name: aliasName(fl.Name)}
	})
	if err := l.fs.Parse(args); err != nil {
		return nil, err // cannot be: the same args parsed above
	}
	l.s.config = path
	return l, errors.Join(errs...)
}

// aliasName is name when it is an alias, else "" (for origin.name).
func aliasName(name string) string {
	if canonical(name) != name {
		return name
	}
	return ""
}

// configPath is the configuration file: -config, else FWDPROXY_CONFIG, else
// the argument of -check-config; "" when there is none.
func configPath(cli *flagSet, check checkFlag, environ []string) (string, error) {
	args := cli.Args()
	if check.on && check.file == "" && len(args) == 1 {
		check.file, args = args[0], nil
	}
	if len(args) > 0 {
		return "", fmt.Errorf("unexpected arguments: %q", args)
	}
	path := ""
	if fl := cli.Lookup("config"); fl.Value.String() != "" {
		path = fl.Value.String()
	} else {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, envName("config")+"="); ok {
				path = v
			}
		}
	}
	switch {
	case check.file != "" && path != "" && check.file != path:
		return "", fmt.Errorf("-check-config %s and -config (or FWDPROXY_CONFIG) %s name different files", check.file, path)
	case check.file != "":
		path = check.file
	case check.on && path == "":
		return "", errors.New("-check-config: which file? (-check-config FILE, or -config FILE -check-config)")
	}
	return path, nil
}

// usage is -h: how the layers combine, then every flag.
func usage(fs *flagSet, w io.Writer) {
	fmt.Fprint(w, `Usage: fwdproxy [flags]
       fwdproxy -check-config FILE
       fwdproxy -version

A forward proxy for HTTP and CONNECT.

Every setting is a flag, an environment variable FWDPROXY_<NAME> (the name in
upper case, dashes as underscores: FWDPROXY_ALLOW_PRIVATE=yes) and a key of
the YAML file given with -config (allow-private: true); repeatable flags are
lists there (deny-host: [a.example, "10.0.0.0/8"]). A flag on the command
line wins over the environment, the environment over the file, the file over
the defaults; a list replaces the list of the layer below.

With -config, SIGHUP and a change to the file reload the configuration
(settings marked fixed need a restart); a bad file keeps the running one.
Without -config, SIGHUP stops the server gracefully, as SIGTERM does.

Flags:
`)
	fs.PrintDefaults()
}

// applyFile sets the flags of fs from the YAML configuration file path,
// whose content is data, and records where each was set. It returns every
// problem it finds, each with its line.
func applyFile(fs *flagSet, path string, data []byte, origins map[string]origin) []error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty, or only comments
		}
		return []error{syntaxError(path, err)}
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return []error{syntaxError(path, err)}
		}
		return []error{&fileError{path, more.Line, "a second YAML document; the file holds one"}}
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return []error{&fileError{path, root.Line, "want a mapping of settings (listen: 127.0.0.1:8080), one key per flag"}}
	}
	var errs []error
	seen := make(map[string]int)      // by setting: the line
	seenAs := make(map[string]string) // by setting: the key it was set by
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, &fileError{path, k.Line, "a key must be a flag name"})
			continue
		}
		if first, dup := seen[canonical(key)]; dup {
			msg := fmt.Sprintf("%s: set twice (first at line %d)", key, first)
			if as := seenAs[canonical(key)]; as != key {
				msg = fmt.Sprintf("%s: set twice (first at line %d as %s, which it is an alias of or the other way round)", key, first, as)
			}
			errs = append(errs, &fileError{path, k.Line, msg})
			continue
		}
		seen[canonical(key)], seenAs[canonical(key)] = k.Line, key
		fl := fs.Lookup(key)
		switch {
		case commandOnly[key] && key == "config":
			errs = append(errs, &fileError{path, k.Line, "config: not a key of the file (-config or FWDPROXY_CONFIG names the file)"})
			continue
		case commandOnly[key]:
			errs = append(errs, &fileError{path, k.Line, key + ": only on the command line"})
			continue
		case fl == nil:
			msg := fmt.Sprintf("unknown key %q", key)
			if c := closestKey(fs, key); c != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", c)
			}
			errs = append(errs, &fileError{path, k.Line, msg})
			continue
		}
		if line, msg := setFromNode(fl, v); msg != "" {
			errs = append(errs, &fileError{path, line, key + ": " + msg})
			continue
		}
		origins[canonical(key)] = origin{file: path, line: k.Line, name: aliasName(key)}
	}
	return errs
}

// setFromNode sets fl from the YAML value v. On failure it returns the line
// at fault and the problem: what the key accepts, and what it got.
func setFromNode(fl *flag.Flag, v *yaml.Node) (int, string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	want := accepts(fl)
	if n, ok := fl.Value.(interface {
		setNode(*yaml.Node) (int, string)
	}); ok {
		return n.setNode(v) // a structured value (upstreams.go)
	}
	if list, ok := fl.Value.(*listFlag); ok {
		list.reset()
		items := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			items = v.Content
		}
		for _, it := range items {
			for it.Kind == yaml.AliasNode && it.Alias != nil {
				it = it.Alias
			}
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				return it.Line, "want " + want + ", got " + nodeKind(it)
			}
			if err := list.add(it.Value); err != nil {
				return it.Line, "want " + want + ", got " + err.Error()
			}
		}
		return 0, ""
	}
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return v.Line, "want " + want + ", got " + nodeKind(v)
	}
	value := v.Value
	if isBoolFlag(fl) {
		b, ok := parseEnvBool(value) // the words the environment takes, too
		if !ok {
			return v.Line, fmt.Sprintf("want %s, got %q", want, value)
		}
		value = b
	}
	if err := fl.Value.Set(value); err != nil {
		return v.Line, fmt.Sprintf("want %s, got %q", want, value)
	}
	return 0, ""
}

// nodeKind names what a YAML value is, for an error that says it is the
// wrong kind.
func nodeKind(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Tag == "!!null":
		return "no value (leave the key out for the default)"
	}
	return fmt.Sprintf("%q", n.Value)
}

// yamlLine finds the line in the YAML parser's errors ("yaml: line 3: …").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(path string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &fileError{path, line, "YAML: " + m[2]}
	}
	return &fileError{path, 0, strings.Replace(err.Error(), "yaml: ", "YAML: ", 1)}
}

// closestKey is the file key closest to an unknown key, if it is close
// enough to be a typo ("deny_host", "dns-servers").
func closestKey(fs *flagSet, key string) string {
	best, bestD := "", 3 // more than two edits away is not a typo
	for _, name := range fs.order {
		if commandOnly[name] {
			continue
		}
		if d := editDistance(key, name); d < bestD {
			best, bestD = name, d
		}
	}
	return best
}
