package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/peertest"
)

func TestMD5Crypt(t *testing.T) {
	// openssl passwd -1 -salt fwdprxy1 s3cr3t-Pa55
	if got, want := peertest.MD5Crypt(testPass, "fwdprxy1"), "$1$fwdprxy1$ROhfAby4KoV2J5qrjPtQd."; got != want {
		t.Fatalf("md5Crypt = %q, want %q", got, want)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		spec     string
		kind     Kind
		name     string
		addr     string
		auth     bool
		user     string
		password string
	}{
		{"http://proxy.example:3128", HTTP, "http://proxy.example:3128", "proxy.example:3128", false, "", ""},
		{"http://proxy.example:3128/", HTTP, "http://proxy.example:3128", "proxy.example:3128", false, "", ""},
		{"HTTP://Proxy.Example:3128", HTTP, "http://proxy.example:3128", "proxy.example:3128", false, "", ""},
		{"http://u:p@10.0.0.1:8080", HTTP, "http://10.0.0.1:8080", "10.0.0.1:8080", true, "u", "p"},
		{"http://u@10.0.0.1:8080", HTTP, "http://10.0.0.1:8080", "10.0.0.1:8080", true, "u", ""},
		{"http://us%40er:p%3Ass%2Fw@h:1", HTTP, "http://h:1", "h:1", true, "us@er", "p:ss/w"},
		{"http://u:p@ss@h:1", HTTP, "http://h:1", "h:1", true, "u", "p@ss"},
		{"https://u:p@[2001:db8::1]:443", HTTPS, "https://[2001:db8::1]:443", "[2001:db8::1]:443", true, "u", "p"},
		{"socks5://u:p@127.0.0.1:1080", SOCKS5, "socks5://127.0.0.1:1080", "127.0.0.1:1080", true, "u", "p"},
		{"socks5h://sock.example:1080", SOCKS5, "socks5h://sock.example:1080", "sock.example:1080", false, "", ""},
		{"DIRECT", Direct, "DIRECT", "", false, "", ""},
		{" direct ", Direct, "DIRECT", "", false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			u, err := Parse(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if u.Kind() != tt.kind || u.Name() != tt.name || u.Addr() != tt.addr || u.HasCredentials() != tt.auth {
				t.Fatalf("got kind %v name %q addr %q auth %v", u.Kind(), u.Name(), u.Addr(), u.HasCredentials())
			}
			if string(u.user) != tt.user || string(u.password) != tt.password {
				t.Fatalf("credentials parsed wrong")
			}
			if tt.kind == Direct {
				if u.ProxyURL() != nil || !u.IsDirect() {
					t.Fatal("DIRECT has a proxy URL")
				}
				return
			}
			pu := u.ProxyURL()
			if pu.Host != tt.addr {
				t.Fatalf("ProxyURL host %q", pu.Host)
			}
			if tt.auth {
				pw, _ := pu.User.Password()
				if pu.User.Username() != tt.user || pw != tt.password {
					t.Fatal("ProxyURL lost the credentials")
				}
			}
			h := u.ProxyConnectHeader()
			if (tt.kind == HTTP || tt.kind == HTTPS) && tt.auth {
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(tt.user+":"+tt.password))
				if h.Get("Proxy-Authorization") != want {
					t.Fatalf("Proxy-Authorization = %q", h.Get("Proxy-Authorization"))
				}
			} else if h != nil {
				t.Fatalf("ProxyConnectHeader = %v, want nil", h)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		spec string
		want string // in the error
	}{
		{"", "missing scheme"},
		{"proxy:3128", "missing scheme"},
		{"ftp://h:21", `unsupported scheme "ftp"`},
		{"socks4://h:1080", `unsupported scheme "socks4"`},
		{"http://h", `missing port in "h"`},
		{"http://h:", `missing port in "h:"`},
		{"http://[::1]", `missing port in "[::1]"`},
		{"http://h:0", `invalid port "0"`},
		{"http://h:70000", `invalid port "70000"`},
		{"http://h:http", `invalid port "http"`},
		{"http://h:3128/path", "a path, query or fragment"},
		{"http://h:3128?x=1", "a path, query or fragment"},
		{"http://h:3128#f", "a path, query or fragment"},
		{"http://:3128", "empty host"},
		{"http://h!x:3128", `invalid host "h!x": character '!'`},
		{"http://::1:3128", "invalid host:port"},
		{"http://[example.com]:3128", "not an IPv6 address"},
		{"http://[fe80::1%25eth0]:3128", "zones are not allowed"},
		{"http://:pw@h:3128", "empty user name"},
		{"http://u%zz:pw@h:3128", "percent-encoding in the user name"},
		{"http://u:p%zz@h:3128", "percent-encoding in the password"},
		{"http://u%0a:p@h:3128", "control character"},
		{"socks5://" + strings.Repeat("u", 256) + ":p@h:1080", "at most 255 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := Parse(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q) = %v, want an error with %q", tt.spec, err, tt.want)
			}
		})
	}
	if _, err := Parse("http://h:1", WithBackoff(Backoff{Min: time.Second, Max: time.Millisecond})); err == nil {
		t.Fatal("a back-off with Max < Min was accepted")
	}
}

func TestRedactSpec(t *testing.T) {
	for spec, want := range map[string]string{
		"http://u:p@h:1":        "http://***@h:1",
		"http://u:p@h:1/x":      "http://***@h:1/x",
		"http://u:p/w@h:1":      "http://***",
		"u:p@h:1":               "***@h:1",
		"http://h:1":            "http://h:1",
		"socks5://a@b@c:1":      "socks5://***@c:1",
		"http://u:p?w@h:1":      "http://***",
		"gopher://u:secret@h:1": "gopher://***@h:1",
	} {
		if got := redactSpec(spec); got != want {
			t.Errorf("redactSpec(%q) = %q, want %q", spec, got, want)
		}
	}
}

