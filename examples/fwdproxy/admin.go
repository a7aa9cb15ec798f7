package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"

	"github.com/fwdproxy/fwdproxy"
)

// The admin listener (-admin-listen): the library's Admin (the dashboard
// at /, the flow inspector at /flows, /flows.har and their APIs, /healthz
// and /readyz) with the server's /metrics and pprof added, behind the
// optional token. With -har-file the Admin also writes every flow to the
// file, with or without a listener.

// adminAddr is -admin-listen's address to listen on: a host left out
// (":9090") is loopback, not every interface, since the admin pages show
// the traffic, decrypted requests included. "0.0.0.0:9090" or
// "[::]:9090" listen everywhere.
func adminAddr(a string) string {
	if host, port, err := net.SplitHostPort(a); err == nil && host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return a
}

// adminToken is the token the settings ask for: -admin-token, or the
// content of -admin-token-file without surrounding white space, read anew
// at each call (start, reload, -check-config) so that a reload rotates
// it. Errors never hold the token.
func adminToken(l *loaded) (string, error) {
	s := l.s
	tok, key := s.adminToken, "admin-token"
	switch {
	case s.adminToken != "" && s.adminTokenFile != "":
		return "", l.problem("admin-token-file", "give -admin-token or -admin-token-file, not both")
	case s.adminTokenFile != "":
		key = "admin-token-file"
		b, err := os.ReadFile(s.adminTokenFile)
		if err != nil {
			return "", l.problem(key, err.Error())
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			return "", l.problem(key, s.adminTokenFile+" holds no token")
		}
	}
	if tok != "" && s.adminListen == "" {
		return "", l.problem(key, "needs -admin-listen")
	}
	return tok, nil
}

// adminServer is the admin listener's server and the Admin it serves;
// admin is nil with neither -admin-listen nor -har-file.
type adminServer struct {
	admin *fwdproxy.Admin
	srv   *http.Server // nil without -admin-listen
}

// startAdmin opens the Admin of p when -admin-listen or -har-file asks for
// it, and serves it on the listener setupTelemetry bound.
func startAdmin(l *loaded, tel *telemetry, p *fwdproxy.Proxy, token string, proxyAddr net.Addr, checks []fwdproxy.ReadyCheck, logger *slog.Logger) (*adminServer, error) {
	s := l.s
	as := &adminServer{}
	if tel.adminLn == nil && s.harFile == "" {
		return as, nil
	}
	a, err := p.NewAdmin(fwdproxy.AdminOptions{
		Token:           token,
		Public:          []string{"/proxy.pac"}, // upstreams.go: browsers and OSes fetch it without a token; it shows only the proxy's address
		MaxFlows:        s.maxFlows,
		MaxFlowBytes:    int64(s.maxFlowBytes),
		HARFile:         s.harFile,
		HARFileMaxBytes: int64(s.harFileMax),
		ReadyChecks:     checks, // redis.go: Redis answering, with -redis
	})
	if err != nil {
		return nil, l.problem("har-file", strings.TrimPrefix(err.Error(), "fwdproxy.NewAdmin: HARFile: "))
	}
	as.admin = a
	if s.harFile != "" {
		logger.Info("writing flows to a HAR file", "path", s.harFile, "rotate_at_bytes", int64(s.harFileMax))
	}
	ln := tel.adminLn
	if ln == nil {
		return as, nil
	}
	a.Handle("GET /metrics", tel.metrics)
	a.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
	a.Handle("/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	a.Handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	a.Handle("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	a.Handle("/debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	a.Handle("GET /proxy.pac", clientPAC(proxyAddr)) // upstreams.go: a PAC file for the clients
	as.srv = &http.Server{Handler: a, ReadHeaderTimeout: fwdproxy.DefaultReadHeaderTimeout}
	go func() { _ = as.srv.Serve(ln) }()
	addr := ln.Addr().String()
	logger.Info("admin listening", "addr", addr, "url", "http://"+addr+"/", "token", token != "")
	if ip, ok := ln.Addr().(*net.TCPAddr); ok && !ip.IP.IsLoopback() && token == "" {
		logger.Warn("the admin listener is not on a loopback address and has no token: whoever reaches it sees the traffic, decrypted requests included",
			"addr", addr, "help", "set -admin-token-file, or listen on 127.0.0.1")
	}
	return as, nil
}

// setToken changes the token (a reload).
func (as *adminServer) setToken(token string) {
	if as.admin != nil {
		as.admin.SetToken(token)
	}
}

// close stops the admin listener (its event streams end at once) and
// closes the Admin, which completes the HAR file. Call it once the Proxy
// has drained, so that the file holds every request.
func (as *adminServer) close(ctx context.Context) error {
	var errs []error
	if as.srv != nil {
		as.srv.RegisterOnShutdown(func() { as.admin.Close() }) // ends the streams Shutdown would wait for
		errs = append(errs, as.srv.Shutdown(ctx))
	}
	if as.admin != nil {
		if err := as.admin.Close(); err != nil {
			errs = append(errs, errors.New("har-file: "+err.Error()))
		}
	}
	return errors.Join(errs...)
}
