// Command loadgen is the benchmark's Go load client for what wrk cannot do:
//
//	-mode tunnel: c connections each open a tunnel through -proxy to -target
//	              (the origin's raw source) and read for -duration; reports
//	              bytes. -front says how: an HTTP/1.1 CONNECT over plain TCP
//	              (plain) or TLS (tls), SOCKS5 (socks), or c CONNECT streams
//	              on one HTTP/2 connection, cleartext (h2c) or TLS (h2).
//	-mode https:  c workers GET -url over keep-alive HTTP/1.1 with TLS,
//	              tunnelled through -proxy; reports requests and latency.
//	-mode abs:    c workers send absolute-form GET -url requests to -proxy
//	              over keep-alive HTTP/1.1, over plain TCP or, with -front
//	              tls, TLS to the proxy; reports requests and latency.
//	-mode tunnels-idle, conns-idle: hold -n idle tunnels or keep-alive
//	              connections, driven phase by phase over stdin (idle.go).
//
// Without -proxy it connects directly (the "direct" upper bound). It prints
// one JSON line, the same shape as the harness's wrk script.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type result struct {
	Requests     int64   `json:"requests"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	StatusErrors int64   `json:"status_errors"`
	SocketErrors int64   `json:"socket_errors"`
	P50us        int64   `json:"p50_us"`
	P99us        int64   `json:"p99_us"`
	Error        string  `json:"error,omitempty"`
}

// worker is one connection's or worker's tally, merged at the end.
type worker struct {
	requests, bytes, statusErrs, sockErrs int64
	lat                                   []int32 // microseconds
	err                                   error
}

func (w *worker) fail(err error, status bool) {
	if status {
		w.statusErrs++
	} else {
		w.sockErrs++
	}
	if w.err == nil {
		w.err = err
	}
	time.Sleep(10 * time.Millisecond) // no hot loop against a failing proxy
}

func main() {
	mode := flag.String("mode", "tunnel", "tunnel, https, abs, tunnels-idle or conns-idle")
	front := flag.String("front", "plain", "tunnel and abs: how to reach the proxy: plain, tls, socks, h2c or h2")
	h2Frame := flag.Int("h2-max-frame", 0, "h2c and h2: the largest DATA frame the client takes (SETTINGS_MAX_FRAME_SIZE; 0: Go's default, 16 KiB)")
	proxy := flag.String("proxy", "", "proxy host:port (empty: direct)")
	target := flag.String("target", "", "tunnel: host:port of the raw byte source; tunnels-idle: of the echo sink")
	rawURL := flag.String("url", "", "https, conns-idle: the URL to GET")
	caFiles := flag.String("ca", "", "https: comma-separated PEM files of CAs to trust")
	conns := flag.Int("c", 4, "connections (tunnel) or workers (https)")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	n := flag.Int("n", 1000, "idle modes: connections to hold")
	parallel := flag.Int("parallel", 64, "idle modes: connections opened (and checked) at a time")
	warm := flag.Int("warm", 50, "idle modes: connections opened, checked and closed before the first phase")
	flag.Parse()
	if *mode == "tunnels-idle" || *mode == "conns-idle" {
		os.Exit(idleMain(*mode, *proxy, *target, *rawURL, *n, *parallel, *warm))
	}

	roots, err := loadRoots(*caFiles)
	if err != nil {
		log.Fatal("loadgen: ", err)
	}
	var run func(*worker, time.Time)
	switch *mode {
	case "tunnel":
		if *target == "" {
			log.Fatal("loadgen: -target required")
		}
		open := openTunnel
		switch {
		case *proxy == "":
		case *front == "h2" || *front == "h2c":
			open = h2Tunnels(*front, roots, *h2Frame)
		default:
			open = func(proxy, target string) (io.Reader, net.Conn, error) {
				return dialTunnel(*front, roots, proxy, target)
			}
		}
		run = func(w *worker, end time.Time) { tunnel(w, open, *proxy, *target, end) }
	case "abs":
		run = func(w *worker, end time.Time) { absLoop(w, *front, roots, *proxy, *rawURL, end) }
	case "https":
		client, err := newClient(*proxy, *caFiles, *conns)
		if err != nil {
			log.Fatal("loadgen: ", err)
		}
		run = func(w *worker, end time.Time) { getLoop(w, client, *rawURL, end) }
	default:
		log.Fatalf("loadgen: unknown -mode %q", *mode)
	}

	workers := make([]worker, *conns)
	start := time.Now()
	end := start.Add(*duration)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { run(&workers[i], end) })
	}
	wg.Wait()
	res := result{Seconds: time.Since(start).Seconds()}
	if *mode == "tunnel" {
		res.Seconds = duration.Seconds() // reads stop at the deadline
	}
	var lat []int32
	for _, w := range workers {
		res.Requests += w.requests
		res.Bytes += w.bytes
		res.StatusErrors += w.statusErrs
		res.SocketErrors += w.sockErrs
		lat = append(lat, w.lat...)
		if w.err != nil && res.Error == "" {
			res.Error = w.err.Error()
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50us = int64(lat[len(lat)*50/100])
		res.P99us = int64(lat[len(lat)*99/100])
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		log.Fatal(err)
	}
}

// tunnel keeps one connection reading until end, reconnecting after a failure.
func tunnel(w *worker, open func(proxy, target string) (io.Reader, net.Conn, error), proxy, target string, end time.Time) {
	buf := make([]byte, 256<<10)
	for time.Now().Before(end) {
		r, c, err := open(proxy, target)
		if err != nil {
			w.fail(err, false)
			continue
		}
		c.SetReadDeadline(end)
		for {
			n, err := r.Read(buf)
			w.bytes += int64(n)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					w.fail(fmt.Errorf("tunnel read: %w", err), false)
				}
				break
			}
		}
		c.Close()
	}
}

// openTunnel connects to target, through proxy with CONNECT when proxy is set.
func openTunnel(proxy, target string) (io.Reader, net.Conn, error) {
	if proxy == "" {
		c, err := net.Dial("tcp", target)
		return c, c, err
	}
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		return nil, nil, err
	}
	return connectOn(c, target)
}

// connectOn sends CONNECT target on c, a connection to a proxy, and reads
// the answer; the reader returned holds what came after it. c is closed
// on failure.
func connectOn(c net.Conn, target string) (io.Reader, net.Conn, error) {
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target, Header: http.Header{}}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	return br, c, nil
}

// loadRoots reads the comma-separated PEM files of CAs to trust.
func loadRoots(caFiles string) (*x509.CertPool, error) {
	roots := x509.NewCertPool()
	for f := range strings.SplitSeq(caFiles, ",") {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no certificates", f)
		}
	}
	return roots, nil
}

func newClient(proxy, caFiles string, conns int) (*http.Client, error) {
	roots, err := loadRoots(caFiles)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots}, // HTTP/1.1: one tunnel per worker
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
	}
	if proxy != "" {
		tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: proxy})
	}
	return &http.Client{Transport: tr}, nil
}

func getLoop(w *worker, client *http.Client, rawURL string, end time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), end.Add(10*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		w.fail(err, false)
		return
	}
	for time.Now().Before(end) {
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			w.fail(err, false)
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			w.fail(err, false)
		case resp.StatusCode != http.StatusOK:
			w.fail(errors.New(resp.Status), true)
		default:
			w.requests++
			w.bytes += n
			w.lat = append(w.lat, int32(time.Since(t0).Microseconds()))
		}
	}
}
