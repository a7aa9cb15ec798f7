package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testDebounce is the watcher's quiet interval in the tests.
const testDebounce = 50 * time.Millisecond

// watched starts a watcher on path that reloads ts, stopped when the test
// ends.
func watched(t *testing.T, ts *testServer, path string) {
	t.Helper()
	fw, err := newFileWatcher(path, testDebounce)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fw.run(ctx, func() { ts.rl.reloadIfChanged("file change") }, func(err error) { t.Errorf("watcher: %v", err) })
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// waitApply waits for the next call of the fake apply.
func (ts *testServer) waitApply(t *testing.T, what string) {
	t.Helper()
	select {
	case <-ts.fake.got:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no reload 5 s after the change; log:\n%s", what, strings.Join(ts.lines(), "\n"))
	}
}

// noApply checks that apply is not called for a while, many times the
// debounce interval.
func (ts *testServer) noApply(t *testing.T, what string) {
	t.Helper()
	select {
	case <-ts.fake.got:
		t.Fatalf("%s: a reload; log:\n%s", what, strings.Join(ts.lines(), "\n"))
	case <-time.After(10 * testDebounce):
	}
}

// TestWatchFile: real file operations on the configuration file, as editors,
// deployment tools and Kubernetes make them, each end in exactly one
// reload of the new content; operations that change nothing end in none.
func TestWatchFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup makes the directory and returns the path the server is
		// given; change changes what it holds to content.
		setup  func(t *testing.T, dir string) string
		change func(t *testing.T, dir, path, content string)
	}{
		{"write in place", plainFile, func(t *testing.T, dir, path, content string) {
			rewrite(t, path, content)
		}},
		{"write in two steps", plainFile, func(t *testing.T, dir, path, content string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, _ = f.WriteString(content[:5])
			time.Sleep(testDebounce / 5)
			_, _ = f.WriteString(content[5:])
		}},
		{"write a new file and rename it over", plainFile, func(t *testing.T, dir, path, content string) {
			tmp := filepath.Join(dir, ".fwdproxy.yaml.tmp")
			rewrite(t, tmp, content)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"vim: rename to a backup, write anew", plainFile, func(t *testing.T, dir, path, content string) {
			backup := path + "~"
			if err := os.Rename(path, backup); err != nil {
				t.Fatal(err)
			}
			rewrite(t, path, content)
			_ = os.Remove(backup)
		}},
		{"delete and create at once", plainFile, func(t *testing.T, dir, path, content string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			rewrite(t, path, content)
		}},
		{"Kubernetes ConfigMap", configMap, func(t *testing.T, dir, path, content string) {
			// What kubelet's atomic writer does: a new timestamped
			// directory, a "..data_tmp" symlink to it renamed over
			// "..data", the old directory removed.
			old, _ := os.Readlink(filepath.Join(dir, "..data"))
			ts := fmt.Sprintf("..2026_01_02_03_04_05.%d", time.Now().UnixNano())
			if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
				t.Fatal(err)
			}
			rewrite(t, filepath.Join(dir, ts, "fwdproxy.yaml"), content)
			if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink to another directory, target edited", linkedFile, func(t *testing.T, dir, path, content string) {
			target, _ := filepath.EvalSymlinks(path)
			rewrite(t, target, content)
		}},
		{"symlink switched to another file", linkedFile, func(t *testing.T, dir, path, content string) {
			other := filepath.Join(t.TempDir(), "other.yaml")
			rewrite(t, other, content)
			tmp := path + ".new"
			if err := os.Symlink(other, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // mostly waiting
			dir := t.TempDir()
			path := tc.setup(t, dir)
			ts := newTestServer(t, path, nil, nil)
			watched(t, ts, path)
			for i, host := range []string{"b.example", "c.example"} { // twice: the watch survives the change
				tc.change(t, dir, path, "deny-host: ["+host+"]\n")
				ts.waitApply(t, host)
				ts.noApply(t, host+", once")
				if got := ts.value("deny-host"); got != host {
					t.Fatalf("change %d: deny-host %q, want %q", i+1, got, host)
				}
			}
			tc.change(t, dir, path, "deny-host: [c.example]\n")
			ts.noApply(t, "the same content again")
			if n := len(ts.lines()); n != 2 {
				t.Errorf("%d log lines, want 2:\n%s", n, strings.Join(ts.lines(), "\n"))
			}
		})
	}
}

// TestWatchIgnores: changes to other files in the directory, and a touch,
// reload nothing; a burst of writes reloads once.
func TestWatchIgnores(t *testing.T) {
	dir := t.TempDir()
	path := plainFile(t, dir)
	ts := newTestServer(t, path, nil, nil)
	watched(t, ts, path)
	rewrite(t, filepath.Join(dir, "other.yaml"), "deny-host: [x.example]\n")
	rewrite(t, filepath.Join(dir, "fwdproxy.yaml.swp"), "x")
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	ts.noApply(t, "other files and a touch")
	for i := range 20 {
		rewrite(t, path, "deny-host: [b"+strings.Repeat("b", i)+".example]\n")
		time.Sleep(testDebounce / 10)
	}
	ts.waitApply(t, "a burst")
	ts.noApply(t, "a burst, once")
	if got := ts.value("deny-host"); got != "b"+strings.Repeat("b", 19)+".example" {
		t.Errorf("deny-host %q", got)
	}
}

// TestWatchDeleteAndRecreate: a file deleted for longer than the debounce
// interval is one failed attempt (the running configuration stays), and
// the file's return is applied.
func TestWatchDeleteAndRecreate(t *testing.T) {
	dir := t.TempDir()
	path := plainFile(t, dir)
	ts := newTestServer(t, path, nil, nil)
	watched(t, ts, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(ts.lines()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l := ts.lines(); len(l) != 1 || !strings.Contains(l[0], `msg="reload failed; the running configuration stays"`) || !strings.Contains(l[0], "no such file") {
		t.Fatalf("log after the delete:\n%s", strings.Join(l, "\n"))
	}
	ts.noApply(t, "deleted")
	rewrite(t, path, "deny-host: [b.example]\n")
	ts.waitApply(t, "re-created")
	if got := ts.value("deny-host"); got != "b.example" {
		t.Errorf("deny-host %q", got)
	}
	if l := ts.lines(); len(l) != 2 || !strings.Contains(l[1], `msg="configuration file applied"`) {
		t.Errorf("log:\n%s", strings.Join(l, "\n"))
	}
}

// plainFile is a plain configuration file in dir.
func plainFile(t *testing.T, dir string) string {
	path := filepath.Join(dir, "fwdproxy.yaml")
	rewrite(t, path, "deny-host: [a.example]\n")
	return path
}

// configMap lays dir out as kubelet lays out a ConfigMap volume:
// fwdproxy.yaml -> ..data/fwdproxy.yaml, ..data -> ..<timestamp>.
func configMap(t *testing.T, dir string) string {
	ts := "..2026_01_02_03_04_05.1"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	rewrite(t, filepath.Join(dir, ts, "fwdproxy.yaml"), "deny-host: [a.example]\n")
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fwdproxy.yaml")
	if err := os.Symlink("..data/fwdproxy.yaml", path); err != nil {
		t.Fatal(err)
	}
	return path
}

// linkedFile is a symlink in dir to a file in another directory.
func linkedFile(t *testing.T, dir string) string {
	target := filepath.Join(t.TempDir(), "real.yaml")
	rewrite(t, target, "deny-host: [a.example]\n")
	path := filepath.Join(dir, "fwdproxy.yaml")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return path
}
