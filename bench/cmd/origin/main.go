// Command origin is the benchmark's origin server. It serves fixed-size
// bodies over HTTP and HTTPS and a raw TCP byte source for tunnel throughput:
//
//	/small 100 B, /64k, /1m, /100m: streamed from one shared buffer, with Content-Length
//	-raw: on connect, writes zeros until the peer closes (or -raw-limit bytes)
//	-sink: an echo sink for idle tunnels: accepts, holds, writes back what it
//	       reads (a few bytes at a time), until the peer closes
//	-https: the same paths over TLS (HTTP/1.1 and h2) with a self-signed
//	        certificate generated at start and written to -cert
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// sizes maps each path to its body size.
var sizes = map[string]int64{
	"/small": 100,
	"/64k":   64 << 10,
	"/1m":    1 << 20,
	"/100m":  100 << 20,
}

// chunk is the shared, read-only body buffer: bodies are written from it in
// slices, so a 100 MiB body never exists in memory.
var chunk = make([]byte, 256<<10)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:0", "HTTP listen address")
	httpsAddr := flag.String("https", "", "HTTPS listen address (empty: off)")
	rawAddr := flag.String("raw", "", "raw TCP source listen address (empty: off)")
	certFile := flag.String("cert", "origin-cert.pem", "where to write the generated TLS certificate (PEM)")
	rawLimit := flag.Int64("raw-limit", 0, "bytes the raw source sends per connection (0: until the peer closes)")
	sinkAddr := flag.String("sink", "", "echo sink listen address for idle tunnels (empty: off)")
	flag.Parse()
	for i := range chunk {
		chunk[i] = 'x'
	}
	if err := run(*httpAddr, *httpsAddr, *rawAddr, *sinkAddr, *certFile, *rawLimit); err != nil {
		log.Fatal("origin: ", err)
	}
}

func run(httpAddr, httpsAddr, rawAddr, sinkAddr, certFile string, rawLimit int64) error {
	errc := make(chan error, 4)
	l, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return err
	}
	go func() { errc <- newServer().Serve(l) }()
	if httpsAddr != "" {
		cert, err := selfSigned(certFile)
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", httpsAddr)
		if err != nil {
			return err
		}
		srv := newServer()
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		go func() { errc <- srv.ServeTLS(l, "", "") }()
	}
	if rawAddr != "" {
		l, err := net.Listen("tcp", rawAddr)
		if err != nil {
			return err
		}
		go func() { errc <- serveRaw(l, rawLimit) }()
	}
	if sinkAddr != "" {
		l, err := net.Listen("tcp", sinkAddr)
		if err != nil {
			return err
		}
		go func() { errc <- serveSink(l) }()
	}
	return <-errc
}

func newServer() *http.Server {
	return &http.Server{Handler: http.HandlerFunc(serveBody), ReadHeaderTimeout: 10 * time.Second}
}

func serveBody(w http.ResponseWriter, r *http.Request) {
	n, ok := sizes[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Length"] = []string{strconv.FormatInt(n, 10)}
	if r.Method == http.MethodHead {
		return
	}
	for n > 0 {
		b := chunk[:min(n, int64(len(chunk)))]
		if _, err := w.Write(b); err != nil {
			return
		}
		n -= int64(len(b))
	}
}

// serveRaw writes zeros to every accepted connection until it fails or limit
// bytes are sent.
func serveRaw(l net.Listener, limit int64) error {
	zeros := make([]byte, len(chunk))
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var w io.Writer = c
			if limit > 0 {
				w = &limitedWriter{w: c, n: limit}
			}
			for {
				if _, err := w.Write(zeros); err != nil {
					return
				}
			}
		}()
	}
}

// serveSink holds every accepted connection and echoes what it reads, so
// that a client can check that an idle tunnel still moves bytes. The copy
// goes through a small buffer on purpose: io.Copy between the connection and
// itself would splice, and each splice holds a pipe (two descriptors) while
// it waits, which 9,000 held connections cannot afford under a 20,000
// descriptor limit.
func serveSink(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var buf [512]byte
			for {
				n, err := c.Read(buf[:])
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

type limitedWriter struct {
	w io.Writer
	n int64
}

var errLimit = errors.New("limit reached")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	n, err := l.w.Write(p[:min(int64(len(p)), l.n)])
	l.n -= int64(n)
	return n, err
}

// selfSigned makes an ECDSA P-256 certificate for 127.0.0.1 and localhost
// that is its own CA, and writes it to certFile so clients can trust it.
func selfSigned(certFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "fwdproxy bench origin"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, pemCert, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("writing certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
