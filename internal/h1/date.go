package h1

import (
	"net/http"
	"sync/atomic"
	"time"
)

// dateCache holds a Server's Date field value, formatted once a second
// rather than per response.
type dateCache struct {
	p atomic.Pointer[cachedDate]
}

type cachedDate struct {
	sec int64
	s   string
}

// format returns now in the format of the Date field.
func (c *dateCache) format(now time.Time) string {
	sec := now.Unix()
	if d := c.p.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &cachedDate{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	c.p.Store(d)
	return d.s
}
