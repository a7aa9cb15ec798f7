package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// errCheckFailed ends -check-config with status 1 once the problems are
// printed.
var errCheckFailed = errors.New("configuration check failed")

// checkConfig is -check-config, as nginx -t and squid -k parse: it checks the
// settings the server would run with (the file, with the environment and
// the command line over it) and builds the library configuration from them,
// with the same code the server starts and reloads with, but binds no
// listener, opens no log or trace file and writes no CA. It prints "FILE:
// configuration ok" to stdout, or each problem on a line of its own to
// stderr ("FILE:LINE: key: problem") and returns errCheckFailed.
func checkConfig(l *loaded, stdout, stderr io.Writer) error {
	if err := checkBuild(l, stdout); err != nil {
		return printProblems(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: configuration ok\n", l.s.config)
	return nil
}

// printProblems prints each line of err as it is, for -check-config, and
// returns errCheckFailed.
func printProblems(w io.Writer, err error) error {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintln(w, line)
	}
	return errCheckFailed
}

// checkBuild is the check itself; notes about what the server would do at
// start go to notes.
func checkBuild(l *loaded, notes io.Writer) error {
	if err := checkFixed(l); err != nil {
		return err
	}
	ca, note, err := checkCA(l) // intercept.go
	if err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintf(notes, "%s: %s\n", l.s.config, note)
	}
	sh := &shared{logger: slog.New(slog.DiscardHandler), ca: ca}
	if l.s.tlsCert != "" {
		sh.cert = newCertFiles(l.s.tlsCert, l.s.tlsKey) // front.go: configure reads it
	}
	b, err := configure(l, sh)
	if err != nil {
		return err
	}
	if err := validate(b.opts); err != nil {
		return l.locate(err)
	}
	return nil
}

// validate builds a Proxy from opts and shuts it down at once: New checks
// every option and the configuration as a whole, and starts nothing that
// Shutdown does not stop (it binds no listener).
func validate(opts []fwdproxy.Option) error {
	p, err := fwdproxy.New(opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.Shutdown(ctx)
}

// version is -version: the module's version ("(devel)" when built in its
// source tree), the VCS revision when the build recorded one, and the Go
// version.
func version(bi *debug.BuildInfo, ok bool) string {
	if !ok {
		return "fwdproxy (unknown version)"
	}
	v := "fwdproxy " + bi.Main.Version
	if v == "fwdproxy " {
		v += "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev != "" && !strings.Contains(bi.Main.Version, shortRev(rev)) {
		v += " revision " + rev + modified
	}
	return v + " " + bi.GoVersion
}

// shortRev is the 12-digit revision a pseudo-version holds.
func shortRev(rev string) string { return rev[:min(12, len(rev))] }
