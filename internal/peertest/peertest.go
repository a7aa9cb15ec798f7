// Package peertest starts the real peers that tests chain through: Debian's
// squid, tinyproxy and dante-server (skipped with a clear message when they
// are not installed; .ci/run installs them), and a minimal SOCKS5 server
// with credentials, on free loopback ports, stopped when the test ends.
package peertest

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"io"
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

// Program finds an installed program, also in the sbin directories that
// are not always on a non-root PATH, or skips the test.
func Program(t testing.TB, name string) string {
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

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SharedDir returns a temporary directory that the peers' unprivileged
// users (squid's proxy, dante's nobody) can read and write.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// StartPeer runs argv, waits until it accepts on addr, and stops it when
// the test ends. Its output goes to dir/NAME.out, shown if it fails.
func StartPeer(t testing.TB, dir, addr string, argv ...string) {
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

// StartSquid runs Debian's squid on a free loopback port, requiring user
// and pass with basic_ncsa_auth when user is set, and returns its address.
// It refuses CONNECT to port 9.
func StartSquid(t testing.TB, user, pass string) string {
	auth := user != ""
	bin := Program(t, "squid")
	helper := "/usr/lib/squid/basic_ncsa_auth"
	if auth {
		if _, err := os.Stat(helper); err != nil {
			t.Skipf("squid's %s is not installed", helper)
		}
	}
	dir := SharedDir(t)
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var access string
	if auth {
		pw := filepath.Join(dir, "htpasswd")
		line := user + ":" + MD5Crypt(pass, "fwdprxy1") + "\n"
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
	StartPeer(t, dir, addr, bin, "-N", "-f", cf)
	return addr
}

// StartTinyproxy runs Debian's tinyproxy on a free loopback port, with
// BasicAuth user pass when user is set, and returns its address.
func StartTinyproxy(t testing.TB, user, pass string) string {
	bin := Program(t, "tinyproxy")
	dir := SharedDir(t)
	port := FreePort(t)
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nLogLevel Error\nMaxClients 64\nAllow 127.0.0.1\n", port)
	if user != "" {
		conf += "BasicAuth " + user + " " + pass + "\n"
	}
	cf := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	StartPeer(t, dir, addr, bin, "-d", "-c", cf)
	return addr
}

// StartDante runs Debian's dante-server (danted), a SOCKS5 server, on a
// free loopback port without authentication (its username method checks
// system accounts, which a test must not create).
func StartDante(t testing.TB) string {
	bin := Program(t, "danted")
	dir := SharedDir(t)
	port := FreePort(t)
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
	StartPeer(t, dir, addr, bin, "-f", cf, "-N", "1", "-p", filepath.Join(dir, "danted.pid"))
	return addr
}

// MD5Crypt is the "$1$" MD5-based crypt(3) that squid's basic_ncsa_auth
// accepts (as htpasswd -m and openssl passwd -1 write it).
func MD5Crypt(password, salt string) string {
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

// Relay copies between a and b both ways and closes both when either
// direction ends.
func Relay(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(a, b); closeBoth() })
	wg.Go(func() { _, _ = io.Copy(b, a); closeBoth() })
	wg.Wait()
}

// SOCKSServer is a minimal SOCKS5 server (RFC 1928, CONNECT only) with
// username/password authentication (RFC 1929) when user is set. A reply
// other than 0 is sent instead of connecting.
type SOCKSServer struct {
	l          net.Listener
	user, pass string
	reply      byte
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]bool
}

// StartSOCKS runs a SOCKSServer on a free loopback port until the test ends.
func StartSOCKS(t testing.TB, user, pass string, reply byte) *SOCKSServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SOCKSServer{l: l, user: user, pass: pass, reply: reply, conns: map[net.Conn]bool{}}
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

// Addr is the server's "host:port".
func (s *SOCKSServer) Addr() string { return s.l.Addr().String() }

func (s *SOCKSServer) serve(c net.Conn) {
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
	Relay(c, up)
}
