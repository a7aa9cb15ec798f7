package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's table of settings from the flags")

// The README's table of settings sits between these lines.
const (
	tableStart = "<!-- settings: generated from the flags by TestREADMESettings; cd examples && go test ./fwdproxy -run TestREADMESettings -args -update-readme rewrites it -->\n"
	tableEnd   = "<!-- end of settings -->\n"
)

// settingsTable is the README's table of every flag, in the order of
// newFlagSet.
func settingsTable() string {
	fs := newFlagSet(&settings{}, io.Discard)
	var b strings.Builder
	b.WriteString("| flag, `FWDPROXY_` variable and key | default | |\n|---|---|---|\n")
	for _, name := range fs.order {
		fl := fs.Lookup(name)
		arg, usage := flag.UnquoteUsage(fl)
		if arg != "" {
			arg = " " + arg
		}
		def := ""
		if fl.DefValue != "" {
			def = "`" + fl.DefValue + "`"
		}
		b.WriteString("| `-" + name + arg + "` | " + def + " | " + strings.ReplaceAll(usage, "|", `\|`) + " |\n")
	}
	return b.String()
}

// TestREADMESettings: the README lists every flag, with the default and
// the help text -h prints, so that the two cannot drift apart.
func TestREADMESettings(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	before, rest, ok1 := strings.Cut(readme, tableStart)
	_, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok1 || !ok2 {
		t.Fatalf("README: no table between %q and %q", tableStart, tableEnd)
	}
	want := before + tableStart + settingsTable() + tableEnd + after
	if readme == want {
		return
	}
	if *updateREADME {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the README's table of settings differs from the flags; cd examples && go test ./fwdproxy -run TestREADMESettings -args -update-readme rewrites it. Want:\n%s", settingsTable())
}

// TestREADMEWatchDebounce: the README states the watcher's debounce.
func TestREADMEWatchDebounce(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("one reload, %d ms after the last", watchDebounce/time.Millisecond)
	if !strings.Contains(strings.Join(strings.Fields(string(b)), " "), want) {
		t.Errorf("README does not say %q", want)
	}
}

// TestSampleConfig: fwdproxy.yaml, the commented sample, holds every key
// of the file, each at its default, and makes a valid configuration.
func TestSampleConfig(t *testing.T) {
	const path = "fwdproxy.yaml"
	l, err := load([]string{"-config", path}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBuild(l, io.Discard); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var inFile []string
	for i, n := range doc.Content[0].Content {
		if i%2 == 0 {
			inFile = append(inFile, n.Value)
			commented := strings.Contains(n.HeadComment, "# ") || i >= 2 && strings.Contains(doc.Content[0].Content[i-2].HeadComment, "# ")
			if !commented {
				t.Errorf("%s: no comment above it, nor above the key before it", n.Value)
			}
		}
	}
	var keys []string
	for _, k := range l.fs.order {
		if !commandOnly[k] {
			keys = append(keys, k)
		}
	}
	if !slices.Equal(inFile, keys) {
		t.Errorf("keys of %s:\n%v\nwant every key of the file, in the order of -h's README table:\n%v", path, inFile, keys)
	}
	for _, k := range keys {
		if got, def := l.value(k), l.fs.Lookup(k).DefValue; got != def {
			t.Errorf("%s: %s in %s, but the default is %s", k, got, path, def)
		}
	}
}
