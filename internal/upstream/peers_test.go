package upstream

import (
	"bufio"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
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

// Credentials every peer that supports them is configured with. They are
// distinctive so that TestCredentialsNeverShown can look for them.
const (
	testUser = "alice-u53r"
	testPass = "s3cr3t-Pa55"
)

// program finds an installed program, also in the sbin directories that
// are not always on a non-root PATH, or skips the test.
func program(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("%s is not installed (Debian: apt-get install %s); skipping the tests against it", name, debPackage(name))
	return ""
}

func debPackage(name string) string {
	if name == "danted" {
		return "dante-server"
	}
	return name
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sharedDir returns a temporary directory that the peers' unprivileged
// users (squid's proxy, dante's nobody) can read and write.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startPeer runs argv, waits until it accepts on addr, and stops it when
// the test ends. Its output goes to dir/NAME.out, shown if it fails.
func startPeer(t *testing.T, dir, addr string, argv ...string) {
	t.Helper()
	name := filepath.Base(argv[0])
	outPath := filepath.Join(dir, name+".out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); out.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // its process group: helpers too
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			exited <- err
			b, _ := os.ReadFile(outPath)
			t.Fatalf("%s exited before listening (%v):\n%s", name, err, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(outPath)
			t.Fatalf("%s did not listen on %s within 20 s:\n%s", name, addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSquid runs Debian's squid on a free loopback port, requiring
// testUser/testPass with basic_ncsa_auth when auth is set, and returns its
// address.
func startSquid(t *testing.T, auth bool) string {
	bin := program(t, "squid")
	helper := "/usr/lib/squid/basic_ncsa_auth"
	if auth {
		if _, err := os.Stat(helper); err != nil {
			t.Skipf("squid's %s is not installed", helper)
		}
	}
	dir := sharedDir(t)
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var access string
	if auth {
		pw := filepath.Join(dir, "htpasswd")
		line := testUser + ":" + md5Crypt(testPass, "fwdprxy1") + "\n"
		if err := os.WriteFile(pw, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		access = fmt.Sprintf(`auth_param basic program %s %s
auth_param basic children 2 startup=1 idle=1
auth_param basic realm fwdproxy-test
acl authed proxy_auth REQUIRED
http_access deny !localsrc
http_access allow authed
http_access deny all
`, helper, pw)
	} else {
		access = "http_access allow localsrc\nhttp_access deny all\n"
	}
	conf := fmt.Sprintf(`http_port %s
visible_hostname fwdproxy-test
acl localsrc src 127.0.0.1/32
acl refused_port port 9
http_access deny refused_port
%scache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log %s/cache.log
logfile_rotate 0
pid_filename none
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
pinger_enable off
icp_port 0
htcp_port 0
coredump_dir %s
`, addr, access, dir, dir)
	cf := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, dir, addr, bin, "-N", "-f", cf)
	return addr
}

// startTinyproxy runs Debian's tinyproxy on a free loopback port, with
// BasicAuth testUser testPass when auth is set.
func startTinyproxy(t *testing.T, auth bool) string {
	bin := program(t, "tinyproxy")
	dir := sharedDir(t)
	port := freePort(t)
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nLogLevel Error\nMaxClients 64\nAllow 127.0.0.1\n", port)
	if auth {
		conf += "BasicAuth " + testUser + " " + testPass + "\n"
	}
	cf := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startPeer(t, dir, addr, bin, "-d", "-c", cf)
	return addr
}

// startDante runs Debian's dante-server (danted), a SOCKS5 server, on a
// free loopback port without authentication (its username method checks
// system accounts, which a test must not create).
func startDante(t *testing.T) string {
	bin := program(t, "danted")
	dir := sharedDir(t)
	port := freePort(t)
	users := "" // settings come before the rules
	if os.Geteuid() == 0 {
		users = "user.privileged: root\nuser.unprivileged: nobody\n"
	}
	conf := fmt.Sprintf(`logoutput: stderr
internal: 127.0.0.1 port = %d
external: 127.0.0.1
socksmethod: none
clientmethod: none
%sclient pass { from: 127.0.0.1/32 to: 0.0.0.0/0 }
socks block { from: 0.0.0.0/0 to: 0.0.0.0/0 port = 9 }
socks pass { from: 127.0.0.1/32 to: 0.0.0.0/0 command: connect }
`, port, users)
	cf := filepath.Join(dir, "danted.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startPeer(t, dir, addr, bin, "-f", cf, "-N", "1", "-p", filepath.Join(dir, "danted.pid"))
	return addr
}

// md5Crypt is the "$1$" MD5-based crypt(3) that squid's basic_ncsa_auth
// accepts (as htpasswd -m and openssl passwd -1 write it).
func md5Crypt(password, salt string) string {
	const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	const magic = "$1$"
	pw, s := []byte(password), []byte(salt)
	alt := md5.Sum(append(append(append([]byte{}, pw...), s...), pw...))
	h := md5.New()
	h.Write(pw)
	h.Write([]byte(magic))
	h.Write(s)
	for i := len(pw); i > 0; i -= 16 {
		h.Write(alt[:min(i, 16)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			h.Write([]byte{0})
		} else {
			h.Write(pw[:1])
		}
	}
	final := h.Sum(nil)
	for i := range 1000 {
		c := md5.New()
		if i&1 != 0 {
			c.Write(pw)
		} else {
			c.Write(final)
		}
		if i%3 != 0 {
			c.Write(s)
		}
		if i%7 != 0 {
			c.Write(pw)
		}
		if i&1 != 0 {
			c.Write(final)
		} else {
			c.Write(pw)
		}
		final = c.Sum(nil)
	}
	var out []byte
	enc := func(a, b, c byte, n int) {
		v := uint(a)<<16 | uint(b)<<8 | uint(c)
		for ; n > 0; n-- {
			out = append(out, itoa64[v&0x3f])
			v >>= 6
		}
	}
	enc(final[0], final[6], final[12], 4)
	enc(final[1], final[7], final[13], 4)
	enc(final[2], final[8], final[14], 4)
	enc(final[3], final[9], final[15], 4)
	enc(final[4], final[10], final[5], 4)
	enc(0, 0, final[11], 2)
	return magic + salt + "$" + string(out)
}

// relay copies between a and b both ways and closes both when either
// direction ends.
func relay(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(a, b); closeBoth() })
	wg.Go(func() { _, _ = io.Copy(b, a); closeBoth() })
	wg.Wait()
}

// proxyHandler is a small forward proxy for tests: CONNECT and
// absolute-form, with Basic credentials checked when user is set, and
// CONNECT to port 9 refused with 403.
type proxyHandler struct {
	user, pass string
	transport  *http.Transport
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]bool // tunnels under way
	closed     bool
	connects   int
}

func newProxyHandler(user, pass string) *proxyHandler {
	return &proxyHandler{user: user, pass: pass, transport: &http.Transport{}, conns: map[net.Conn]bool{}}
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.user != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(h.user+":"+h.pass))
		if r.Header.Get("Proxy-Authorization") != want {
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			http.Error(w, "credentials", http.StatusProxyAuthRequired)
			return
		}
	}
	if r.Method == http.MethodConnect {
		h.mu.Lock()
		h.connects++
		h.mu.Unlock()
		if strings.HasSuffix(r.Host, ":9") {
			http.Error(w, "port 9 is refused", http.StatusForbidden)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		_, _ = c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Reader.Peek(n)
			_, _ = up.Write(b)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			c.Close()
			up.Close()
			return
		}
		h.conns[c] = true
		h.wg.Go(func() {
			relay(c, up)
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
		})
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	resp, err := h.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Via", "1.1 test-proxy")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// close cuts the tunnels under way, refuses new ones, and waits for
// their goroutines.
func (h *proxyHandler) close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.transport.CloseIdleConnections()
}

func (h *proxyHandler) connectCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connects
}

// startHTTPSProxy runs proxyHandler behind TLS (httptest's certificate,
// valid for 127.0.0.1 and example.com): the HTTPS upstream of the tests.
// No Debian package is a plain TLS-terminating forward proxy without a
// certificate setup of its own, so the test brings its own.
func startHTTPSProxy(t *testing.T, user, pass string) (*httptest.Server, *proxyHandler) {
	h := newProxyHandler(user, pass)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are tested on purpose
	srv.StartTLS()
	t.Cleanup(func() { srv.Close(); h.close() })
	return srv, h
}

// startHTTPProxy runs proxyHandler in plain HTTP.
func startHTTPProxy(t *testing.T, user, pass string) (*httptest.Server, *proxyHandler) {
	h := newProxyHandler(user, pass)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.close() })
	return srv, h
}

// socksServer is a minimal SOCKS5 server (RFC 1928, CONNECT only) with
// username/password authentication (RFC 1929) when user is set. A reply
// other than 0 is sent instead of connecting.
type socksServer struct {
	l          net.Listener
	user, pass string
	reply      byte
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]bool
}

