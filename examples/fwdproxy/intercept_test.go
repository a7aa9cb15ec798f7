package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dnstest"
)

// TestInterception runs the example server with -mitm-ca-dir,
// -mitm-bypass and -upstream-ca against an HTTPS origin, with curl (HTTP/1.1
// and HTTP/2) and Go's client.
func TestInterception(t *testing.T) {
	bin := build(t)
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s via=%q", r.URL.Path, r.Header.Get("Via"))
	}))
	o.EnableHTTP2 = true
	o.StartTLS()
	defer o.Close()
	tmp := t.TempDir()
	originPEM := filepath.Join(tmp, "origin.pem")
	if err := os.WriteFile(originPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := dnstest.NewServer(t)
	ds.Add("example.com. 60 IN A 127.0.0.1")
	caDir := filepath.Join(tmp, "ca")
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	_, addr := startServer(t, bin, "-allow-private", "-allow-port", port, "-mitm-ca-dir", caDir, "-mitm-bypass", "example.com",
		"-upstream-ca", originPEM, "-dns-server", ds.Addr())
	caPEM := filepath.Join(caDir, "ca.pem")
	if fi, err := os.Stat(filepath.Join(caDir, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi, err)
	}
	ipURL := "https://127.0.0.1:" + port

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not installed")
		}
		for _, tc := range []struct{ flag, want string }{
			{"--http1.1", `origin /c1 via="1.1 `},
			{"--http2", `origin /c2 via="2 `},
		} {
			path := "/c" + tc.flag[len(tc.flag)-1:]
			out, err := exec.Command("curl", "-sS", "--max-time", "20", "-x", "http://"+addr, "--cacert", caPEM, tc.flag, ipURL+path).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), tc.want) {
				t.Errorf("curl %s: %v %q, want prefix %q", tc.flag, err, out, tc.want)
			}
		}
	})
	client := func(roots ...string) *http.Client {
		pool := x509.NewCertPool()
		for _, f := range roots {
			b, _ := os.ReadFile(f)
			pool.AppendCertsFromPEM(b)
		}
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	for _, tc := range []struct {
		name, url, issuer string
	}{
		{"intercepted", ipURL + "/go", "fwdproxy interception CA"},
		{"bypassed", "https://example.com:" + port + "/go", "Acme Co"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", tc.url, nil)
			resp, err := client(caPEM, originPEM).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			leaf := resp.TLS.PeerCertificates[0]
			if got := leaf.Issuer.String(); !strings.Contains(got, tc.issuer) {
				t.Errorf("issuer %q, want %q", got, tc.issuer)
			}
		})
	}
}

// TestInterceptionBypassIP: -mitm-bypass takes IP addresses and CIDR
// ranges (as -deny-host does): a CONNECT to a matching IP target is
// tunnelled, so the client sees the origin's own certificate.
func TestInterceptionBypassIP(t *testing.T) {
	bin := build(t)
	o := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer o.Close()
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	for _, tc := range []struct {
		bypass, issuer string
	}{
		{"127.0.0.1", "Acme Co"},
		{"127.0.0.0/8,::1", "Acme Co"},
		{"10.0.0.0/8", "fwdproxy interception CA"},
	} {
		t.Run(tc.bypass, func(t *testing.T) {
			caDir := filepath.Join(t.TempDir(), "ca")
			_, addr := startServer(t, bin, "-allow-private", "-allow-port", port, "-mitm-ca-dir", caDir, "-mitm-bypass", tc.bypass)
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			target := "127.0.0.1:" + port
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
			br := bufio.NewReader(c)
			if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			// Verification is not the point: the issuer says who answered.
			tc2 := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			if err := tc2.Handshake(); err != nil {
				t.Fatal(err)
			}
			if got := tc2.ConnectionState().PeerCertificates[0].Issuer.String(); !strings.Contains(got, tc.issuer) {
				t.Errorf("issuer %q, want %q", got, tc.issuer)
			}
		})
	}
}

// TestInterceptionFlags: bad interception flags stop the server with a
// clear error.
func TestInterceptionFlags(t *testing.T) {
	bin := build(t)
	tmp := t.TempDir()
	notPEM := filepath.Join(tmp, "not.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o644)
	halfCA := filepath.Join(tmp, "half")
	_ = os.MkdirAll(halfCA, 0o700)
	_ = os.WriteFile(filepath.Join(halfCA, "ca.pem"), []byte("x"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bypass without CA", []string{"-mitm-bypass", "example.com"}, "needs -mitm-ca-dir"},
		{"bad bypass pattern", []string{"-mitm-ca-dir", filepath.Join(tmp, "ca"), "-mitm-bypass", "a.*.b"}, "WithInterceptBypass"},
		{"bad bypass CIDR", []string{"-mitm-ca-dir", filepath.Join(tmp, "ca"), "-mitm-bypass", "10.0.0.0/33"}, `"10.0.0.0/33" is neither a host pattern nor a CIDR range`},
		{"missing upstream CA", []string{"-upstream-ca", filepath.Join(tmp, "nope.pem")}, "-upstream-ca"},
		{"upstream CA not PEM", []string{"-upstream-ca", notPEM}, "no PEM certificate"},
		{"half a CA", []string{"-mitm-ca-dir", halfCA}, "only one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"-listen", "127.0.0.1:0"}, tc.args...)...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %d, output %q; want 1 containing %q", code, out, tc.want)
			}
		})
	}
}