// secretsIn returns what must never be shown: the user, the password and
// their Basic encoding.
func secretsIn() []string {
	return []string{testUser, testPass, base64.StdEncoding.EncodeToString([]byte(testUser + ":" + testPass))}
}

func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range secretsIn() {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows a credential: %s", what, s)
		}
	}
}

// TestCredentialsNeverShown checks every way an upstream or its failures
// are shown: String, Name, GoString, fmt verbs, slog, Stats, and the
// errors of parsing, dialing, refusals, rejections, timeouts and protocol
// errors, over HTTP, HTTPS and SOCKS5.
func TestCredentialsNeverShown(t *testing.T) {
	creds := testUser + ":" + testPass + "@"
	for _, bad := range []string{
		"http://" + creds + "h", "http://" + creds + "h:0", "http://" + creds + "h:1/p",
		"ftp://" + creds + "h:1", creds + "h:1", "http://" + testUser + ":" + testPass + "/x@h:1",
		"http://" + testUser + ":" + testPass + "%zz@h:1", "http://" + creds + "h!:1",
		"socks5://" + testUser + ":" + strings.Repeat(testPass, 30) + "@h:1",
	} {
		_, err := Parse(bad)
		if err == nil {
			t.Fatalf("Parse(%q) succeeded", bad)
		}
		assertNoSecret(t, "parse error", err.Error())
	}

	// Failures of every kind, from upstreams that carry the credentials.
	ctx := context.Background()
	httpProxy, _ := startHTTPProxy(t, "someone", "else") // rejects ours: 407
	httpsProxy, _ := startHTTPSProxy(t, testUser, testPass)
	socksWrong := peertest.StartSOCKS(t, "someone", "else", 0)
	socksRefuse := peertest.StartSOCKS(t, testUser, testPass, 2)
	silent := rawServer(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	garbage := rawServer(t, func(c net.Conn) { _, _ = c.Write([]byte("SSH-2.0-nope\r\n\r\n")); _, _ = c.Read(make([]byte, 1)) })
	origin := echoServer(t)
	hostport := func(s string) string { return strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://") }
	cases := []struct {
		spec string
		opts []Option
		kind error
	}{
		{"http://" + creds + closedAddr(t), nil, ErrUnreachable},
		{"http://" + creds + hostport(httpProxy.URL), nil, ErrAuth},
		{"https://" + creds + hostport(httpsProxy.URL), nil, ErrProtocol}, // untrusted certificate
		{"http://" + creds + silent, nil, ErrTimeout},
		{"http://" + creds + garbage, nil, ErrProtocol},
		{"socks5://" + creds + socksWrong.Addr(), nil, ErrAuth},
		{"socks5://" + creds + socksRefuse.Addr(), nil, ErrRefused},
		{"socks5://" + creds + silent, nil, ErrTimeout},
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	jlogger := slog.New(slog.NewJSONHandler(&logs, nil))
	for _, c := range cases {
		u, err := Parse(c.spec, c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		timeout := 5 * time.Second
		if c.kind == ErrTimeout {
			timeout = 300 * time.Millisecond
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		_, err = u.DialTunnel(dctx, origin)
		cancel()
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: DialTunnel error %v, want kind %v", u, err, c.kind)
		}
		assertNoSecret(t, "DialTunnel error", err.Error())
		assertNoSecret(t, "DialTunnel error %+v", fmt.Sprintf("%+v %#v", err, err))

		for _, s := range []string{
			u.String(), u.Name(), u.GoString(),
			fmt.Sprintf("%v %+v %#v %s %q", u, u, u, u, u),
			fmt.Sprintf("%v %+v %#v", []*Upstream{u}, struct{ U *Upstream }{u}, map[string]*Upstream{"u": u}),
			fmt.Sprintf("%v %+v %#v", u.Stats(), u.Stats(), u.Stats()),
			fmt.Sprintf("%v %+v %#v %s", u.user, u.password, u.authz, u.password),
		} {
			assertNoSecret(t, "formatted upstream", s)
		}
		logger.Info("upstream", "u", u, "err", err, "stats", u.Stats())
		jlogger.Info("upstream", "u", u, "err", err, slog.Any("upstreams", []*Upstream{u}))
	}
	assertNoSecret(t, "slog output", logs.String())
	if !strings.Contains(logs.String(), "http://127.0.0.1:") {
		t.Fatalf("the logs do not name the upstreams: %s", logs.String())
	}

	// Through http.Transport (ConfigureTransport), a rejection and a
	// failed dial.
	tr := &http.Transport{}
	ConfigureTransport(tr)
	defer tr.CloseIdleConnections()
	for _, spec := range []string{"http://" + creds + hostport(httpProxy.URL), "http://" + creds + closedAddr(t)} {
		u := MustParse(spec)
		req, _ := http.NewRequestWithContext(NewContext(ctx, u), http.MethodGet, "https://"+origin+"/", nil)
		_, err := tr.RoundTrip(req)
		if err == nil {
			t.Fatalf("%s: RoundTrip succeeded", u)
		}
		assertNoSecret(t, "RoundTrip error", err.Error())
		var ue *Error
		if !errors.As(err, &ue) {
			t.Errorf("%s: RoundTrip error %v is not an *Error", u, err)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Direct: "DIRECT", HTTP: "http", HTTPS: "https", SOCKS5: "socks5", 9: "Kind(9)"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
	u := MustParse("http://" + testUser + ":" + testPass + "@h:1")
	if _, err := url.Parse(u.ProxyURL().String()); err != nil {
		t.Fatal(err)
	}
}
