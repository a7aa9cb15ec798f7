package upstream

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/peertest"
)

// Credentials every peer that supports them is configured with. They are
// distinctive so that TestCredentialsNeverShown can look for them.
const (
	testUser = "alice-u53r"
	testPass = "s3cr3t-Pa55"
)

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
			peertest.Relay(c, up)
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
	return "127.0.0.1:" + strconv.Itoa(peertest.FreePort(t))
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
