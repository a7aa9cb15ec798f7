// Command gopeer runs one of the Go proxies that fwdproxy is compared with:
//
//	-kind goproxy        github.com/elazarl/goproxy with its defaults
//	-kind goproxy-tuned  goproxy with a shared, pooled http.Transport (and, when
//	                     intercepting, a certificate cache)
//	-kind naive          httputil.ReverseProxy plus a minimal CONNECT handler
//
// With -mitm-ca FILE, goproxy intercepts every CONNECT (AlwaysMitm) with its
// built-in CA and writes that CA's certificate to FILE for clients to trust.
//
// SIGUSR1 runs a garbage collection and returns the freed memory to the
// system (debug.FreeOSMemory): the harness's "forced idle" reading of the
// idle scenarios. The example server gets the same handler from benchrun's
// build overlay.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"
)

func main() {
	kind := flag.String("kind", "goproxy", "goproxy, goproxy-tuned or naive")
	listen := flag.String("listen", "127.0.0.1:8080", "listen address")
	mitmCA := flag.String("mitm-ca", "", "goproxy only: intercept CONNECT and write the CA certificate (PEM) here")
	flag.Parse()
	freeMemoryOnSignal()

	var h http.Handler
	switch *kind {
	case "goproxy", "goproxy-tuned":
		p := goproxy.NewProxyHttpServer()
		if *kind == "goproxy-tuned" {
			p.Tr = &http.Transport{
				MaxIdleConns:          1024,
				MaxIdleConnsPerHost:   1024,
				IdleConnTimeout:       90 * time.Second,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second,
				ForceAttemptHTTP2:     true,
				DisableCompression:    true,
				// Upstream certificates are verified against the system
				// roots (the harness points SSL_CERT_FILE at the origin's).
			}
		}
		if *mitmCA != "" {
			if err := os.WriteFile(*mitmCA, goproxy.CA_CERT, 0o644); err != nil {
				log.Fatal(err)
			}
			p.OnRequest().HandleConnect(goproxy.AlwaysMitm)
			if *kind == "goproxy-tuned" {
				// Stock goproxy mints an RSA certificate for every CONNECT.
				p.CertStore = &certCache{m: map[string]*tls.Certificate{}}
			}
		}
		h = p
	case "naive":
		if *mitmCA != "" {
			log.Fatal("naive: no interception")
		}
		h = naive()
	default:
		log.Fatalf("unknown -kind %q", *kind)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(l, h))
}

// freeMemoryOnSignal returns freed memory to the system on every SIGUSR1.
func freeMemoryOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		for range ch {
			debug.FreeOSMemory()
		}
	}()
}

// naive is what a Go programmer writes in ten minutes: ReverseProxy with the
// default transport for absolute-form requests, and hijack-dial-copy for CONNECT.
func naive() http.Handler {
	rp := &httputil.ReverseProxy{Rewrite: func(*httputil.ProxyRequest) {}} // Out keeps the absolute URL
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			rp.ServeHTTP(w, r)
			return
		}
		up, err := net.DialTimeout("tcp", r.Host, 10*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			c.Close()
			up.Close()
			return
		}
		go pipe(up, c, brw.Reader)
		go pipe(c, up, nil)
	})
}

// pipe copies src to dst (after any bytes already buffered from src) and
// closes both when done.
func pipe(dst, src net.Conn, buffered *bufio.Reader) {
	if buffered != nil && buffered.Buffered() > 0 {
		b, _ := buffered.Peek(buffered.Buffered())
		if _, err := dst.Write(b); err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// certCache is a goproxy.CertStorage that mints each host's certificate once;
// concurrent first requests for a host wait for the one being minted.
type certCache struct {
	mu sync.Mutex
	m  map[string]*tls.Certificate
}

func (c *certCache) Fetch(host string, gen func() (*tls.Certificate, error)) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert, ok := c.m[host]; ok {
		return cert, nil
	}
	cert, err := gen()
	if err != nil {
		return nil, err
	}
	c.m[host] = cert
	return cert, nil
}
