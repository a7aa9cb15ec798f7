// Command loadgen is the benchmark's Go load client for what wrk cannot do:
//
//	-mode tunnel: c connections each CONNECT through -proxy to -target (the
//	              origin's raw source) and read for -duration; reports bytes.
//	-mode https:  c workers GET -url over keep-alive HTTP/1.1 with TLS,
//	              tunnelled through -proxy; reports requests and latency.
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
	mode := flag.String("mode", "tunnel", "tunnel, https, tunnels-idle or conns-idle")
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

	var run func(*worker, time.Time)
	switch *mode {
	case "tunnel":
		if *target == "" {
			log.Fatal("loadgen: -target required")
		}
		run = func(w *worker, end time.Time) { tunnel(w, *proxy, *target, end) }
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
func tunnel(w *worker, proxy, target string, end time.Time) {
	buf := make([]byte, 256<<10)
	for time.Now().Before(end) {
		r, c, err := openTunnel(proxy, target)
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

func newClient(proxy, caFiles string, conns int) (*http.Client, error) {
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
