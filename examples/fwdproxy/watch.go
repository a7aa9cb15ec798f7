package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce is how long the file watcher waits after the last event
// before it reloads: an editor's save, a ConfigMap update or a copy is a
// burst of events, and it should be one reload of the finished file.
const watchDebounce = 200 * time.Millisecond

// fileWatcher tells when a file may have changed. It watches the file's
// directory, not the file: an editor that saves by writing a new file and
// renaming it over the old one, or deletes and creates it, leaves a watch
// on the file itself watching nothing. A Kubernetes ConfigMap volume holds
// the file as a symlink into "..data", itself a symlink to a directory of
// the current version, and updates by swapping "..data": so the watcher
// also matches the first component of a relative symlink's target, and
// watches the directory that the file resolves to (the symlink's target
// may live elsewhere), following it when it moves. Events about other files
// are ignored.
type fileWatcher struct {
	w        *fsnotify.Watcher
	path     string
	debounce time.Duration
	names    map[string]map[string]bool // watched directory → names that matter in it
}

// newFileWatcher starts watching for changes to the file at path.
func newFileWatcher(path string, debounce time.Duration) (*fileWatcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	fw := &fileWatcher{w: w, path: abs, debounce: debounce}
	if err := fw.update(); err != nil {
		w.Close()
		return nil, err
	}
	return fw, nil
}

// targets are the directories to watch and the names in each whose events
// may mean the file changed.
func (fw *fileWatcher) targets() map[string]map[string]bool {
	dir, base := filepath.Split(fw.path)
	dir = filepath.Clean(dir)
	t := map[string]map[string]bool{dir: {base: true}}
	if link, err := os.Readlink(fw.path); err == nil && !filepath.IsAbs(link) {
		first, _, _ := strings.Cut(filepath.ToSlash(link), "/")
		if first != "." && first != ".." {
			t[dir][first] = true // ConfigMap: "fwdproxy.yaml -> ..data/fwdproxy.yaml"
		}
	}
	if real, err := filepath.EvalSymlinks(fw.path); err == nil {
		rdir, rbase := filepath.Split(real)
		rdir = filepath.Clean(rdir)
		if t[rdir] == nil {
			t[rdir] = map[string]bool{}
		}
		t[rdir][rbase] = true
	}
	return t
}

// update makes the watches match targets. Only the file's own directory
// must be watchable; the others come and go with symlink swaps.
func (fw *fileWatcher) update() error {
	t := fw.targets()
	dir := filepath.Dir(fw.path)
	for d := range t {
		if _, ok := fw.names[d]; ok {
			continue
		}
		if err := fw.w.Add(d); err != nil {
			if d == dir {
				return err
			}
			delete(t, d)
		}
	}
	for d := range fw.names {
		if _, ok := t[d]; !ok {
			_ = fw.w.Remove(d) // gone already when the directory was removed
		}
	}
	fw.names = t
	return nil
}

// matches reports whether ev is about a name that matters.
func (fw *fileWatcher) matches(ev fsnotify.Event) bool {
	dir, base := filepath.Split(ev.Name)
	return fw.names[filepath.Clean(dir)][base]
}

// run calls changed once the events that matter have stopped for the
// debounce interval, until ctx ends; then it stops watching. warn gets the
// watcher's errors; an overflow of the event queue counts as a change.
func (fw *fileWatcher) run(ctx context.Context, changed func(), warn func(error)) {
	defer fw.w.Close()
	timer := time.NewTimer(fw.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if fw.matches(ev) {
				timer.Reset(fw.debounce)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer.Reset(fw.debounce)
				continue
			}
			warn(err)
		case <-timer.C:
			if err := fw.update(); err != nil {
				warn(err)
			}
			changed()
		}
	}
}

// watchConfig reloads rl when its file changes, until the function it
// returns is called. A file that cannot be watched (inotify limits) leaves
// SIGHUP to reload it, with a warning.
func watchConfig(rl *reloader, logger *slog.Logger) (stop func()) {
	file := rl.running.s.config
	fw, err := newFileWatcher(file, watchDebounce)
	if err != nil {
		logger.Warn("cannot watch the configuration file; reload it with SIGHUP", "file", file, "error", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fw.run(ctx, func() { rl.reloadIfChanged("file change") }, func(err error) {
			logger.Warn("watching the configuration file", "file", file, "error", err)
		})
	}()
	return sync.OnceFunc(func() { cancel(); <-done })
}
