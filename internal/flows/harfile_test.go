package flows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHARFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.har")
	r := NewRing(Options{MaxFlows: 2}) // the file keeps what the ring evicts
	h, err := OpenHARFile(r, path, HARFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		f := newFlow(i, 0, 5)
		f.RequestHeader["Cookie"] = []string{"sid=sekrit"}
		r.Add(f)
	}
	r.Pause()
	r.Add(newFlow(5, 0, 0)) // not recorded, not written
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeHAR(t, b)
	if n := len(m["log"].(map[string]any)["entries"].([]any)); n != 5 {
		t.Errorf("%d entries, want the 5 recorded", n)
	}
	if strings.Contains(string(b), "sekrit") {
		t.Error("a cookie in the HAR file")
	}
	if h.Missed() != 0 {
		t.Errorf("Missed = %d", h.Missed())
	}
}

func TestHARFileEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.har")
	h, err := OpenHARFile(NewRing(Options{}), path, HARFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	decodeHAR(t, b)
}

func TestHARFileRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.har")
	r := NewRing(Options{})
	h, err := OpenHARFile(r, path, HARFileOptions{MaxBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		r.Add(newFlow(i, 0, 5))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.har"))
	if len(files) < 3 {
		t.Fatalf("files %v: want rotation past 2,000 bytes", files)
	}
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m := decodeHAR(t, b)
		total += len(m["log"].(map[string]any)["entries"].([]any))
		if f != path && !strings.HasPrefix(filepath.Base(f), "flows-") {
			t.Errorf("rotated file named %s", f)
		}
	}
	if total != 12 {
		t.Errorf("%d entries in all files, want 12", total)
	}
}

func TestHARFileError(t *testing.T) {
	if _, err := OpenHARFile(NewRing(Options{}), filepath.Join(t.TempDir(), "missing", "flows.har"), HARFileOptions{}); err == nil {
		t.Error("OpenHARFile in a missing folder succeeded")
	}
}
