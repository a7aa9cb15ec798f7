package h1

import (
	"bufio"
	"bytes"
	"net/http"

	"github.com/fwdproxy/fwdproxy/internal/httpx"
	"golang.org/x/net/http/httpguts"
)

// parseRequest parses the header block head, all buffered in br, from br
// and returns the request if the loop takes it: a bodyless absolute-form
// request or a CONNECT, HTTP/1.x, with a valid Host field where one is
// required (net/http's rules) and nothing that needs net/http's machinery.
// Otherwise it returns nil.
func parseRequest(br *bufio.Reader, head []byte) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil || req.ProtoMajor != 1 {
		return nil
	}
	if req.Method != http.MethodConnect && !req.URL.IsAbs() {
		return nil // origin-form: the fallback handler may want anything
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return nil
	}
	h := req.Header
	for _, k := range [...]string{"Expect", "Upgrade", "Transfer-Encoding", "Http2-Settings"} {
		if _, ok := h[k]; ok {
			return nil
		}
	}
	// http.ReadRequest drops the Host field; the checks net/http's server
	// makes of it are made on the header block.
	hosts, host, folded := hostFields(head)
	switch {
	case folded:
		return nil // obsolete line folding: net/http joins the lines, and judges the result
	case hosts > 1:
		return nil
	case hosts == 1 && !httpguts.ValidHostHeader(host): // net/http server's own check
		return nil
	case hosts == 0 && req.ProtoMinor >= 1 && req.Method != http.MethodConnect:
		return nil
	}
	if !ValidRequest(req) {
		return nil
	}
	return req
}

// hostFields counts the Host fields of a header block and returns the
// value of the last one; folded reports a continuation line (one that
// starts with a space or tab), which makes the count unreliable.
func hostFields(head []byte) (n int, value string, folded bool) {
	i := bytes.IndexByte(head, '\n') + 1 // past the request line
	for i < len(head) {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			break
		}
		line := head[i : i+j]
		i += j + 1
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			folded = true
		}
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			n++
			value = string(bytes.Trim(line[5:], " \t\r"))
		}
	}
	return n, value, folded
}

// ValidRequest reports whether out has a method that is a token and
// header fields whose names are tokens and whose values hold no control
// character but tab (net/http's rules, from httpguts): what a server lets
// in, and what a request hook may have broken since. A request that fails
// is not the Transport's to send (http.Transport reports it).
func ValidRequest(out *http.Request) bool {
	if !httpx.ValidToken(out.Method) {
		return false
	}
	for k, vv := range out.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}
