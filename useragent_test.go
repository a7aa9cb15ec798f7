package fwdproxy

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// TestUserAgentPassedAsItCame: on every upstream path the origin sees the
// client's User-Agent, and none when the client sent none; the proxy adds
// no "Go-http-client/1.1" of its own.
func TestUserAgentPassedAsItCame(t *testing.T) {
	type seen struct {
		proto string
		ua    []string
	}
	got := make(chan seen, 1)
	record := func(r *http.Request) {
		select {
		case got <- seen{r.Proto, r.Header["User-Agent"]}:
		default:
		}
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		record(r)
		if r.Header.Get("Upgrade") == "echo" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			_ = brw.Flush()
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}
	o := origin(t, handler)
	tlsO, roots := tlsOrigin(t, handler)
	tp := startProxy(t, WithUpstreamRootCAs(roots))
	host, tlsHost := o.Listener.Addr().String(), tlsO.Listener.Addr().String()

	for _, path := range []struct {
		name, proto string
		req         func(ua string) string
		status      int
	}{
		{"own client", "HTTP/1.1", func(ua string) string {
			return "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n" + ua + "\r\n"
		}, 200},
		{"transport HTTP/1.1", "HTTP/1.1", func(ua string) string {
			return "POST http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 2\r\n" + ua + "\r\nhi"
		}, 200},
		{"transport HTTP/2", "HTTP/2.0", func(ua string) string {
			return "GET https://" + tlsHost + "/ HTTP/1.1\r\nHost: " + tlsHost + "\r\n" + ua + "\r\n"
		}, 200},
		{"upgrade", "HTTP/1.1", func(ua string) string {
			return "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: echo\r\n" + ua + "\r\n"
		}, 101},
	} {
		for _, ua := range []string{"", "curl/8.5.0"} {
			name := path.name + "/none"
			field := ""
			if ua != "" {
				name, field = path.name+"/"+ua, "User-Agent: "+ua+"\r\n"
			}
			t.Run(name, func(t *testing.T) {
				c, br := tp.rawConn(t)
				mustWrite(t, c, path.req(field))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != path.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, path.status)
				}
				var s seen
				select {
				case s = <-got:
				case <-time.After(5 * time.Second):
					t.Fatal("the origin saw no request")
				}
				if s.proto != path.proto {
					t.Errorf("origin saw %s, want %s", s.proto, path.proto)
				}
				if ua == "" && len(s.ua) != 0 || ua != "" && (len(s.ua) != 1 || s.ua[0] != ua) {
					t.Errorf("origin saw User-Agent %q, want %q", s.ua, ua)
				}
			})
		}
	}
}
