package fwdproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
)

// The header rules of the request sent upstream and of the response sent
// back (RFC 9110 §7.6): what is refused, what is dropped as hop-by-hop, and
// the Via field the proxy adds; and the Max-Forwards answer to TRACE and
// OPTIONS. forward (proxy.go) applies them in this order.

// checkLookAlikes refuses a request carrying a look-alike of a framing or
// routing field (httpx.FramingLookAlike): "Transfer_Encoding: chunked"
// would be forwarded next to the proxy's own framing, and an origin that
// reads '_' as '-' would frame the body by it.
func checkLookAlikes(h http.Header, target string) *Error {
	for k := range h {
		if field, ok := httpx.FramingLookAlike(k); ok {
			return newError(ErrMalformed, target, "request field "+strconv.Quote(k)+
				" looks like "+field+" to servers that read '_' as '-'; refused", nil)
		}
	}
	return nil
}

// seenBefore reports whether a Via field lists this proxy's pseudonym (c's)
// as a recipient: the request has come around in a loop.
func seenBefore(c *config, via []string) bool {
	found := false
	httpx.Tokens(via, func(entry string) bool {
		// entry: received-protocol SP received-by [SP comment]
		if i := strings.IndexAny(entry, " \t"); i >= 0 {
			by := strings.TrimLeft(entry[i+1:], " \t")
			if j := strings.IndexAny(by, " \t"); j >= 0 {
				by = by[:j]
			}
			found = strings.EqualFold(by, c.pseudonym)
		}
		return !found
	})
	return found
}

// outboundRequest derives the request sent upstream from the client's. The
// copy is shallow: the body, trailer map and context are shared, so the
// upstream request is cancelled when the client goes away.
func outboundRequest(ctx context.Context, c *config, r *http.Request) *http.Request {
	out := r.WithContext(ctx)
	out.RequestURI = ""
	out.Close = false
	out.Header = outboundHeader(c, r)
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		out.Body = http.NoBody
		return out
	}
	if c.maxBodyBytes > 0 && r.ContentLength < 0 {
		out.Body = &limitedBody{ReadCloser: r.Body, left: c.maxBodyBytes}
	}
	return out
}

// outboundHeader builds the header of the request sent upstream from the
// client's header (RFC 9110 §7.6), with c's Via.
func outboundHeader(c *config, r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+1)
	filterHeader(h, r.Header, c.via.forProto(r.ProtoMajor, r.ProtoMinor))
	if up := upgradeType(r.Header); up != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{up}
	}
	// TE is hop-by-hop, but "trailers" is a promise the proxy can keep, and
	// gRPC-style origins refuse requests without it.
	if httpx.HasToken(r.Header["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	return h
}

// maxForwards applies Max-Forwards to TRACE and OPTIONS (RFC 9110 §7.6.2):
// at 0 the proxy answers itself, otherwise the value is decremented.
func maxForwards(c *config, w http.ResponseWriter, r *http.Request, out *http.Request) (answered bool) {
	mf, ok := r.Header["Max-Forwards"]
	if !ok || len(mf) == 0 {
		return false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(mf[0]), 10, 31)
	if err != nil {
		return false // an invalid value is passed on untouched
	}
	if n > 0 {
		out.Header["Max-Forwards"] = []string{strconv.FormatUint(n-1, 10)}
		return false
	}
	h := w.Header()
	h["Via"] = []string{c.via.forProto(r.ProtoMajor, r.ProtoMinor)}
	if r.Method == http.MethodOptions {
		h["Allow"] = []string{"GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT"}
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
		return true
	}
	// TRACE: echo the request as received, minus credentials (RFC 9110 §9.3.8).
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
	echo := r.Header.Clone()
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
		delete(echo, k)
	}
	_ = echo.Write(&b)
	b.WriteString("\r\n")
	h["Content-Type"] = []string{"message/http"}
	h["Content-Length"] = []string{strconv.Itoa(b.Len())}
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, b.String())
	return true
}

// dropped reports whether filterHeader drops the field k: a hop-by-hop
// field, or a look-alike of a framing or routing field, which a recipient
// reading '_' as '-' would take for the real one. (Requests carrying a
// look-alike are refused before this; responses are cleaned here.)
func dropped(k string) bool {
	if httpx.IsHopByHop(k) {
		return true
	}
	_, lookAlike := httpx.FramingLookAlike(k)
	return lookAlike
}

// filterHeader copies the end-to-end fields of src into dst, dropping the
// hop-by-hop fields, look-alikes of framing and routing fields, and every
// field named in src's Connection header, then
// appends via to the Via field (to none if Connection names Via). Values
// are shared with src, not copied; field order within a name is kept.
func filterHeader(dst, src http.Header, via string) {
	for k, vv := range src {
		if !dropped(k) {
			dst[k] = vv
		}
	}
	dropListed(dst, src["Connection"])
	setVia(dst, priorVia(src["Via"], src["Connection"]), via)
}

// filterHeaderInPlace is filterHeader with the header its own source.
func filterHeaderInPlace(h http.Header, via string) {
	conn, prior := h["Connection"], h["Via"]
	for k := range h {
		if dropped(k) {
			delete(h, k)
		}
	}
	dropListed(h, conn)
	setVia(h, priorVia(prior, conn), via)
}

// dropListed deletes from h the fields that the Connection values conn
// name, other than the close and keep-alive options.
func dropListed(h http.Header, conn []string) {
	if len(conn) == 0 {
		return
	}
	httpx.Tokens(conn, func(tok string) bool {
		if !strings.EqualFold(tok, "close") && !strings.EqualFold(tok, "keep-alive") {
			delete(h, textproto.CanonicalMIMEHeaderKey(tok))
		}
		return true
	})
}

// priorVia returns the Via values to keep: none when the Connection
// values conn name Via, which makes them hop-by-hop (RFC 9110 §7.6.1).
func priorVia(prior, conn []string) []string {
	if len(prior) > 0 && httpx.HasToken(conn, "via") {
		return nil
	}
	return prior
}

// setVia sets h's Via to the prior values with via appended.
func setVia(h http.Header, prior []string, via string) {
	vv := make([]string, len(prior)+1)
	copy(vv, prior)
	vv[len(prior)] = via
	h["Via"] = vv
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !httpx.HasToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// viaValues holds the Via field values a Proxy adds, prebuilt per protocol
// version so the request path does not format them.
type viaValues struct {
	v10, v11, v2 string
}

func newViaValues(pseudonym string) viaValues {
	return viaValues{v10: "1.0 " + pseudonym, v11: "1.1 " + pseudonym, v2: "2 " + pseudonym}
}

func (v *viaValues) forProto(major, minor int) string {
	switch {
	case major == 2:
		return v.v2
	case major == 1 && minor == 0:
		return v.v10
	}
	return v.v11
}
