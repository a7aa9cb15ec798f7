package fwdproxy

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/dashboard"
	"github.com/fwdproxy/fwdproxy/internal/flows"
)

// Flow recording. While an Admin is open (admin.go) p.rec holds its
// recorder: every request counts its destination for the dashboard, and
// while the ring records, each request gets a reqState (telemetry.go) from
// which endRequest builds its flow record (recordFlow). The dial
// (transport.go, through dialed), the client trace and the round trip
// (telemetry.go) fill in the timing phases. Nothing else happens per
// request: the ring's subscribers, the pages and the HAR file run on
// goroutines of their own.

// recorder is what an open Admin records with.
type recorder struct {
	ring *flows.Ring
	dash *dashboard.Dashboard
}

// recording counts req's destination when an Admin is open, and returns
// its recorder when its ring records (nil otherwise).
func (p *Proxy) recording(req *http.Request) *recorder {
	rec := p.rec.Load()
	if rec == nil {
		return nil
	}
	if host := flowDestination(req); host != "" {
		rec.dash.Destination(host)
	}
	if !rec.ring.Recording() {
		return nil
	}
	return rec
}

// flowDestination is the host a request is for, with its port only when that
// is not the scheme's default: "example.com", "example.com:8443".
func flowDestination(r *http.Request) string {
	hostport, def := r.URL.Host, "80"
	switch {
	case r.Method == http.MethodConnect:
		hostport, def = r.Host, "443"
	case r.URL.Scheme == "https":
		def = "443"
	}
	// The port is after the last colon, unless that colon is inside an
	// IPv6 literal's brackets ("[::1]"); net.SplitHostPort would allocate
	// an error for a host without one.
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.IndexByte(hostport[i:], ']') >= 0 || hostport[i+1:] != def {
		return hostport
	}
	return hostport[:i]
}

// recordFlow hands the record of the request rs followed, which ended
// with status after d, to the recorder's ring, which packs it into one
// allocation (flows' pack.go); the Flow itself stays on the stack. The
// maps and slices it passes are the request's own (the client's header,
// the response header the handler used, the capture's buffers), not
// copies: the ring only reads them, and redacts as it packs.
func (p *Proxy) recordFlow(rs *reqState, status int, d time.Duration) {
	if rs.intercepted && rs.requests > 0 {
		return // its requests have their own records, decrypted
	}
	r := rs.req
	ctx := r.Context()
	f := &flows.Flow{
		Start:          rs.start,
		Method:         r.Method,
		Host:           targetOf(r),
		Proto:          r.Proto,
		Status:         status,
		User:           rs.user,
		Client:         r.RemoteAddr,
		UpstreamAddr:   rs.upAddr,
		ErrorKind:      rs.errKind,
		Tunnel:         rs.tunnel,
		RequestHeader:  r.Header,
		ResponseHeader: settledHeader(rs.respHeader),
		Timings: flows.Timings{
			DNS:       time.Duration(rs.dnsTime.Load()),
			Connect:   time.Duration(rs.connTime.Load()),
			TLS:       time.Duration(rs.tlsTime.Load()),
			FirstByte: rs.firstByte,
			Total:     d,
		},
	}
	switch {
	case r.Method == http.MethodConnect:
		f.URL = r.Host
	case r.URL.IsAbs():
		f.RawURL = r.URL // made a string when read
		if rs.mayIntercept {
			// A request inside an intercepted CONNECT: its user is the
			// CONNECT's, in the context.
			_, f.Intercepted = ctx.Value(interceptedKey{}).(*interceptedConn)
			f.User = rs.userName(ctx)
		}
	default: // a request for the proxy itself (or the fallback handler)
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		if r.TLS != nil {
			u.Scheme = "https"
		}
		f.URL, f.Host = u.String(), r.Host
	}
	if rs.tunnel {
		f.BytesIn, f.BytesOut = rs.tunUp, rs.tunDown
	} else {
		f.BytesOut = rs.bytesOut
		if rs.body != nil {
			f.BytesIn = rs.body.n.Load()
		}
	}
	if e := rs.failure; e != nil {
		f.ErrorReason = e.Reason
		if f.ErrorKind == "" {
			f.ErrorKind = kindName(e.Kind) // a failure after the response began
		}
	}
	if c := rs.capture; c != nil {
		f.RequestBody.Prefix, f.ResponseBody.Prefix = c.request.bytes(), c.response.bytes()
	}
	rs.rec.ring.Add(f)
}

// settledHeader returns h, the header of a response whose handler has
// returned, or a copy of it when the server may still change it: the
// HTTP/2 server moves trailers given as "Trailer:" keys into the map after
// the handler (http2's promoteUndeclaredTrailers), so a response with
// trailers is copied; no server changes other maps once the handler is
// done, and those are shared as they are.
func settledHeader(h http.Header) http.Header {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return h.Clone()
		}
	}
	return h
}

// tlsStarted and tlsDone are the client trace's TLS hooks when a flow is
// recorded: they time the upstream TLS handshake.
func (rs *reqState) tlsStarted() { rs.tlsStart.Store(time.Now().UnixNano()) }

func (rs *reqState) tlsDone(tls.ConnectionState, error) {
	if start := rs.tlsStart.Load(); start != 0 {
		rs.tlsTime.Store(time.Now().UnixNano() - start)
	}
}
