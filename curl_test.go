package fwdproxy

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// curl runs curl with args and returns its standard output. The test is
// skipped when curl is not installed (.ci/run installs it).
func curl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := curlCommand(t, args...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("curl %q: %v: %s", args, err, stderr)
	}
	return string(out)
}

// curlCommand is curl with args, with no proxy from the environment and a
// time limit; the test is skipped when curl is not installed.
func curlCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "--noproxy", "", "--max-time", "20"}, args...)...)
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=", "NO_PROXY=")
	return cmd
}

// curlFails runs curl, which must fail, and returns its exit code and
// standard error.
func curlFails(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := curlCommand(t, args...) // curl_test.go
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("curl %q: want a failure, got %v", args, err)
	}
	return ee.ExitCode(), stderr.String()
}

func TestCurl(t *testing.T) {
	plain := origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s via=%q body=%d", r.Method, r.URL.Path, r.Proto, r.Header.Get("Via"), len(b))
	})
	tlsOrigin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s", r.Proto)
	}))
	tlsOrigin.EnableHTTP2 = true
	tlsOrigin.StartTLS()
	t.Cleanup(tlsOrigin.Close)
	caFile := filepath.Join(t.TempDir(), "origin.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsOrigin.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	upload := filepath.Join(t.TempDir(), "upload.bin")
	if err := os.WriteFile(upload, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, WithVia("curltest"))
	proxy := tp.URL.String()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"absolute-form", []string{"-x", proxy, plain.URL + "/a"}, `GET /a HTTP/1.1 via="1.1 curltest" body=0`},
		{"HTTP/1.0 client", []string{"--http1.0", "-x", proxy, plain.URL + "/b"}, `GET /b HTTP/1.1 via="1.0 curltest" body=0`},
		{"HTTP/1.0 CONNECT", []string{"-p", "--proxy1.0", proxy, plain.URL + "/b"}, `GET /b HTTP/1.1 via="" body=0`},
		{"CONNECT tunnel", []string{"-p", "-x", proxy, plain.URL + "/c"}, `GET /c HTTP/1.1 via="" body=0`},
		{"upload", []string{"-x", proxy, "-T", upload, plain.URL + "/up"}, `PUT /up HTTP/1.1 via="1.1 curltest" body=1048576`},
		{"HTTPS with HTTP/2 through CONNECT", []string{"-x", proxy, "--cacert", caFile, "--http2", tlsOrigin.URL + "/"}, "tls HTTP/2.0"},
		{"response Via", []string{"-x", proxy, "-o", "/dev/null", "-D", "-", plain.URL + "/d"}, "Via: 1.1 curltest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := curl(t, tc.args...); !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want it to contain %q", got, tc.want)
			}
		})
	}
}
