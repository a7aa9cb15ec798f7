// Command fwdproxy runs the fwdproxy forward proxy.
//
//	go run ./examples/fwdproxy -listen 127.0.0.1:8080
//
// Safe by default: a destination that is loopback, private or otherwise
// special-purpose gets 403 with a reason naming -allow-private, and a
// CONNECT to a port other than 443 gets 403 naming -allow-port. To try it
// against an origin on this machine:
//
//	go run ./examples/fwdproxy -allow-private
//	curl -x http://127.0.0.1:8080 http://127.0.0.1:8000/
//
// At -log-level info (the default) each request and tunnel gets one
// access-log line on stderr, refusals and failures included with their
// reason; at warn the access log is off and a refusal gets one Warn line.
//
// # Settings
//
// Every setting is a flag, an environment variable and a key of the YAML
// file given with -config, all of one name: -allow-private,
// FWDPROXY_ALLOW_PRIVATE (FWDPROXY_ followed by the flag name in upper case
// with dashes as underscores) and "allow-private: true". A flag that may be
// repeated is a list in the file ("deny-host: [a.example, 10.0.0.0/8]"; a
// single item may stand alone) and a comma-separated value in the
// environment. A flag on the command line wins over the environment, the
// environment over the file and the file over the defaults; a list replaces
// the list of the layer below. examples/fwdproxy/fwdproxy.yaml lists every
// key with its default. -h lists every flag.
//
//	fwdproxy -config fwdproxy.yaml                # run with a file
//	fwdproxy -check-config fwdproxy.yaml          # check it, as nginx -t: FILE:LINE: key: problem
//	fwdproxy -version
//
// # Signals and reload
//
// SIGINT and SIGTERM stop the server gracefully (see shutdownGrace). With
// -config, SIGHUP and a change to the file (watched with fsnotify)
// reload it: the file is read again, the environment and the command line
// the server started with are put over it, and the whole configuration is
// swapped in, or, when anything is wrong, nothing is and the running one
// stays; one log line says which. The settings marked fixed in -h (the
// listen addresses, the CA directory, the log format, the trace file) need
// a restart. Without -config there is nothing to read again, and SIGHUP
// stops the server gracefully like SIGTERM, as before: a hangup of the
// terminal that started it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// After a stop signal (SIGINT, SIGTERM, or SIGHUP without -config),
// requests and tunnels in flight get shutdownGrace to finish before the
// ones left are closed; then the log and the telemetry exporters get
// flushGrace to write out what they hold. The
// process is gone within shutdownGrace+flushGrace of the signal, the 10 s
// the README promises (TestREADMEShutdownGrace), inside the 30 s that
// Kubernetes and systemd wait before they kill.
const (
	shutdownGrace = 8 * time.Second
	flushGrace    = 2 * time.Second
)

// signals are those the server handles: SIGINT and SIGTERM stop it
// gracefully; SIGHUP reloads the configuration file, and without one stops
// the server like SIGTERM (a closed terminal would otherwise kill it with
// no drain and no log line).
var signals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errCheckFailed) { // checkConfig printed the problems
			for line := range strings.SplitSeq(err.Error(), "\n") {
				fmt.Fprintln(os.Stderr, "fwdproxy:", line)
			}
		}
		os.Exit(1)
	}
}

// run is the command: -version, -check-config, or the server.
func run(args []string, stdout, stderr *os.File) error {
	environ := os.Environ()
	l, err := load(args, environ, stderr) // config.go
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		if l != nil && l.s.checkConfig.on {
			return printProblems(stderr, err) // check.go
		}
		return err
	}
	switch {
	case l.s.version:
		fmt.Fprintln(stdout, version(debug.ReadBuildInfo())) // check.go
		return nil
	case l.s.checkConfig.on:
		return checkConfig(l, stdout, stderr) // check.go
	}
	return serve(l, args, environ, stderr)
}

