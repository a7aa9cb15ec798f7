//go:build !linux

package fwdproxy

import (
	"io"
	"net/http"
)

// parkTunnel parks nothing where there is no epoll: the handler relays
// every tunnel until it ends (stream.go).
func (p *Proxy) parkTunnel(c *config, r *http.Request, client, upstream io.ReadWriteCloser, detach bool) (*requestEnd, bool) {
	return nil, false
}

// pipePool holds no pipes here.
type pipePool struct{}

func (pp *pipePool) closeAll() {}
