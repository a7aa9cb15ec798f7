package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestURLHostPath(t *testing.T) {
	for _, tc := range []struct{ in, host, path string }{
		{"http://127.0.0.1:8080/small", "127.0.0.1:8080", "/small"},
		{"http://h", "h", "/"},
		{"http://h/a/b?c", "h", "/a/b?c"},
	} {
		got, err := urlHostPath(tc.in)
		if err != nil || got != [2]string{tc.host, tc.path} {
			t.Errorf("urlHostPath(%q) = %q, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"https://h/", "http:///x", "h/x"} {
		if _, err := urlHostPath(bad); err == nil {
			t.Errorf("urlHostPath(%q): no error", bad)
		}
	}
}

// fakeProxy serves connections with handle until the test ends.
func fakeProxy(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// connectEcho answers CONNECT with 200 (or 503 for host "refuse:1"), then
// echoes, as a proxy in front of the origin's sink would.
func connectEcho(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect || req.Host == "refuse:1" {
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
		return
	}
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	io.Copy(c, br)
}

// keepAlive answers every absolute-form GET with a 100-byte body.
func keepAlive(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !req.URL.IsAbs() {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			continue
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("x", 100))
	}
}

func TestIdleTunnels(t *testing.T) {
	proxy := fakeProxy(t, connectEcho)
	r := &idleRun{tunnels: true, proxy: proxy, target: "sink:1", parallel: 8}
	held, rep := r.openAll(40)
	defer closeAll(held)
	if rep.OK != 40 || rep.Refused != 0 || rep.Errors != 0 || len(held) != 40 {
		t.Fatalf("open: %+v, %d held", rep, len(held))
	}
	if rep := r.checkAll(held); rep.OK != 40 || rep.N != 40 || rep.Errors != 0 {
		t.Errorf("check: %+v", rep)
	}

	r.target = "refuse:1"
	held2, rep := r.openAll(5)
	if rep.OK != 0 || rep.Refused != 5 || len(held2) != 0 || !strings.Contains(rep.Error, "503") {
		t.Errorf("refused: %+v, %d held", rep, len(held2))
	}
}

func TestIdleConns(t *testing.T) {
	proxy := fakeProxy(t, keepAlive)
	r := &idleRun{proxy: proxy, url: "http://origin:1/small", host: "origin:1", path: "/small", parallel: 8}
	held, rep := r.openAll(30)
	defer closeAll(held)
	if rep.OK != 30 || rep.Closed != 0 || rep.Errors != 0 {
		t.Fatalf("open: %+v", rep)
	}
	if rep := r.checkAll(held); rep.OK != 30 {
		t.Errorf("check: %+v", rep)
	}
	// A proxy that closes after each response fails the check.
	closer := fakeProxy(t, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		}
	})
	r.proxy = closer
	held2, rep := r.openAll(4)
	defer closeAll(held2)
	if rep.OK != 4 || rep.Closed != 4 {
		t.Fatalf("open through a closing proxy: %+v", rep)
	}
	if rep := r.checkAll(held2); rep.OK != 0 || rep.Errors != 4 {
		t.Errorf("check through a closing proxy: %+v", rep)
	}
}
