package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/fwdproxy/fwdproxy"
)

// reloader applies the configuration file to the running server again, on
// SIGHUP and when the file changes (watch.go). It reads the file anew, puts
// the environment and the command line the server started with over it
// (flags > environment > file, as at start), builds a whole configuration
// with configure and hands it to apply, which swaps it into the running
// Proxy. A bad file, a change to a fixed setting or a configuration that
// apply refuses leaves the running configuration as it was. An attempt that
// fails is one Error line, "reload failed" with the problems, each where it
// was made; one that succeeds is the library's Info line ("configuration
// reloaded", naming each option that changed) and a Debug line of ours with
// the trigger and the settings that changed. Problems are told where they
// were made (FILE:LINE: key: …).
type reloader struct {
	args, environ []string // as at start
	sh            *shared
	level         *slog.LevelVar // the server's log level, set once apply took the rest
	logger        *slog.Logger
	apply         func(...fwdproxy.Option) error
	applied       func(*built) // what else a configuration applied sets (the admin token); nil for nothing

	mu      sync.Mutex // one reload at a time
	running *loaded    // the settings in force
	seen    [sha256.Size]byte
}

// newReloader returns the reloader of a server started with the settings
// running, which it made from args and environ; apply swaps a configuration
// into the running Proxy ((*fwdproxy.Proxy).Reload).
func newReloader(running *loaded, args, environ []string, sh *shared, level *slog.LevelVar, apply func(...fwdproxy.Option) error) *reloader {
	return &reloader{
		args: args, environ: environ, sh: sh, level: level, logger: sh.logger, apply: apply,
		running: running, seen: running.hash,
	}
}

// reload reads the file and applies it, whether or not it changed (SIGHUP),
// and logs the outcome. trigger names the cause in the log line. It returns
// the error it logged.
func (r *reloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked(trigger)
}

// reloadIfChanged is reload for the file watcher: it does nothing when the
// file holds what it held at the last attempt (an editor that saves
// without a change, another file in the directory, a touch), and one
// attempt otherwise. A file that cannot be read counts as a change once,
// so that a deleted file is said once, and its return applied.
func (r *reloader) reloadIfChanged(trigger string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var h [sha256.Size]byte
	if data, err := os.ReadFile(r.running.s.config); err == nil {
		h = sha256.Sum256(data)
	}
	if h == r.seen {
		return
	}
	_ = r.reloadLocked(trigger)
}

func (r *reloader) reloadLocked(trigger string) error {
	file := r.running.s.config
	l, b, err := r.prepare()
	r.seen = [sha256.Size]byte{} // unreadable: see reloadIfChanged
	if l != nil {
		r.seen = l.hash
	}
	if err == nil {
		if err = r.apply(b.opts...); err != nil {
			err = l.locate(err) // build.go: the option at fault, where its setting was made
		}
	}
	if err != nil {
		r.logger.Error("reload failed; the running configuration stays", "trigger", trigger, "file", file, "error", err)
		return err
	}
	changed := r.changed(l)
	r.level.Set(b.level)
	if r.applied != nil {
		r.applied(b)
	}
	r.running = l
	attrs := []any{"trigger", trigger, "file", file, "changed", changed}
	if b.fit.lowered {
		attrs = append(attrs, "limits_lowered_to_fit_fd_limit", true,
			"max_conns", b.fit.conns, "max_tunnels", b.fit.tunnels, "max_idle_upstream", b.fit.idle)
	}
	// The library's Info line ("configuration reloaded", with the
	// generation, the hash and each option's old and new value) is the
	// reload's one record; this one adds what only the server knows.
	r.logger.Debug("configuration file applied", attrs...)
	return nil
}

// prepare loads the settings and builds the configuration, refusing a
// change to a fixed setting. l is nil when the file could not be read.
func (r *reloader) prepare() (*loaded, *built, error) {
	l, err := load(r.args, r.environ, io.Discard)
	if err != nil {
		return l, nil, err
	}
	var errs []error
	for _, k := range fixedKeys {
		if was, now := r.running.value(k), l.value(k); was != now {
			errs = append(errs, l.problem(k, fmt.Sprintf("cannot change on reload (running with %q, asked for %q); restart the server to change it", was, now)))
		}
	}
	if len(errs) > 0 {
		return l, nil, errors.Join(errs...)
	}
	b, err := configure(l, r.sh)
	return l, b, err
}

// changed lists the settings whose values differ between the running
// configuration and l, by name only (an -auth value is a password).
func (r *reloader) changed(l *loaded) []string {
	changed := []string{}
	for _, k := range l.fs.order {
		if !commandOnly[k] && r.running.value(k) != l.value(k) {
			changed = append(changed, k)
		}
	}
	return slices.Clip(changed)
}
