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
// Every flag can also be set through the environment: FWDPROXY_ followed by
// the flag name in upper case with dashes as underscores (FWDPROXY_LISTEN,
// FWDPROXY_ALLOW_PRIVATE). A flag on the command line wins.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// After SIGINT, SIGTERM or SIGHUP, requests and tunnels in flight get
// shutdownGrace to finish before the ones left are closed; then the log and
// the telemetry exporters get flushGrace to write out what they hold. The
// process is gone within shutdownGrace+flushGrace of the signal, the 10 s
// the README promises (TestREADMEShutdownGrace), inside the 30 s that
// Kubernetes and systemd wait before they kill.
const (
	shutdownGrace = 8 * time.Second
	flushGrace    = 2 * time.Second
)

// stopSignals end the server gracefully. SIGHUP is among them because until
// the server reloads its configuration, a SIGHUP from an operator (or a
// closed terminal) would otherwise kill it with no drain and no log line.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fwdproxy:", err)
		os.Exit(1)
	}
}

type flags struct {
	listen       string
	allowPrivate bool
	logLevel     string
	dnsServers   listFlag
	auth         listFlag
	denyHosts    listFlag
	allowHosts   listFlag
	allowPorts   listFlag
	maxRespHead  int // -max-response-header-bytes; 0: the library's default

	// telemetry.go
	metricsListen string
	logFormat     string
	traceFile     string
	mitmCADir     string   // TLS interception (see interceptOptions)
	mitmBypass    listFlag // hosts tunnelled, not intercepted
	upstreamCA    string   // extra PEM roots for upstream TLS

	limits     limitFlags   // fdlimit.go
	unknownEnv []unknownVar // FWDPROXY_ variables that name no flag (env.go)
}

// listFlag is a flag that may be repeated; each value may also hold several
// items separated by commas (so one environment variable can set several).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item == "" {
			return errors.New("empty item")
		}
		*l = append(*l, item)
	}
	return nil
}

func parseFlags(args []string, stderr *os.File) (*flags, error) {
	fs := flag.NewFlagSet("fwdproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flags{}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.BoolVar(&f.allowPrivate, "allow-private", false, "allow requests to private, loopback and link-local addresses (refused with 403 without it)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Var(&f.auth, "auth", "require proxy authentication (Basic) with `USER:PASS` (repeatable for several users)")
	fs.Var(&f.denyHosts, "deny-host", "refuse destinations matching `PATTERN`: host, *.domain or CIDR (repeatable or comma-separated)")
	fs.Var(&f.allowHosts, "allow-host", "allow only destinations matching `PATTERN`: host, *.domain or CIDR (repeatable or comma-separated)")
	fs.Var(&f.allowPorts, "allow-port", "also allow CONNECT to port `N` (443 is always allowed; repeatable or comma-separated)")
	fs.IntVar(&f.maxRespHead, "max-response-header-bytes", 0, "refuse (502) upstream response heads over `N` bytes (0: the library default, 256 KiB)")
	fs.Var(&f.dnsServers, "dns-server", "DNS server `host:port` to use instead of /etc/resolv.conf (repeatable or comma-separated)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics and pprof at /debug/pprof/ on `ADDR` (host:port)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&f.traceFile, "trace-file", "", "write finished spans to `PATH` as JSON lines")
	fs.StringVar(&f.mitmCADir, "mitm-ca-dir", "", "intercept TLS in CONNECTs with the CA in `DIR` (ca.pem and ca-key.pem, created if both are missing); plain HTTP in a CONNECT is served too, other protocols are tunnelled")
	fs.Var(&f.mitmBypass, "mitm-bypass", "tunnel, not intercept, CONNECTs to destinations matching `PATTERN`: host, *.domain, IP or CIDR, as for -deny-host; IPs and CIDRs match IP targets (repeatable or comma-separated)")
	fs.StringVar(&f.upstreamCA, "upstream-ca", "", "PEM `FILE` of extra root certificates trusted for upstream TLS")
	f.limits.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fwdproxy [flags]\n\nA forward proxy for HTTP and CONNECT. Flags (also settable as FWDPROXY_<NAME>):\n")
		fs.PrintDefaults()
	}
	unknown, err := envDefaults(fs, os.Environ()) // env.go
	if err != nil {
		return nil, err
	}
	f.unknownEnv = unknown
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return f, nil
}

// options translates the flags into Proxy options.
func (f *flags) options() ([]fwdproxy.Option, error) {
	var opts []fwdproxy.Option
	if f.allowPrivate {
		opts = append(opts, fwdproxy.WithAllowPrivate())
	}
	if len(f.dnsServers) > 0 {
		opts = append(opts, fwdproxy.WithDNSServers(f.dnsServers...))
	}
	if f.maxRespHead != 0 {
		opts = append(opts, fwdproxy.WithMaxResponseHeaderBytes(f.maxRespHead))
	}
	if len(f.auth) > 0 {
		users := make(map[string]string, len(f.auth))
		for _, a := range f.auth {
			user, pass, ok := strings.Cut(a, ":")
			if !ok || user == "" {
				return nil, errors.New("-auth: want USER:PASS")
			}
			users[user] = pass
		}
		opts = append(opts, fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(users)))
	}
	if len(f.denyHosts) > 0 {
		opts = append(opts, fwdproxy.WithDenyHosts(f.denyHosts...))
	}
	if len(f.allowHosts) > 0 {
		opts = append(opts, fwdproxy.WithAllowHosts(f.allowHosts...))
	}
	if len(f.allowPorts) > 0 {
		ports := make([]uint16, 0, len(f.allowPorts))
		for _, s := range f.allowPorts {
			n, err := strconv.ParseUint(s, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("-allow-port: %q is not a port number", s)
			}
			ports = append(ports, uint16(n))
		}
		opts = append(opts, fwdproxy.WithAllowPorts(ports...))
	}
	return opts, nil
}

func run(args []string, stderr *os.File) error {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logw := newBufferedLog(stderr)                     // logwriter.go
	defer logw.Close()                                 // runs last: everything logged before is written
	logger, err := newLogger(f.logFormat, logw, level) // telemetry.go
	if err != nil {
		return err
	}
	for _, u := range f.unknownEnv {
		if u.closest != "" {
			logger.Warn("unknown environment variable ignored", "name", u.name, "did_you_mean", u.closest)
		} else {
			logger.Warn("unknown environment variable ignored", "name", u.name, "help", "FWDPROXY_<FLAG> sets a flag; -h lists them")
		}
	}
	tel, err := setupTelemetry(f, logger) // telemetry.go
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

	opts, err := f.options()
	if err != nil {
		return err
	}
	opts = append(opts, tel.opts...)
	opts = append(opts, f.limits.options(logger)...)
	opts = append(opts, fwdproxy.WithLogger(logger))
	tlsOpts, err := tlsOptions(f, logger)
	if err != nil {
		return err
	}
	opts = append(opts, tlsOpts...)
	p, err := fwdproxy.New(opts...)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	logger.Info("fwdproxy listening", "addr", l.Addr().String(), "allow_private", f.allowPrivate)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	var sig os.Signal
	select {
	case err := <-served:
		return err
	case sig = <-sigs:
	}
	logger.Info("shutting down", "signal", signalName(sig), "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		logger.Warn("shutdown forced open connections closed", "error", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
