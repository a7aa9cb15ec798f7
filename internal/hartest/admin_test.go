package hartest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fwdproxy/fwdproxy"
	"github.com/fwdproxy/fwdproxy/internal/dnstest"
	"github.com/fwdproxy/fwdproxy/internal/proxytest"
)

// portOf is the port of addr (host:port, or a URL's).
func portOf(t *testing.T, addr string) string {
	t.Helper()
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestAdminHARValidates: through a real Proxy and its Admin, traffic of
// every shape the proxy records (plain GETs with credentials, JSON, an
// image and binary bodies, a POST, an https URL sent over TLS, a request
// decrypted from an intercepted CONNECT over HTTP/2, a plain tunnel, a
// denial, an upstream failure, a request for the proxy itself) ends up in
// a /flows.har and in an AdminOptions.HARFile (which keeps what the ring
// evicts) that are valid HAR 1.2, one entry a flow, without credentials.
func TestAdminHARValidates(t *testing.T) {
	var img bytes.Buffer
	if err := png.Encode(&img, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
		t.Fatal(err)
	}
	o := proxytest.Origin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Set-Cookie", "sid=origin-secret")
			io.WriteString(w, `{"hello":"world"}`)
		case "/image":
			w.Header().Set("Content-Type", "image/png")
			w.Write(img.Bytes())
		case "/binary":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write([]byte{0, 1, 2, 0xff})
		case "/post":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Write(append([]byte("got "), b...))
		case "/redirect":
			http.Redirect(w, r, "/json", http.StatusFound)
		}
	})
	tlsO, roots := proxytest.TLSOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "tls "+r.URL.Path)
	})
	echo := proxytest.TCPOrigin(t, "tcp", "127.0.0.1:0", proxytest.Echo)
	ds := dnstest.NewServer(t)
	ds.Add("origin.test. 60 IN A 127.0.0.1")
	ds.Add("example.com. 60 IN A 127.0.0.1") // a name the TLS origin's certificate holds
	ds.Add("tunnel.test. 60 IN A 127.0.0.1")
	ca, caPool := proxytest.NewCA(t)
	plain := "origin.test:" + portOf(t, o.URL)
	secure := "example.com:" + portOf(t, tlsO.URL)
	tunnel := "tunnel.test:" + portOf(t, echo)
	var ports []uint16
	for _, a := range []string{secure, tunnel} {
		n, _ := strconv.ParseUint(portOf(t, a), 10, 16)
		ports = append(ports, uint16(n))
	}
	p, err := fwdproxy.New(fwdproxy.WithLogger(proxytest.Logger(t)), fwdproxy.WithAllowPrivate(),
		fwdproxy.WithDNSServers(ds.Addr()), fwdproxy.WithCapture(4096), fwdproxy.WithUpstreamRootCAs(roots),
		fwdproxy.WithInterception(ca, fwdproxy.WithInterceptBypass("tunnel.test")), fwdproxy.WithDenyHosts("denied.test"),
		fwdproxy.WithAllowPorts(ports...),
		fwdproxy.WithBasicAuth(fwdproxy.StaticCredentials(map[string]string{"alice": "pw"})))
	if err != nil {
		t.Fatal(err)
	}
	addr := proxytest.Serve(t, p)
	harPath := filepath.Join(t.TempDir(), "flows.har")
	a, err := p.NewAdmin(fwdproxy.AdminOptions{MaxFlows: 3, HARFile: harPath})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	defer a.Close() // first: it ends the event streams that srv.Close would wait for

	pu := &url.URL{Scheme: "http", Host: addr, User: url.UserPassword("alice", "pw")}
	auth := "Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"
	c := proxytest.Client(t, pu, &tls.Config{RootCAs: caPool})
	do := func(method, u, body string) {
		t.Helper()
		req, err := http.NewRequest(method, u, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer client-secret")
		req.Header.Set("Cookie", "a=client-secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, path := range []string{"/json", "/image", "/binary", "/redirect"} {
		do("GET", "http://"+plain+path, "")
	}
	do("POST", "http://"+plain+"/post", `{"name":"x"}`)
	do("GET", "https://"+secure+"/inside", "")           // intercepted, HTTP/2 inside
	do("GET", "http://"+proxytest.ClosedPort(t)+"/", "") // 502
	for _, raw := range []string{
		"GET https://" + secure + "/abs HTTP/1.1\r\nHost: " + secure + "\r\n" + auth + "\r\n",
		"GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n" + auth + "\r\n",
		"GET /itself HTTP/1.1\r\nHost: proxy.test:8080\r\n" + auth + "\r\n",
	} {
		proxytest.Send(t, addr, raw)
	}
	conn, br := proxytest.RawConn(t, addr)
	proxytest.MustWrite(t, conn, "CONNECT "+tunnel+" HTTP/1.1\r\nHost: "+tunnel+"\r\n"+auth+"\r\n")
	if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	proxytest.MustWrite(t, conn, "ping!")
	if _, err := io.ReadFull(br, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	c.CloseIdleConnections()
	proxytest.Quiesce(t, func() (bool, any) {
		s := p.Stats()
		return s.ActiveRequests == 0 && s.ActiveTunnels == 0, s
	})
	const want = 12 // the requests above and the redirect followed; the intercepted CONNECT has no record of its own

	// /flows.har: the flows the ring holds (the newest three), filtered as
	// the inspector's list.
	for _, q := range []string{"", "?method=GET", "?status=4xx"} {
		resp, err := srv.Client().Get(srv.URL + "/flows.har" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/flows.har%s: %d %s", q, resp.StatusCode, b)
		}
		m := Validate(t, b)
		if n := len(m["log"].(map[string]any)["entries"].([]any)); n == 0 || n > 3 {
			t.Errorf("/flows.har%s: %d entries, want 1 to 3 (the ring holds 3)", q, n)
		}
		if bytes.Contains(b, []byte("client-secret")) || bytes.Contains(b, []byte("origin-secret")) {
			t.Errorf("/flows.har%s: a credential in the HAR", q)
		}
	}

	// The HAR file: every flow, complete once Close returns.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(harPath)
	if err != nil {
		t.Fatal(err)
	}
	entries := Validate(t, b)["log"].(map[string]any)["entries"].([]any)
	methods := map[string]int{}
	for _, e := range entries {
		methods[e.(map[string]any)["request"].(map[string]any)["method"].(string)]++
	}
	if len(entries) != want || methods["CONNECT"] != 1 || methods["POST"] != 1 {
		js, _ := json.MarshalIndent(entries, "", " ")
		t.Errorf("%d entries (methods %v), want %d with one CONNECT and one POST:\n%s", len(entries), methods, want, js)
	}
	if bytes.Contains(b, []byte("client-secret")) || bytes.Contains(b, []byte("origin-secret")) {
		t.Error("a credential in the HAR file")
	}
}
