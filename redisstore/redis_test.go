package redisstore

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisServer is a redis-server of a test's own, on a loopback port, that
// the test can stop, pause and start again on the same port.
type redisServer struct {
	tb   testing.TB
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	tls  *tls.Config // when set, the server listens with TLS on port
}

// startRedis starts a redis-server on a free loopback port, without
// persistence, and stops it when the test ends. It skips the test when
// redis-server is not installed.
func startRedis(tb testing.TB, extra ...string) *redisServer {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redis-server not installed (Debian: apt-get install redis-server; .ci/run installs it): skipping the tests with a real Redis")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &redisServer{tb: tb, port: port, dir: tb.TempDir(), args: extra}
	r.start()
	tb.Cleanup(r.stop)
	return r
}

// startRedisTLS starts a redis-server that listens with TLS only, with a
// certificate for 127.0.0.1 signed by the test CA, and returns it with the
// client configuration that trusts that CA.
func startRedisTLS(tb testing.TB) (*redisServer, *tls.Config) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redis-server not installed (Debian: apt-get install redis-server; .ci/run installs it): skipping the tests with a real Redis")
	}
	dir := tb.TempDir()
	leaf := mintLeaf(tb, "127.0.0.1", time.Hour)
	pemBytes, err := encodeCert(leaf)
	if err != nil {
		tb.Fatal(err)
	}
	ca := testCA()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate[0]})
	for name, b := range map[string][]byte{"server.pem": pemBytes, "ca.pem": caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &redisServer{tb: tb, port: port, dir: dir, tls: conf.Clone()}
	r.tls.ServerName = "127.0.0.1"
	r.args = []string{"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(dir, "server.pem"), "--tls-key-file", filepath.Join(dir, "server.pem"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no"}
	r.start()
	tb.Cleanup(r.stop)
	return r, conf
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *redisServer) url() string { return "redis://" + r.addr() + "/0" }

// start runs redis-server and waits until it answers PING.
func (r *redisServer) start() {
	r.tb.Helper()
	args := append([]string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--daemonize", "no", "--loglevel", "warning", "--logfile", filepath.Join(r.dir, "redis.log"),
	}, r.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := r.ping(); err == nil {
			return
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.tb.Fatalf("redis-server on %s did not answer PING: %v\n%s", r.addr(), err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends a PING on a connection of its own.
func (r *redisServer) ping() error {
	out, err := r.cli("PING")
	if err != nil {
		return err
	}
	if out != "PONG" && !strings.Contains(out, "NOAUTH") {
		return fmt.Errorf("PING answered %q", out)
	}
	return nil
}

// cli sends one inline command and returns the first line of the answer
// without its type byte; bulk strings are read whole.
func (r *redisServer) cli(args ...string) (string, error) {
	var c net.Conn
	var err error
	if r.tls != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", r.addr(), r.tls)
	} else {
		c, err = net.DialTimeout("tcp", r.addr(), time.Second)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty answer")
	}
	if line[0] == '$' {
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line[1:], nil
}

// commandCalls returns how many times Redis ran each command, from INFO
// commandstats ("evalsha" → calls).
func (r *redisServer) commandCalls() map[string]int {
	r.tb.Helper()
	out, err := r.cli("INFO", "commandstats")
	if err != nil {
		r.tb.Fatalf("INFO commandstats: %v", err)
	}
	calls := make(map[string]int)
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(n)
	}
	return calls
}

// stop kills the server (as kill -9 would) and waits for it.
func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// pause stops the server's process without closing its sockets, as a Redis
// that is stuck; resume lets it go on.
func (r *redisServer) pause()  { _ = r.cmd.Process.Signal(syscall.SIGSTOP) }
func (r *redisServer) resume() { _ = r.cmd.Process.Signal(syscall.SIGCONT) }

// openStore opens a Store on r for the test and closes it at cleanup. Its
// timeout is a generous 2 s unless opts set one: tests share two cores with
// the race detector and other work, and only those about failures want
// Redis to be slow.
func openStore(tb testing.TB, r *redisServer, opts ...Option) *Store {
	tb.Helper()
	s, err := Open(r.url(), append([]Option{WithLogger(discardLogger()), WithTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recordingHandler is a slog.Handler that keeps the messages logged.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

func mustAtoi(tb testing.TB, s string) int {
	tb.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatalf("%q: %v", s, err)
	}
	return n
}
