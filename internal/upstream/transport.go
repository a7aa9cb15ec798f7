package upstream

import (
	"context"
	"net"
	"net/http"
	"net/url"
)

type ctxKey struct{}

// NewContext returns a copy of ctx carrying u, the upstream a request is
// to go through; see ConfigureTransport.
func NewContext(ctx context.Context, u *Upstream) context.Context {
	return context.WithValue(ctx, ctxKey{}, u)
}

// FromContext returns the upstream NewContext put in ctx, or nil.
func FromContext(ctx context.Context) *Upstream {
	u, _ := ctx.Value(ctxKey{}).(*Upstream)
	return u
}

// ConfigureTransport makes t send each request through the upstream in
// its context (NewContext); a request without one, or with DIRECT, goes
// direct as before. It sets three fields of t, replacing what they held:
//
//   - Proxy returns the upstream's URL with its credentials: net/http then
//     speaks absolute-form to an HTTP upstream (Proxy-Authorization on
//     each request), CONNECT for https targets (Proxy-Authorization on the
//     CONNECT), and SOCKS5 with username and password. An HTTPS upstream
//     is given to net/http as http://: the TLS to it is done in the dial,
//     below, with its own roots and server name (WithRootCAs,
//     WithServerName), while t.TLSClientConfig stays for the origins.
//   - DialContext connects to the upstream with its WithDial function
//     (and TLS for HTTPS), within 30 s if the context has no deadline: a
//     failure is observed in its health, a connection ends a back-off but
//     is not counted as a success (the caller observes each request's
//     outcome). Direct
//     requests use the DialContext t had, which must be the proxy's
//     guarded dial (net.Dialer's if t had none).
//   - OnProxyConnectResponse turns a non-2xx answer to CONNECT into an
//     *Error (ErrRefused or ErrAuth, with the Status), which net/http
//     otherwise reduces to the status text.
//
// net/http keys its idle connections by the proxy URL, credentials
// included, so connections are never shared between upstreams or between
// credentials. An http:// and an https:// upstream on the same host:port
// with the same credentials would share them; nothing listens that way.
//
// Call it before t is used. t.DialTLSContext must be nil: net/http would
// use it for the upstream hop.
func ConfigureTransport(t *http.Transport) {
	direct := t.DialContext
	if direct == nil {
		direct = defaultDialer.DialContext
	}
	t.Proxy = transportProxy
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		u := FromContext(ctx)
		if u == nil || u.kind == Direct || addr != u.addr {
			return direct(ctx, network, addr)
		}
		return u.dialSelf(ctx)
	}
	t.OnProxyConnectResponse = onProxyConnectResponse
}

func transportProxy(req *http.Request) (*url.URL, error) {
	u := FromContext(req.Context())
	if u == nil || u.kind == Direct {
		return nil, nil
	}
	return u.trURL, nil
}

func onProxyConnectResponse(ctx context.Context, _ *url.URL, connectReq *http.Request, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	u := FromContext(ctx)
	if u == nil {
		return nil // not ours: net/http reports it
	}
	e := u.statusError(connectReq.Host, resp.StatusCode, resp.Status)
	u.Observe(e)
	return e
}
