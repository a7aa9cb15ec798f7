// Package h1 is the proxy's own HTTP/1.1 wire code, on both sides.
//
// Server is the client-facing loop: it serves the requests a forward proxy
// mostly sees (bodyless absolute-form requests and CONNECT) on the
// connection's own goroutine, through a ResponseWriter of its own, and hands
// every other connection, with the bytes already read, to an http.Server.
// Transport is the upstream side: an http.RoundTripper for bodyless
// requests to plain-http upstreams, with its own connection pool, that
// splices Content-Length bodies to the client. Both parse the common heads
// with short parsers (parse.go) and leave the rest to net/http's.
//
// The package knows nothing of the proxy: the Server calls an http.Handler
// (only through ServeHTTP), the Transport dials through a function, and
// each reads its limits from a settings struct through a function, once
// per connection or request, so that a new value takes effect without a
// restart.
package h1
