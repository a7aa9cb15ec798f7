package fwdproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestGETWalk makes FWDPROXY_WALK_GETS plain GETs through Serve, to a
// loopback origin, over one keep-alive connection. Run under coverage
// with 2 and with 3 GETs, the difference of the two profiles is one GET on
// a warm connection (the upstream connection pooled): the files and
// functions such a GET runs, and how many times. It is how
// docs/architecture.md counts the files of the walk; it is skipped unless
// FWDPROXY_WALK_GETS is set:
//
//	for n in 2 3; do FWDPROXY_WALK_GETS=$n go test -run TestGETWalk -count=1 \
//		-covermode=count -coverpkg=github.com/fwdproxy/fwdproxy/... \
//		-coverprofile=/tmp/walk$n.txt .; done
//
// It uses the public API only, so that it runs on older trees as well.
func TestGETWalk(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FWDPROXY_WALK_GETS"))
	if n < 1 {
		t.Skip("FWDPROXY_WALK_GETS is not set")
	}
	body := strings.Repeat("x", 100)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	}))
	defer o.Close()
	p, err := New(WithAllowPrivate(), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	defer func() {
		_ = p.Shutdown(context.Background())
		<-served
	}()
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()}), DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get := func() {
		resp, err := c.Get(o.URL + "/small")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("GET: %d %q", resp.StatusCode, b)
		}
	}
	for range n {
		get()
	}
}
