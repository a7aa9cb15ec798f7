package fwdproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkConnectOverHTTP2 measures the throughput of a CONNECT tunnel on
// an HTTP/2 stream (the proxy mounted on a TLS server with HTTP/2): per
// op, 1 MiB that the client writes, the upstream echoes and the client
// reads back. "tunnel" is a plain CONNECT; "intercepted-untouched" a
// CONNECT that interception takes, peeks at and, the bytes being neither
// TLS nor HTTP, tunnels to the target over the same stream.
func BenchmarkConnectOverHTTP2(b *testing.B) {
	addr := tcpOrigin(b, "tcp", "127.0.0.1:0", echo)
	ca, _ := newTestCA(b)
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"tunnel", nil},
		{"intercepted-untouched", []Option{WithInterception(ca)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := New(append([]Option{WithLogger(testLogger(b)), WithAllowPrivate(), allowAnyConnectPort()}, bc.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(p)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer func() {
				srv.Close()
				_ = p.Shutdown(context.Background())
			}()
			tr := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP2(true)
			defer tr.CloseIdleConnections()
			pr, pw := io.Pipe()
			u, _ := url.Parse(srv.URL)
			req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "https", Host: u.Host}, Host: addr, Header: http.Header{}, Body: pr}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			chunk := make([]byte, 32<<10) // zeros: neither TLS nor HTTP to the sniffer
			const perOp = 1 << 20
			b.SetBytes(perOp)
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 32<<10)
				n, err := io.CopyBuffer(io.Discard, io.LimitReader(resp.Body, int64(b.N)*perOp), buf)
				if err == nil && n != int64(b.N)*perOp {
					err = io.ErrUnexpectedEOF
				}
				done <- err
			}()
			for i := 0; i < b.N*perOp/len(chunk); i++ {
				if _, err := pw.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			pw.Close()
		})
	}
}
