package adminui

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// SSE writes a text/event-stream response (Server-Sent Events, as the HTML
// standard defines them). Make it with [StartSSE]; it is not safe for
// concurrent use.
type SSE struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte
}

// RetryAfter is the reconnection delay StartSSE asks browsers to wait when
// a stream breaks.
const RetryAfter = 2 * time.Second

// StartSSE starts an event stream on w: it sets the headers, lifts the
// server's write deadline (a stream lasts as long as the client stays),
// writes the retry interval and flushes, so that the browser's EventSource
// opens at once. It fails when w cannot flush.
func StartSSE(w http.ResponseWriter) (*SSE, error) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a reverse proxy in front must not buffer it
	h.Set("X-Content-Type-Options", "nosniff")
	_ = rc.SetWriteDeadline(time.Time{}) // not every writer supports deadlines
	w.WriteHeader(http.StatusOK)
	s := &SSE{w: w, rc: rc}
	s.buf = append(s.buf, "retry: "...)
	s.buf = strconv.AppendInt(s.buf, RetryAfter.Milliseconds(), 10)
	s.buf = append(s.buf, "\n\n"...)
	return s, s.flush()
}

// Event writes one event and flushes it. An empty event name is the
// default "message" event; an empty id sets none. Each line of data becomes
// a data: line, so data may hold newlines; event and id must not (they are
// cut at the first line break).
func (s *SSE) Event(event, id string, data []byte) error {
	if event != "" {
		s.buf = append(s.buf, "event: "...)
		s.buf = append(s.buf, firstLine(event)...)
		s.buf = append(s.buf, '\n')
	}
	if id != "" {
		s.buf = append(s.buf, "id: "...)
		s.buf = append(s.buf, firstLine(id)...)
		s.buf = append(s.buf, '\n')
	}
	for {
		line, rest, more := cutLine(data)
		s.buf = append(s.buf, "data: "...)
		s.buf = append(s.buf, line...)
		s.buf = append(s.buf, '\n')
		if !more {
			break
		}
		data = rest
	}
	s.buf = append(s.buf, '\n')
	return s.flush()
}

// Comment writes a comment line, which browsers ignore: a heartbeat that
// keeps idle connections open and finds clients that went away.
func (s *SSE) Comment(text string) error {
	s.buf = append(s.buf, ": "...)
	s.buf = append(s.buf, firstLine(text)...)
	s.buf = append(s.buf, "\n\n"...)
	return s.flush()
}

func (s *SSE) flush() error {
	_, err := s.w.Write(s.buf)
	s.buf = s.buf[:0]
	if err != nil {
		return err
	}
	return s.rc.Flush()
}

// cutLine splits b at its first line break (CRLF, LF or CR, the three that
// the event-stream format knows).
func cutLine(b []byte) (line, rest []byte, found bool) {
	i := bytes.IndexAny(b, "\r\n")
	if i < 0 {
		return b, nil, false
	}
	if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
		return b[:i], b[i+2:], true
	}
	return b[:i], b[i+1:], true
}

func firstLine(s string) []byte {
	line, _, _ := cutLine([]byte(s))
	return line
}
