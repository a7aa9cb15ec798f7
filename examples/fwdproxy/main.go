// Command fwdproxy runs the fwdproxy forward proxy.
//
//	go run ./examples/fwdproxy -listen 127.0.0.1:8080
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

// shutdownGrace is how long in-flight requests and tunnels get after
// SIGINT or SIGTERM before they are closed.
const shutdownGrace = 8 * time.Second

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
	fs.BoolVar(&f.allowPrivate, "allow-private", false, "allow requests to private, loopback and link-local addresses")
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
	fs.StringVar(&f.mitmCADir, "mitm-ca-dir", "", "intercept TLS with the CA in `DIR` (ca.pem and ca-key.pem, created if both are missing)")
	fs.Var(&f.mitmBypass, "mitm-bypass", "host `PATTERN` (example.com or *.example.com) to tunnel, not intercept (repeatable or comma-separated)")
	fs.StringVar(&f.upstreamCA, "upstream-ca", "", "PEM `FILE` of extra root certificates trusted for upstream TLS")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fwdproxy [flags]\n\nA forward proxy for HTTP and CONNECT. Flags (also settable as FWDPROXY_<NAME>):\n")
		fs.PrintDefaults()
	}
	if err := envDefaults(fs); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return f, nil
}

// envDefaults sets each flag from FWDPROXY_<NAME> when that variable is set.
func envDefaults(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		name := "FWDPROXY_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	})
	return err
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
	tel, err := setupTelemetry(f, logger) // telemetry.go
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", shutdownGrace)
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
