package fwdproxy

import (
	"log/slog"
	"net/http"
	"sync"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// capture holds what WithCapture records of one request.
type capture struct {
	reqHeader         http.Header // redacted copy, taken when the request starts
	request, response capBuf
}

// newCapture starts the capture of a request whose header is h, capturing
// up to limit bytes of each body; logging says the access log needs the
// request header, which it then copies as it is now.
func newCapture(limit int, h http.Header, logging bool) *capture {
	c := &capture{}
	if logging {
		c.reqHeader = redact.Header(h)
	}
	c.request.limit, c.response.limit = limit, limit
	return c
}

// capBuf keeps the first limit bytes written to it. The request body is read
// by the transport's goroutine, hence the lock.
type capBuf struct {
	mu    sync.Mutex
	limit int
	b     []byte
	total int64
}

func (c *capBuf) add(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := c.limit - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
}

// bytes returns what was captured so far. Later adds (a body still being
// read) append past its end and never change it.
func (c *capBuf) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b[:len(c.b):len(c.b)]
}

func (c *capBuf) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.b)
}

// attrs returns the capture as log attributes; respHeader is the header
// sent to the client.
func (c *capture) attrs(respHeader http.Header) []slog.Attr {
	attrs := []slog.Attr{
		redact.HeaderAttr("request_headers", c.reqHeader),
		redact.HeaderAttr("response_headers", respHeader),
	}
	if c.request.limit > 0 {
		attrs = append(attrs, slog.String("request_body", c.request.String()))
	}
	if c.response.limit > 0 {
		attrs = append(attrs, slog.String("response_body", c.response.String()))
	}
	return attrs
}
