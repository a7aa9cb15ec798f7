// Command embed shows a service that serves its own endpoints and a
// forward proxy on one port: proxy requests (absolute-form and CONNECT) go
// to the Proxy, everything else to the service's mux through WithFallback.
//
//	go run ./examples/embed
//	curl http://127.0.0.1:8081/healthz
//	curl -x http://127.0.0.1:8081 http://example.com/
//
// On SIGINT or SIGTERM it stops taking connections, lets the requests in
// flight finish (10 s at most), then closes the tunnels still open, and only
// then exits: the order to copy when a Proxy runs in a server of your own.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// shutdownGrace is how long requests in flight get to finish after a signal.
const shutdownGrace = 10 * time.Second

func main() {
	addr := flag.String("listen", "127.0.0.1:8081", "address to listen on (host:port)")
	allowPrivate := flag.Bool("allow-private", false, "allow proxy requests to private and loopback addresses")
	flag.Parse()
	if err := run(*addr, *allowPrivate); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, allowPrivate bool) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})

	opts := []fwdproxy.Option{fwdproxy.WithFallback(mux)}
	if allowPrivate {
		opts = append(opts, fwdproxy.WithAllowPrivate())
	}
	p, err := fwdproxy.New(opts...)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Printf("serving /healthz and a forward proxy on %s", l.Addr())
	select {
	case err := <-served:
		return err // the listener failed; nothing to drain
	case <-ctx.Done():
	}
	stop() // a second signal kills at once

	// Serve returns as soon as Shutdown begins; the requests in flight are
	// waited for here, not there. Returning from main before Shutdown is
	// done would cut them.
	log.Printf("shutting down: requests in flight get %v", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx) // requests in flight finish
	if perr := p.Shutdown(sctx); err == nil {
		err = perr // then the hijacked tunnels, which srv does not track
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	log.Print("stopped")
	return nil
}
