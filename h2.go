package fwdproxy

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// HTTP/2 to the proxy: the requests net/http's server takes over TLS
// (ServeTLS, by ALPN) or with prior knowledge (WithCleartextHTTP2), beyond
// the CONNECT of RFC 9113 §8.5, which serveConnect takes as it takes an
// HTTP/1.1 one (acceptConnect returns the stream):
//
//   - Extended CONNECT (RFC 8441): a CONNECT with :protocol websocket,
//     whose :scheme, :authority and :path name a WebSocket on the origin.
//     It is relayed as the HTTP/1.1 Upgrade request a WebSocket client
//     sends (RFC 6455 §4.1), through forward like any such request; the
//     101 is answered 200 and the stream carries the WebSocket's frames
//     (relayUpgrade).
//   - Absolute-form requests: a request whose :authority names another
//     host than the proxy is for that host, as an absolute-form request is
//     over HTTP/1.1, and is forwarded like one.
//
// net/http gives a handler no :scheme: Request.URL holds the :path only,
// and Request.TLS describes the connection (over TLS every request has it,
// whatever its :scheme). So both are taken to be for http, or for https
// when the :authority's port is 443 (h2Scheme): browsers send their https
// requests, and wss WebSockets, through a CONNECT tunnel instead.
//
// Extended CONNECT needs the server to send SETTINGS_ENABLE_CONNECT_PROTOCOL
// (RFC 8441 §3). Go 1.24 to 1.26's net/http server, and x/net/http2's,
// sends it, and lets a :protocol through, only when the process runs with
// GODEBUG=http2xconnect=1 (read from the environment at start: neither a
// //go:debug line nor any field of http.Server or http.HTTP2Config turns it
// on; Go issue 53208 accepted HTTP2Config.EnableConnectProtocol, not yet in
// a release). Without it a client never sends one, and one that does gets
// a stream error from net/http.

// extendedConnect reports whether r is an extended CONNECT (RFC 8441): a
// CONNECT over HTTP/2 with a :protocol, which net/http passes on as a
// header field of that name.
func extendedConnect(r *http.Request) bool {
	return r.ProtoMajor >= 2 && r.Header[":protocol"] != nil
}

// serveExtendedConnect serves an extended CONNECT (RFC 8441): a WebSocket
// to r's :authority, over http (https to port 443: h2Scheme), relayed by
// forward as an HTTP/1.1 Upgrade.
func (p *Proxy) serveExtendedConnect(c *config, w http.ResponseWriter, r *http.Request) {
	up, e := webSocketUpgrade(r, h2Scheme(r.Host), r.Host)
	if e != nil {
		p.fail(c, w, r, e)
		return
	}
	p.forward(c, w, up)
}

// webSocketUpgrade turns the extended CONNECT r into the HTTP/1.1 request
// that opens its WebSocket on host over scheme (RFC 8441 §5): a GET of
// r's path with Upgrade: websocket and a fresh Sec-WebSocket-Key, which
// relayUpgrade checks the origin's answer against. Its body is r's stream,
// the WebSocket's bytes for after the switch, and its ContentLength 0, so
// that none of them is sent with the request.
func webSocketUpgrade(r *http.Request, scheme, host string) (*http.Request, *Error) {
	if proto := r.Header.Get(":protocol"); !strings.EqualFold(proto, "websocket") {
		return nil, newError(ErrMalformed, host, "extended CONNECT for protocol "+strconv.Quote(proto)+
			" is not supported: only websocket (RFC 8441)", nil)
	}
	if r.URL.Path == "" {
		return nil, newError(ErrMalformed, host, "extended CONNECT without a :path", nil)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	up := new(http.Request)
	*up = *r
	u := *r.URL
	u.Scheme, u.Host = scheme, host
	up.URL = &u
	up.Method = http.MethodGet
	up.RequestURI = ""
	up.ContentLength = 0
	up.Header = r.Header.Clone()
	delete(up.Header, ":protocol")
	up.Header["Connection"] = []string{"Upgrade"}
	up.Header["Upgrade"] = []string{"websocket"}
	up.Header["Sec-Websocket-Key"] = []string{base64.StdEncoding.EncodeToString(key[:])}
	if up.Header["Sec-Websocket-Version"] == nil {
		up.Header["Sec-Websocket-Version"] = []string{"13"}
	}
	return up, nil
}

// websocketAccept is the Sec-WebSocket-Accept that answers key (RFC 6455
// §4.2.2).
func websocketAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// proxiedOverH2 reports whether r, an HTTP/2 request that is not a
// CONNECT, is a proxy request: its :authority names a host other than the
// proxy, which a client reaches by the name it gave in TLS's SNI or by the
// address it connected to. Requests for the proxy itself go to the
// fallback handler, as origin-form requests do over HTTP/1.1.
func proxiedOverH2(r *http.Request) bool {
	if r.Host == "" {
		return false
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if tc := tlsConnFrom(r.Context()); tc != nil {
		if sni := tc.ConnectionState().ServerName; sni != "" && strings.EqualFold(strings.TrimSuffix(host, "."), sni) {
			return false
		}
	}
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && local.String() == r.Host {
		return false
	}
	return true
}

// absoluteH2 returns the HTTP/2 proxy request r with its URL made
// absolute, as forward takes it: :authority as the host, the scheme by
// h2Scheme.
func absoluteH2(r *http.Request) *http.Request {
	u := *r.URL
	u.Host = r.Host
	u.Scheme = h2Scheme(r.Host)
	out := new(http.Request)
	*out = *r
	out.URL = &u
	return out
}

// h2Scheme is the scheme of an HTTP/2 request for authority, which
// net/http does not keep: https when its port is 443, else http.
func h2Scheme(authority string) string {
	if _, port, err := net.SplitHostPort(authority); err == nil && port == "443" {
		return "https"
	}
	return "http"
}
