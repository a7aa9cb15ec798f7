package main

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFreeMemOverlay(t *testing.T) {
	tmp := t.TempDir()
	path, err := writeFreeMemOverlay(tmp, "..", "", tmp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var o struct{ Replace map[string]string }
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if len(o.Replace) != 2 {
		t.Fatalf("%d replacements, want 2 (the empty source is skipped): %v", len(o.Replace), o.Replace)
	}
	for k, v := range o.Replace {
		if !filepath.IsAbs(k) || !strings.HasSuffix(k, filepath.Join("examples", "fwdproxy", "zz_benchrun_freemem.go")) {
			t.Errorf("overlay key %q", k)
		}
		f, err := parser.ParseFile(token.NewFileSet(), v, nil, 0)
		if err != nil {
			t.Fatalf("the added file does not parse: %v", err)
		}
		if f.Name.Name != "main" {
			t.Errorf("package %s, want main", f.Name.Name)
		}
	}
}
