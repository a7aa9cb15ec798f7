package fwdproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/h1"
	"github.com/fwdproxy/fwdproxy/internal/netx"
)

// writeResponse sends an upstream (or hook-made) response to the client,
// streaming its body and passing trailers on.
func (p *Proxy) writeResponse(c *config, w http.ResponseWriter, r *http.Request, resp *http.Response) {
	var h http.Header
	via := c.via.forProto(resp.ProtoMajor, resp.ProtoMinor)
	if a, ok := w.(h1.HeaderAdopter); ok && a.AdoptHeader(resp.Header) {
		h = resp.Header // Serve's loop: the upstream's map becomes the client's
		filterHeaderInPlace(h, via)
	} else {
		h = w.Header()
		filterHeader(h, resp.Header, via)
	}
	if len(c.responseHooks) > 0 || len(c.requestHooks) > 0 {
		// A hook may have replaced the body; make the header agree.
		if resp.ContentLength >= 0 {
			h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
		} else {
			delete(h, "Content-Length")
		}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body == http.NoBody {
		return
	}
	stream := resp.ContentLength < 0 || isEventStream(resp.Header)
	if stream {
		// Headers go out at once: the first event may be a while coming.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	watch := watchResponseBody(c.bodyIdleTimeout, resp.Body) // bodyidle.go; nil when the body is all in memory
	n, readErr, writeErr := copyBody(w, resp.Body, stream, watch)
	watch.Stop()
	p.stats.respBytes.Add(uint64(n))
	if writeErr != nil {
		p.logClientGone(r, writeErr)
		return
	}
	if readErr != nil {
		// The status line is gone; the only honest signal left is to cut the
		// connection so the client sees a truncated body, not a short one.
		if watch.hasFired() {
			target := r.URL.Host
			p.logFailure(r, newError(ErrUpstreamTimeout, target, "upstream "+target+" body stalled: no byte moved for "+
				c.bodyIdleTimeout.String()+"; client connection cut"+bodyIdleHint, readErr), "upstream body stalled mid-stream")
		} else if m := requestPolicy(resp); m != nil && errors.Is(readErr, errQuotaReached) {
			p.logCut(r.Context(), m, r.URL.Host, r.RemoteAddr) // userpolicy.go
			if rs := reqStateFrom(r.Context()); rs != nil {
				rs.errKind = "quota_bytes" // the request's record says why it was cut
			}
		} else {
			p.logFailure(r, asError(r.URL.Host, readErr), "upstream body failed mid-stream")
		}
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && len(ct[0]) >= 17 && strings.EqualFold(ct[0][:17], "text/event-stream")
}

// relayUpgrade completes a protocol switch (RFC 9110 §7.8): the 101 goes to
// the client, then bytes are relayed both ways as in a tunnel.
func (p *Proxy) relayUpgrade(c *config, w http.ResponseWriter, r *http.Request, out *http.Request, resp *http.Response) {
	target := r.URL.Host
	want, got := upgradeType(out.Header), upgradeType(resp.Header)
	if want == "" || !strings.EqualFold(want, got) {
		p.fail(c, w, r, newError(ErrUpstream, target, fmt.Sprintf("upstream %s switched to protocol %q, not the requested %q", target, got, want), nil))
		return
	}
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		p.fail(c, w, r, newError(ErrUpstream, target, "upstream "+target+" switched protocols on a connection that cannot be relayed", nil))
		return
	}
	if !p.openTunnel(c) { // connect.go
		p.fail(c, w, r, newError(ErrUnavailable, target, tunnelsReason, nil))
		return
	}
	defer p.closeTunnel()
	if r.ProtoMajor >= 2 {
		p.relayExtendedConnect(c, w, r, out, resp, upConn)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.fail(c, w, r, newError(ErrMalformed, target, "protocol upgrade needs an HTTP/1.1 client connection", err))
		return
	}
	h := make(http.Header, len(resp.Header)+2)
	filterHeader(h, resp.Header, c.via.forProto(resp.ProtoMajor, resp.ProtoMinor))
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{got}
	_ = client.SetDeadline(time.Time{})
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		client.Close()
		return
	}
	p.runTunnel(c, r.WithContext(out.Context()), withReadAhead(client, brw.Reader), upConn, false) // out's context: the user, for Reload
}

// relayExtendedConnect completes relayUpgrade for an extended CONNECT
// (RFC 8441 §5, h2.go), whose client is an HTTP/2 stream: the origin's
// 101 is checked as a WebSocket client checks it (RFC 6455 §4.1), the
// client gets 200 with the origin's header, and its stream is relayed to
// upConn.
func (p *Proxy) relayExtendedConnect(c *config, w http.ResponseWriter, r, out *http.Request, resp *http.Response, upConn io.ReadWriteCloser) {
	target := r.URL.Host
	if key := out.Header.Get("Sec-Websocket-Key"); key != "" && resp.Header.Get("Sec-Websocket-Accept") != websocketAccept(key) {
		upConn.Close()
		p.fail(c, w, r, newError(ErrUpstream, target, "upstream "+target+" answered the WebSocket handshake with a wrong Sec-WebSocket-Accept", nil))
		return
	}
	h := w.Header()
	filterHeader(h, resp.Header, c.via.forProto(resp.ProtoMajor, resp.ProtoMinor))
	delete(h, "Sec-Websocket-Accept")
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		upConn.Close()
		return
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	client := netx.NewStreamConn(r.Body, w, local, r.RemoteAddr)
	p.runTunnel(c, r.WithContext(out.Context()), client, upConn, false) // out's context: the user, for Reload
}

// roundTripFailed answers a request whose round trip failed with err,
// putting the failure down to the side that caused it: the client's body
// (stalled past the body idle timeout, over WithMaxRequestBodyBytes,
// malformed) or the upstream. A client that went away gets no answer.
func (p *Proxy) roundTripFailed(c *config, w http.ResponseWriter, r *http.Request, body *clientBody, lb *limitedBody, err error) {
	target := r.URL.Host
	if body != nil && body.w.hasFired() {
		// Checked first: the server cancels the request's context
		// when the interrupted read fails.
		w.Header()["Connection"] = []string{"close"} // the rest of the body is still unread
		p.fail(c, w, r, newError(ErrClientTimeout, target, "the request body stalled: no byte from the client for "+
			c.bodyIdleTimeout.String()+bodyIdleHint, nil))
		return
	}
	if lb != nil && lb.over.Load() {
		p.fail(c, w, r, newError(ErrTooLarge, target, "request body is over the limit of "+
			strconv.FormatInt(c.maxBodyBytes, 10)+" bytes", nil))
		return
	}
	if r.Context().Err() != nil {
		p.logClientGone(r, err)
		return
	}
	if bodyErr := body.failed(); bodyErr != nil {
		// The client's fault, not the upstream's: a malformed
		// chunked body, or one cut short.
		p.fail(c, w, r, newError(ErrMalformed, target, "reading the request body failed: "+bodyErr.Error(), bodyErr))
		return
	}
	p.fail(c, w, r, asError(target, err))
}

// fail answers the client with e's status and reason and logs it.
func (p *Proxy) fail(c *config, w http.ResponseWriter, r *http.Request, e *Error) {
	p.noteFailure(r, e) // telemetry.go: Stats, span error type, denials
	if sw := socksWriterOf(w); sw != nil {
		sw.failure = e // socks.go: the cause picks the reply code
	}
	p.logFailure(r, e, "request refused")
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Via"] = []string{c.via.forProto(r.ProtoMajor, r.ProtoMinor)}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, e.Reason+"\n")
}
