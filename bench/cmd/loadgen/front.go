package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sync"
	"time"
)

// The proxy's front ends other than plain HTTP/1.1: TLS to the proxy,
// SOCKS5 and HTTP/2 (cleartext or TLS).

// dialProxy connects to the proxy over front: plain TCP, or TLS (HTTP/1.1
// by ALPN) trusting roots.
func dialProxy(front string, roots *x509.CertPool, proxy string) (net.Conn, error) {
	c, err := net.Dial("tcp", proxy)
	if err != nil || front != "tls" {
		return c, err
	}
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// dialTunnel opens a tunnel to target through proxy over front: an
// HTTP/1.1 CONNECT over plain TCP or TLS, or a SOCKS5 CONNECT.
func dialTunnel(front string, roots *x509.CertPool, proxy, target string) (io.Reader, net.Conn, error) {
	if front == "socks" {
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			return nil, nil, err
		}
		if err := socksConnect(c, target); err != nil {
			c.Close()
			return nil, nil, err
		}
		return c, c, nil
	}
	c, err := dialProxy(front, roots, proxy)
	if err != nil {
		return nil, nil, err
	}
	return connectOn(c, target) // main.go
}

// socksConnect runs a SOCKS5 CONNECT to target (an IP address and port)
// without authentication on c.
func socksConnect(c net.Conn, target string) error {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return err
	}
	a := ap.Addr().As4()
	msg := []byte{5, 1, 0, 5, 1, 0, 1, a[0], a[1], a[2], a[3], byte(ap.Port() >> 8), byte(ap.Port())}
	if _, err := c.Write(msg); err != nil { // greeting and request at once
		return err
	}
	var reply [2 + 10]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return fmt.Errorf("SOCKS5: %w", err)
	}
	if reply[1] != 0 || reply[3] != 0 {
		return fmt.Errorf("SOCKS5: method %#x, reply %#x", reply[1], reply[3])
	}
	return nil
}

// h2Tunnels returns an opener of CONNECT streams that all share one HTTP/2
// connection to the proxy: cleartext with prior knowledge (h2c) or TLS. The
// client takes DATA frames of up to maxFrame bytes (0: Go's default).
func h2Tunnels(front string, roots *x509.CertPool, maxFrame int) func(proxy, target string) (io.Reader, net.Conn, error) {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
		Protocols:       new(http.Protocols),
		MaxConnsPerHost: 1, // every stream on the one connection
		HTTP2:           &http.HTTP2Config{MaxReadFrameSize: maxFrame},
	}
	scheme := "https"
	if front == "h2c" {
		tr.Protocols.SetUnencryptedHTTP2(true)
		scheme = "http"
	} else {
		tr.Protocols.SetHTTP2(true)
	}
	return func(proxy, target string) (io.Reader, net.Conn, error) {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		req := (&http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: scheme, Host: proxy}, Host: target,
			Header: http.Header{}, Body: pr}).WithContext(ctx)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			cancel()
			return nil, nil, fmt.Errorf("CONNECT: %s", resp.Status)
		}
		s := &stream{body: resp.Body, pw: pw, cancel: cancel}
		return s, s, nil
	}
}

// stream is a CONNECT stream as much of a net.Conn as tunnel uses: reads,
// a read deadline and Close.
type stream struct {
	net.Conn // nil: the methods tunnel does not call
	body     io.ReadCloser
	pw       *io.PipeWriter
	cancel   context.CancelFunc
	once     sync.Once
	timer    *time.Timer
	expired  bool
	mu       sync.Mutex
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil {
		s.mu.Lock()
		if s.expired {
			err = os.ErrDeadlineExceeded
		}
		s.mu.Unlock()
	}
	return n, err
}

// SetReadDeadline ends the stream at t: its reads then fail with
// os.ErrDeadlineExceeded. Closing the response body is what stops a read
// (net/http's client watches the request's context only once the request
// body, here still open, is sent).
func (s *stream) SetReadDeadline(t time.Time) error {
	s.timer = time.AfterFunc(time.Until(t), func() {
		s.mu.Lock()
		s.expired = true
		s.mu.Unlock()
		s.Close()
	})
	return nil
}

func (s *stream) Close() error {
	s.once.Do(func() {
		s.body.Close()
		s.pw.Close()
		s.cancel()
	})
	return nil
}

// absLoop sends absolute-form GETs of rawURL to proxy over front (plain or
// tls), keep-alive, until end, reconnecting after a failure; without a
// proxy, origin-form to the origin.
func absLoop(w *worker, front string, roots *x509.CertPool, proxy, rawURL string, end time.Time) {
	u, err := url.Parse(rawURL)
	if err != nil {
		w.fail(err, false)
		return
	}
	target, reqLine := proxy, "GET "+rawURL+" HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"
	if proxy == "" {
		target, front, reqLine = u.Host, "plain", "GET "+u.RequestURI()+" HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"
		if u.Scheme == "https" {
			front = "tls"
		}
	}
	req := []byte(reqLine)
	for time.Now().Before(end) {
		c, err := dialProxy(front, roots, target)
		if err != nil {
			w.fail(err, false)
			continue
		}
		br := bufio.NewReaderSize(c, 32<<10)
		for time.Now().Before(end) {
			t0 := time.Now()
			if _, err := c.Write(req); err != nil {
				w.fail(err, false)
				break
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				w.fail(err, false)
				break
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				w.fail(err, false)
				break
			}
			if resp.StatusCode != http.StatusOK {
				w.fail(errors.New(resp.Status), true)
				break
			}
			w.requests++
			w.bytes += n
			w.lat = append(w.lat, int32(time.Since(t0).Microseconds()))
			if resp.Close {
				break
			}
		}
		c.Close()
	}
}