func startSOCKS(t *testing.T, user, pass string, reply byte) *socksServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &socksServer{l: l, user: user, pass: pass, reply: reply, conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				s.serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *socksServer) addr() string { return s.l.Addr().String() }

func (s *socksServer) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	want := byte(0)
	if s.user != "" {
		want = 2
	}
	if !strings.ContainsRune(string(methods), rune(want)) {
		_, _ = c.Write([]byte{5, 0xff})
		return
	}
	_, _ = c.Write([]byte{5, want})
	if want == 2 {
		readField := func() string {
			n, err := br.ReadByte()
			if err != nil {
				return "\x00"
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(br, b); err != nil {
				return "\x00"
			}
			return string(b)
		}
		if v, _ := br.ReadByte(); v != 1 {
			return
		}
		user, pass := readField(), readField()
		if user != s.user || pass != s.pass {
			_, _ = c.Write([]byte{1, 1})
			return
		}
		_, _ = c.Write([]byte{1, 0})
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(br, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[req[3]])
		if _, err := io.ReadFull(br, ip); err != nil {
			return
		}
		host = net.IP(ip).String()
	case 3:
		n, _ := br.ReadByte()
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		host = string(b)
	default:
		return
	}
	pb := make([]byte, 2)
	if _, err := io.ReadFull(br, pb); err != nil {
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb))))
	reply := s.reply
	var up net.Conn
	if reply == 0 {
		var err error
		if up, err = net.Dial("tcp", target); err != nil {
			reply = 5
		}
	}
	_, _ = c.Write([]byte{5, reply, 0, 1, 127, 0, 0, 1, 0, 0})
	if up == nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		_, _ = up.Write(b)
	}
	relay(c, up)
}

// rawServer accepts connections and hands each to serve, for upstreams
// that misbehave on purpose.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// echoServer is a TCP origin that echoes what it reads.
func echoServer(t *testing.T) string {
	return rawServer(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// echoCheck sends a line through c and expects it back.
func echoCheck(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "ping through " + c.RemoteAddr().String() + "\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
	_ = c.SetDeadline(time.Time{})
}

var errNotTCP = errors.New("not a *net.TCPConn")

// tcpOf returns c as a *net.TCPConn, as the proxy's tunnel wants it for
// splice(2).
func tcpOf(c net.Conn) (*net.TCPConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("%w: %T", errNotTCP, c)
	}
	return tc, nil
}
