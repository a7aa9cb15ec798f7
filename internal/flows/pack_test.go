package flows

import (
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/redact"
)

// TestPackRoundTrip packs flows of every shape and unpacks them: every
// field comes back as it was, but for what packing means to change:
// credentials redacted, bodies clipped, content types filled, an address
// as its text.
func TestPackRoundTrip(t *testing.T) {
	local := time.Date(2026, 3, 4, 5, 6, 7, 890, time.Local)
	full := func() *Flow {
		return &Flow{
			Start: local, Method: "POST", URL: "http://example.com/a?b=c", Host: "example.com", Proto: "HTTP/2.0",
			Status: 201, User: "alice", Client: "127.0.0.1:4000", Upstream: "10.0.0.1:80",
			BytesIn: 12, BytesOut: -1, ErrorKind: "upstream", ErrorReason: "gone",
			Intercepted: true,
			Timings:     Timings{DNS: 1, Connect: 2, TLS: 3, FirstByte: 4 * time.Second, Total: 5 * time.Hour},
			RequestHeader: http.Header{
				"Content-Type": {"application/json"}, "X-Many": {"1", "2", "3"}, "X-Empty": {""},
			},
			ResponseHeader: http.Header{"Content-Type": {"image/png"}, "Set-Cookie": {"a=1", "b=2"}},
			RequestBody:    Body{Prefix: []byte(`{"a":1}`)},
			ResponseBody:   Body{ContentType: "image/gif", Prefix: []byte{}},
		}
	}
	for _, tc := range []struct {
		name    string
		flow    func() *Flow
		maxBody int
		bodies  bool
		want    func(*Flow) // what packing changes
	}{
		{"every field", full, 1 << 20, true, func(f *Flow) {
			f.RequestBody.ContentType = "application/json"
			f.ResponseHeader["Set-Cookie"] = []string{redact.Redacted, redact.Redacted}
		}},
		{"bodies clipped", full, 3, true, func(f *Flow) {
			f.RequestBody = Body{ContentType: "application/json", Prefix: []byte(`{"a`)}
			f.ResponseHeader["Set-Cookie"] = []string{redact.Redacted, redact.Redacted}
		}},
		{"without bodies", full, 1 << 20, false, func(f *Flow) {
			f.RequestBody = Body{ContentType: "application/json"}
			f.ResponseBody.Prefix = nil
			f.ResponseHeader["Set-Cookie"] = []string{redact.Redacted, redact.Redacted}
		}},
		{"a tunnel in UTC, no headers", func() *Flow {
			return &Flow{Start: local.UTC(), Method: "CONNECT", URL: "user:pw@example.com:443", Tunnel: true,
				UpstreamAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}}
		}, 100, true, func(f *Flow) {
			f.UpstreamAddr, f.Upstream = nil, "192.0.2.1:443" // the 16-byte form of an IPv4 address, as net writes it
		}},
		{"RawURL with a password, IPv6 upstream with a zone", func() *Flow {
			return &Flow{Method: "GET", RawURL: &url.URL{Scheme: "https", User: url.UserPassword("u", "secret"),
				Host: "example.com:8443", Path: "/a b", RawPath: "/a%20b", RawQuery: "q=1", Fragment: "f", ForceQuery: true},
				UpstreamAddr:  &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 8443, Zone: "eth0"},
				RequestHeader: http.Header{"Authorization": {"Bearer x"}, "Proxy-Authorization": {"Basic y"}, "Cookie": {"c"}}}
		}, 100, true, func(f *Flow) {
			u := *f.RawURL
			u.User = url.UserPassword("u", "xxxxx")
			f.RawURL = &u
			f.UpstreamAddr, f.Upstream = nil, "[fe80::1%eth0]:8443"
			for k := range f.RequestHeader {
				f.RequestHeader[k] = []string{redact.Redacted}
			}
		}},
		{"RawURL with a user, opaque; a UDP upstream", func() *Flow {
			return &Flow{RawURL: &url.URL{Scheme: "mailto", Opaque: "x@example.com", User: url.User("n"), OmitHost: true},
				UpstreamAddr: &net.UDPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 53}}
		}, 100, true, func(f *Flow) {
			f.UpstreamAddr, f.Upstream = nil, "10.1.2.3:53"
		}},
		{"a password in the URL string", func() *Flow {
			return &Flow{URL: "http://user:secret@example.com/x"}
		}, 100, true, func(f *Flow) { f.URL = "http://user:xxxxx@example.com/x" }},
		{"zero", func() *Flow { return &Flow{} }, 100, true, func(*Flow) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.flow()
			given := tc.flow()
			p := pack(f, tc.maxBody, tc.bodies)
			if !reflect.DeepEqual(f, given) {
				t.Errorf("pack changed the flow it was given:\n%+v\nwant\n%+v", f, given)
			}
			got := unpack(7, p)
			want := tc.flow()
			want.ID = 7
			tc.want(want)
			if want.RequestHeader == nil {
				got.RequestHeader = nilIfEmpty(got.RequestHeader)
			}
			if want.ResponseHeader == nil {
				got.ResponseHeader = nilIfEmpty(got.ResponseHeader)
			}
			if !got.Start.Equal(want.Start) || got.Start.Location() != want.Start.Location() {
				t.Errorf("Start = %v, want %v", got.Start, want.Start)
			}
			got.Start, want.Start = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("unpacked\n%+v\nwant\n%+v", got, want)
			}
			if f.Size() != packedSize(pack(f, 1<<30, true)) || got.Size() > f.Size() {
				t.Errorf("Size %d, unpacked %d, packed %d", f.Size(), got.Size(), len(p))
			}
			// Truncated anywhere, it reads as what it has, without a panic.
			for i := range len(p) {
				unpack(1, p[:i])
			}
		})
	}
}

func nilIfEmpty(h http.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	return h
}

// TestPackedRingFlowsShareNothing checks that a flow read from the ring
// holds none of the request's memory: changing the maps and slices given
// after Add changes nothing read back.
func TestPackedRingFlowsShareNothing(t *testing.T) {
	r := NewRing(Options{})
	f := newFlow(0, 4, 4)
	f.RawURL, f.URL = &url.URL{Scheme: "http", Host: "example.com", Path: "/p"}, ""
	id := r.Add(f)
	f.RequestHeader["Accept"][0] = "changed"
	f.ResponseHeader.Set("X-New", "1")
	f.RequestBody.Prefix[0], f.ResponseBody.Prefix[0] = 'x', 'x'
	f.RawURL.Path = "/changed"
	got := r.Get(id)
	if got.RequestHeader.Get("Accept") != "*/*" || got.ResponseHeader.Get("X-New") != "" ||
		got.RequestBody.Prefix[0] != 0 || got.ResponseBody.Prefix[0] != 0 || !strings.HasSuffix(got.url(), "/p") {
		t.Errorf("the flow read back changed with the request's memory: %+v", got)
	}
}