// serve runs the server with the settings l, made from args and environ,
// logging to stderr, until a stop signal has drained it.
func serve(l *loaded, args, environ []string, stderr *os.File) error {
	if err := checkFixed(l); err != nil { // build.go
		return err
	}
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(l.s.logLevel))        // a bad level is reported by configure
	logw := newBufferedLog(stderr)                       // logwriter.go
	defer logw.Close()                                   // runs last: everything logged before is written
	logger, err := newLogger(l.s.logFormat, logw, level) // telemetry.go
	if err != nil {
		return err
	}
	for _, u := range l.unknownEnv {
		if u.closest != "" {
			logger.Warn("unknown environment variable ignored", "name", u.name, "did_you_mean", u.closest)
		} else {
			logger.Warn("unknown environment variable ignored", "name", u.name, "help", "FWDPROXY_<FLAG> sets a flag; -h lists them")
		}
	}
	tel, err := setupTelemetry(l, logger) // telemetry.go
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		defer cancel()
		if err := tel.close(ctx); err != nil {
			logger.Warn("telemetry shutdown", "error", err)
		}
	}()

	soft, hard := raiseFDLimit()        // fdlimit_unix.go, fdlimit_other.go
	ca, certs, err := loadCA(l, logger) // intercept.go
	if err != nil {
		return err
	}
	store, err := openRedis(l, logger) // redis.go
	if err != nil {
		return err
	}
	if store != nil {
		defer store.Close() // after the drain below
		if ca != nil {
			certs = store // the minted certificates too: every replica serves the one minted first
		}
	}
	sh := &shared{logger: logger, tel: tel.opts, ca: ca, certs: certs, fdSoft: soft, store: store}
	if l.s.tlsListen != "" {
		sh.cert = newCertFiles(l.s.tlsCert, l.s.tlsKey) // front.go: configure reads it
	}
	b, err := configure(l, sh) // build.go
	if err != nil {
		return err
	}
	l.s.limits.logFDLimit(logger, soft, hard, b.fit)
	level.Set(b.level)
	p, err := fwdproxy.New(b.opts...)
	if err != nil {
		return l.locate(err)
	}
	lns, err := listenAll(l) // the listeners, each with the Proxy's method that serves it
	if err != nil {
		return err
	}
	attrs := []any{"addr", lns[0].ln.Addr().String(), "allow_private", l.s.allowPrivate}
	for _, x := range lns[1:] {
		attrs = append(attrs, x.key, x.ln.Addr().String())
	}
	admin, err := startAdmin(l, tel, p, b.adminToken, lns[0].ln.Addr(), readyChecks(store), logger) // admin.go
	if err != nil {
		for _, x := range lns {
			x.ln.Close()
		}
		return err
	}
	closeAdmin := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		defer cancel()
		if err := admin.close(ctx); err != nil {
			logger.Warn("admin listener shutdown", "error", err)
		}
	})
	defer closeAdmin()
	if l.s.config != "" {
		attrs = append(attrs, "config", l.s.config)
	}
	logger.Info("fwdproxy listening", attrs...)
	if sh.cert != nil {
		logger.Info("TLS certificate loaded", append([]any{"file", l.s.tlsCert}, sh.cert.describe()...)...)
		defer watchCert(sh.cert, logger)() // front.go
	}

	var rl *reloader // nil without a file to reload
	stopWatch := func() {}
	if l.s.config != "" {
		// A reload hands its options to p.Reload, which validates them
		// whole and swaps them into the running Proxy, or keeps the
		// running configuration and says why.
		rl = newReloader(l, args, environ, sh, level, p.Reload) // reload.go
		rl.applied = func(b *built) { admin.setToken(b.adminToken) }
		stopWatch = watchConfig(rl, logger) // watch.go
	}
	defer stopWatch()

	served := make(chan error, len(lns))
	for _, x := range lns {
		go func() { served <- x.serve(p, x.ln) }()
	}
	sig, err := waitForStop(served, rl)
	if err != nil {
		return err
	}
	stopWatch() // no reload while the server drains
	logger.Info("shutting down", "signal", signalName(sig), "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		logger.Warn("shutdown forced open connections closed", "error", err)
	}
	closeAdmin() // after the drain: the HAR file holds every request
	for range lns {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// listener is a listener of the server and what serves it.
type listener struct {
	key   string // the setting it comes from
	ln    net.Listener
	serve func(*fwdproxy.Proxy, net.Listener) error
}

// listenAll opens -listen and, when set, -tls-listen and -socks-listen.
func listenAll(l *loaded) ([]listener, error) {
	var lns []listener
	for _, x := range []struct {
		key, addr string
		serve     func(*fwdproxy.Proxy, net.Listener) error
	}{
		{"listen", l.s.listen, (*fwdproxy.Proxy).Serve},
		{"tls-listen", l.s.tlsListen, (*fwdproxy.Proxy).ServeTLS},
		{"socks-listen", l.s.socksListen, (*fwdproxy.Proxy).ServeSOCKS},
	} {
		if x.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", x.addr)
		if err != nil {
			for _, o := range lns {
				o.ln.Close()
			}
			return nil, l.problem(x.key, err.Error())
		}
		lns = append(lns, listener{key: x.key, ln: ln, serve: x.serve})
	}
	return lns, nil
}

// waitForStop handles signals until one stops the server, and returns it,
// or the error that ended serving first. SIGHUP reloads rl, or stops the
// server when rl is nil.
func waitForStop(served <-chan error, rl *reloader) (os.Signal, error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, signals...)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-served:
			return nil, err
		case sig := <-sigs:
			if sig == syscall.SIGHUP && rl != nil {
				_ = rl.reload("SIGHUP") // logged
				continue
			}
			return sig, nil
		}
	}
}

// signalName is the conventional name of a stop signal (SIGTERM), for the
// log line that says why the server is stopping.
func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}
