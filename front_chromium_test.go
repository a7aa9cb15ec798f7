package fwdproxy

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// chromium returns the path of a Chromium binary, or skips the test
// (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// dumpDOM loads pageURL in headless Chromium through proxyServer (its
// --proxy-server value) and returns the DOM it rendered. Loopback is sent
// through the proxy too (--proxy-bypass-list=<-loopback>), and extra flags
// are added. Chromium runs in a fresh profile, talks to no service of
// Google's (no QUIC, no background networking, no component updates, no
// sync) and is killed after 60 s.
func dumpDOM(t *testing.T, proxyServer, pageURL string, extra ...string) string {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(),
		"--proxy-server=" + proxyServer, "--proxy-bypass-list=<-loopback>",
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, "--dump-dom", pageURL)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=", "all_proxy=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// spkiHash is the base64 SHA-256 of a certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestChromiumFrontEnds: headless Chromium loads local pages through the
// HTTPS listener (HTTP/2 by ALPN: an http page as an absolute-form request
// on a stream, an https page through a CONNECT stream; the certificates
// trusted by their keys' hashes) and through the SOCKS5 listener; each page
// renders, and the proxy's access log has its request or tunnel.
func TestChromiumFrontEnds(t *testing.T) {
	chromium(t)
	o := origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!DOCTYPE html><html><head><title>front</title></head><body><p id=x>hello through the proxy</p></body></html>")
	})
	tlsO, _ := tlsOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!DOCTYPE html><html><body><p>hello over https, "+r.Proto+"</p></body></html>")
	})
	m := newMultiFront(t, true, WithAllowPrivate(), allowAnyConnectPort())
	tlsAddr := m.listen(t, (*Proxy).ServeTLS)
	socksAddr := m.listen(t, (*Proxy).ServeSOCKS)
	leaf := func() *x509.Certificate {
		c := m.cfg.Load().front.tls.Certificates[0]
		return c.Leaf
	}()
	trust := "--ignore-certificate-errors-spki-list=" + spkiHash(leaf) + "," + spkiHash(tlsO.Certificate())
	for _, tc := range []struct {
		name, proxy, page, want, proto string
	}{
		{"https proxy", "https://" + tlsAddr, o.URL + "/", "hello through the proxy", "HTTP/2.0"},
		{"https proxy, https page", "https://" + tlsAddr, tlsO.URL + "/", "hello over https, HTTP/2.0", "HTTP/2.0"},
		{"socks5 proxy", "socks5://" + socksAddr, o.URL + "/", "hello through the proxy", "SOCKS5"},
		{"socks5 proxy, https page", "socks5://" + socksAddr, tlsO.URL + "/", "hello over https, HTTP/2.0", "SOCKS5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.logs.Reset()
			dom := dumpDOM(t, tc.proxy, tc.page, trust)
			if !strings.Contains(dom, tc.want) {
				t.Fatalf("the page did not render:\n%s", dom)
			}
			found := false
			for _, msg := range []string{"request", "tunnel"} {
				for _, r := range records(t, m.logs, msg, 0) {
					if r["proto"] == tc.proto && r["status"] == float64(200) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("no %s access record of the page:\n%s", tc.proto, m.logs.String())
			}
		})
	}
}
