package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

var (
	tlsListenLine   = regexp.MustCompile(`fwdproxy listening.* tls-listen=(\S+)`)
	socksListenLine = regexp.MustCompile(`fwdproxy listening.* socks-listen=(\S+)`)
)

// TestFrontEndFlags: -tls-listen with -tls-cert and -tls-key serves an
// HTTPS proxy, whose certificate the server reads again when its files
// change, without a restart (a pair that does not load leaves the one
// before in use, and says so); -socks-listen serves SOCKS5 with -auth's
// users; -proxy-protocol-from makes the listeners take curl's PROXY header.
func TestFrontEndFlags(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	dir := t.TempDir()
	pki := proxytest.NewPKI(t, "fwdproxy test CA")
	first := pki.Server(t, "127.0.0.1")
	certFile, keyFile := proxytest.WritePair(t, dir, "proxy", first)
	_, port, _ := strings.Cut(strings.TrimPrefix(o.URL, "http://"), ":")
	_, logs := startLogged(t, bin, "-tls-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile,
		"-socks-listen", "127.0.0.1:0", "-auth", "alice:pw", "-allow-port", port) // a SOCKS5 CONNECT is a CONNECT: 443 only without -allow-port
	tlsAddr := logs.waitFor(t, tlsListenLine)
	socksAddr := logs.waitFor(t, socksListenLine)

	served := func() string { // the serial of the certificate a new handshake gets
		t.Helper()
		tr := &http.Transport{
			Proxy:           http.ProxyURL(&url.URL{Scheme: "https", Host: tlsAddr, User: url.UserPassword("alice", "pw")}),
			TLSClientConfig: &tls.Config{RootCAs: pki.Pool},
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get(o.URL)
		if err != nil {
			t.Fatalf("through the HTTPS listener: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conn, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := served(); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("serial %s, want the first certificate's", got)
	}

	// A key that does not match: the first certificate stays.
	other := pki.Server(t, "127.0.0.1")
	der, err := x509.MarshalPKCS8PrivateKey(other.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	proxytest.WritePEM(t, keyFile, "PRIVATE KEY", der)
	logs.waitFor(t, regexp.MustCompile(`(TLS certificate not reloaded; the one before stays in use)`))
	if got := served(); got != first.Leaf.SerialNumber.String() {
		t.Errorf("after a bad key: serial %s, want the first certificate's", got)
	}
	// The matching certificate: now in use.
	proxytest.WritePEM(t, certFile, "CERTIFICATE", other.Certificate[0])
	logs.waitFor(t, regexp.MustCompile(`(TLS certificate reloaded)`))
	if got := served(); got != other.Leaf.SerialNumber.String() {
		t.Errorf("after the new pair: serial %s, want the new certificate's", got)
	}

	// SOCKS5, with -auth's users.
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "socks5", Host: socksAddr, User: url.UserPassword("alice", "pw")})}
	defer tr.CloseIdleConnections()
	get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, o.URL)

	// The PROXY protocol on -listen (on every listener of the server),
	// from curl.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	_, ppLogs := startLogged(t, bin, "-auth", "alice:pw", "-proxy-protocol-from", "127.0.0.1/32")
	addr := ppLogs.waitFor(t, textListen)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--noproxy", "", "--haproxy-protocol", "-U", "alice:pw", "-x", "http://"+addr, o.URL).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello") {
		t.Errorf("curl --haproxy-protocol: %v %s", err, out)
	}
}

