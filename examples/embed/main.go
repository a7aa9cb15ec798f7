// Command embed shows a service that serves its own endpoints and a
// forward proxy on one port: proxy requests (absolute-form and CONNECT) go
// to the Proxy, everything else to the service's mux through WithFallback.
//
//	go run ./examples/embed
//	curl http://127.0.0.1:8081/healthz
//	curl -x http://127.0.0.1:8081 http://example.com/
package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})

	p, err := fwdproxy.New(fwdproxy.WithFallback(mux))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8081", Handler: p, ReadHeaderTimeout: 10 * time.Second}

	go func() {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // requests in flight finish
		_ = p.Shutdown(sctx)   // then the hijacked tunnels, which srv does not track
	}()
	log.Printf("serving /healthz and a forward proxy on %s", srv.Addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