// TestFrontEndFlagProblems: the front-end settings that cannot work are
// refused where they were made.
func TestFrontEndFlagProblems(t *testing.T) {
	dir := t.TempDir()
	pki := proxytest.NewPKI(t, "ca")
	certFile, keyFile := proxytest.WritePair(t, dir, "proxy", pki.Server(t, "127.0.0.1"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"TLS without a certificate", []string{"-tls-listen", "127.0.0.1:0"}, "tls-listen: needs -tls-cert and -tls-key"},
		{"a certificate without TLS", []string{"-tls-cert", certFile, "-tls-key", keyFile}, "tls-cert: needs -tls-listen"},
		{"a missing key file", []string{"-tls-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", filepath.Join(dir, "none")}, "tls-cert: the certificate"},
		{"client CA without TLS", []string{"-tls-client-ca", certFile}, "tls-client-ca: needs -tls-listen"},
		{"required client certificates without a CA", []string{"-tls-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile, "-tls-require-client-cert"}, "tls-require-client-cert: needs -tls-client-ca"},
		{"bad PROXY range", []string{"-proxy-protocol-from", "10.0.0.0/33"}, `proxy-protocol-from: "10.0.0.0/33" is not a CIDR range`},
		{"bad streams", []string{"-http2-max-streams", "0"}, "http2-max-streams: WithHTTP2MaxStreams"},
		{"bad SOCKS address", []string{"-socks-listen", "nowhere"}, "socks-listen: want host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := load(append([]string{"-listen", "127.0.0.1:0"}, tc.args...), nil, io.Discard)
			if err == nil {
				err = checkBuild(l, io.Discard)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestFrontEndConfigFile: the front-end keys of a configuration file reach
// the server: tls-listen, tls-cert, tls-key and tls-client-ca (a client
// certificate is the user in the access log, without a password), h2c (an
// HTTP/2 client with prior knowledge on listen) and socks-on-http-listener
// (SOCKS5 on listen). A reload changes the keys that can change live
// (socks-on-http-listener off, tls-require-client-cert on: each then
// refuses, the latter on every listener), and refuses a change to
// tls-listen, naming the line.
func TestFrontEndConfigFile(t *testing.T) {
	bin := build(t)
	o := helloOrigin(t)
	dir := t.TempDir()
	pki := proxytest.NewPKI(t, "fwdproxy test CA")
	certFile, keyFile := proxytest.WritePair(t, dir, "proxy", pki.Server(t, "127.0.0.1"))
	caFile := pki.WriteCA(t, dir)
	carol := pki.Client(t, "carol")
	_, port, _ := strings.Cut(strings.TrimPrefix(o.URL, "http://"), ":")
	front := "tls-listen: 127.0.0.1:0\ntls-cert: " + certFile + "\ntls-key: " + keyFile + "\ntls-client-ca: " + caFile +
		"\nh2c: true\nallow-port: [" + port + "]\n"
	path := writeFile(t, "fwdproxy.yaml", front+"socks-on-http-listener: true\n")
	_, logs := startLogged(t, bin, "-config", path, "-log-level", "debug")
	addr := logs.waitFor(t, textListen)
	tlsAddr := logs.waitFor(t, tlsListenLine)

	// Each client makes one request and reports its error.
	httpsClient := func(certs ...tls.Certificate) error {
		tr := &http.Transport{
			Proxy:           http.ProxyURL(&url.URL{Scheme: "https", Host: tlsAddr}),
			TLSClientConfig: &tls.Config{RootCAs: pki.Pool, Certificates: certs},
		}
		defer tr.CloseIdleConnections()
		return fetch(&http.Client{Transport: tr, Timeout: 10 * time.Second}, o.URL+"/https")
	}
	h2cClient := func() error {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr) // the origin's URL, to the proxy: absolute-form over HTTP/2
		}}
		defer tr.CloseIdleConnections()
		return fetch(&http.Client{Transport: tr, Timeout: 10 * time.Second}, o.URL+"/h2c")
	}
	socksClient := func() error {
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "socks5", Host: addr})}
		defer tr.CloseIdleConnections()
		return fetch(&http.Client{Transport: tr, Timeout: 10 * time.Second}, o.URL+"/socks")
	}

	if err := httpsClient(carol); err != nil {
		t.Errorf("HTTPS with a client certificate: %v", err)
	}
	if err := httpsClient(); err != nil {
		t.Errorf("HTTPS without a client certificate (optional): %v", err)
	}
	if err := h2cClient(); err != nil {
		t.Errorf("cleartext HTTP/2 on listen: %v", err)
	}
	if err := socksClient(); err != nil {
		t.Errorf("SOCKS5 on listen: %v", err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(msg=request method=GET .*proto=HTTP/1.1 .*user=carol .*url=\S+/https)`),
		regexp.MustCompile(`(msg=request method=GET target=127.0.0.1:\d+ proto=HTTP/2.0 .*url=\S+/h2c)`),
		regexp.MustCompile(`(msg=tunnel method=CONNECT .*proto=SOCKS5)`),
	} {
		logs.waitFor(t, want)
	}

	// A reload: SOCKS5 on listen off, client certificates required.
	rewrite(t, path, front+"socks-on-http-listener: false\ntls-require-client-cert: true\n")
	wantReloaded(t, reloadLines(t, logs, 1)[0])
	if err := socksClient(); err == nil {
		t.Error("SOCKS5 on listen after socks-on-http-listener: false: served")
	}
	if err := httpsClient(); err == nil {
		t.Error("HTTPS without a client certificate after tls-require-client-cert: true: served")
	}
	if err := httpsClient(carol); err != nil {
		t.Errorf("HTTPS with a client certificate after the reload: %v", err)
	}
	// Required certificates refuse the requests of the other listeners too
	// (without -auth to let them in), saying why.
	if err := h2cClient(); err == nil || !strings.Contains(err.Error(), `403 "a client certificate is required`) {
		t.Errorf("cleartext HTTP/2 after the reload: %v, want 403 saying a client certificate is required", err)
	}

	// tls-listen is fixed: a reload that changes it is refused whole.
	rewrite(t, path, strings.Replace(front, "tls-listen: 127.0.0.1:0", "tls-listen: 127.0.0.1:1", 1))
	refused := reloadLines(t, logs, 2)[1]
	if want := path + `:1: tls-listen: cannot change on reload`; !strings.Contains(refused, want) {
		t.Errorf("reload line\n%s\nwant it to contain\n%s", refused, want)
	}
	if err := socksClient(); err == nil {
		t.Error("the refused reload turned SOCKS5 on listen back on")
	}
}

// fetch GETs u with c and fails unless the answer is 200 with the hello
// origin's body.
func fetch(c *http.Client, u string) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || string(b) != "hello" {
		return fmt.Errorf("%d %q", resp.StatusCode, b)
	}
	return nil
}
