package adminui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestGuardToken(t *testing.T) {
	g := Guard(okHandler, GuardOptions{Token: "s3cret", Public: []string{"/healthz"}})
	req := func(method, target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		code int
	}{
		{"none", req("GET", "/api/stats"), 401},
		{"bearer", req("GET", "/api/stats", "Authorization", "Bearer s3cret"), 200},
		{"bearer case", req("GET", "/api/stats", "Authorization", "bearer s3cret"), 200},
		{"wrong bearer", req("GET", "/api/stats", "Authorization", "Bearer s3cre"), 401},
		{"longer bearer", req("GET", "/api/stats", "Authorization", "Bearer s3cret!"), 401},
		{"basic", req("GET", "/api/stats", "Authorization", "Basic s3cret"), 401},
		{"cookie", req("GET", "/api/stats", "Cookie", TokenCookie+"=s3cret"), 200},
		{"wrong cookie", req("GET", "/api/stats", "Cookie", TokenCookie+"=nope"), 401},
		{"wrong query", req("GET", "/?token=nope"), 401},
		{"public", req("GET", "/healthz"), 200},
		{"public prefix is not public", req("GET", "/healthz/x"), 401},
		{"post with bearer", req("POST", "/api/flows/clear", "Authorization", "Bearer s3cret"), 200},
		{"post query", req("POST", "/api/flows/clear?token=s3cret"), 200},
		{"cross-site post", req("POST", "/api/flows/clear", "Cookie", TokenCookie+"=s3cret", "Sec-Fetch-Site", "cross-site"), 403},
		{"any host with a token", req("GET", "http://admin.example/api/stats", "Authorization", "Bearer s3cret"), 200},
	} {
		w := serve(g, tc.r)
		if w.Code != tc.code {
			t.Errorf("%s: %d, want %d (%s)", tc.name, w.Code, tc.code, w.Body)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") != `Bearer realm="fwdproxy admin"` {
			t.Errorf("%s: 401 without a Bearer challenge: %v", tc.name, w.Header())
		}
	}
}

func TestGuardTokenQuery(t *testing.T) {
	g := Guard(okHandler, GuardOptions{Token: "s3cret"})
	w := serve(g, httptest.NewRequest("GET", "/flows?host=a&token=s3cret", nil))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/flows?host=a" {
		t.Fatalf("page with ?token=: %d Location %q, want 303 to the URL without it", w.Code, w.Header().Get("Location"))
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if c.Name != TokenCookie || c.Value != "s3cret" || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", c)
	}
	// The cookie then opens the event stream, which cannot send headers.
	r := httptest.NewRequest("GET", "/api/stats/stream", nil)
	r.AddCookie(c)
	if w := serve(g, r); w.Code != 200 {
		t.Errorf("with the cookie: %d", w.Code)
	}
	// Over TLS the cookie is Secure.
	r = httptest.NewRequest("GET", "https://127.0.0.1/?token=s3cret", nil)
	if c := serve(g, r).Result().Cookies(); len(c) != 1 || !c[0].Secure {
		t.Errorf("cookie over TLS: %+v", c)
	}
}

func TestGuardHost(t *testing.T) {
	g := Guard(okHandler, GuardOptions{AllowedHosts: []string{"Admin.Internal"}})
	for host, code := range map[string]int{
		"127.0.0.1:9090":         200,
		"[::1]:9090":             200,
		"10.1.2.3":               200,
		"localhost:9090":         200,
		"LOCALHOST":              200,
		"app.localhost:9090":     200,
		"admin.internal:9090":    200,
		"admin.internal.":        200,
		"evil.example:9090":      403,
		"127.0.0.1.evil.example": 403,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		w := serve(g, r)
		if w.Code != code {
			t.Errorf("Host %q: %d, want %d", host, w.Code, code)
		}
		if code == 403 && !strings.Contains(w.Body.String(), "not allowed") {
			t.Errorf("Host %q: body %q", host, w.Body)
		}
	}
	r := httptest.NewRequest("POST", "http://127.0.0.1:9090/api/flows/clear", nil)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	if w := serve(g, r); w.Code != http.StatusForbidden {
		t.Errorf("cross-site POST without a token: %d, want 403", w.Code)
	}
	r = httptest.NewRequest("POST", "http://127.0.0.1:9090/api/flows/clear", nil)
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	if w := serve(g, r); w.Code != 200 {
		t.Errorf("same-origin POST: %d", w.Code)
	}
}

// TestGuardSetToken: a new token replaces the old one at once, and no
// token brings the Host check back.
func TestGuardSetToken(t *testing.T) {
	g := Guard(okHandler, GuardOptions{Token: "old"})
	get := func(host, token string) int {
		r := httptest.NewRequest("GET", "http://"+host+"/api/stats", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return serve(g, r).Code
	}
	for _, step := range []struct {
		set         string // the token set before the checks ("-": none set)
		host, token string
		code        int
	}{
		{"-", "admin.example", "old", 200},
		{"new", "admin.example", "old", 401},
		{"new", "admin.example", "new", 200},
		{"", "admin.example", "", 403},
		{"", "127.0.0.1:9090", "", 200},
	} {
		if step.set != "-" {
			g.SetToken(step.set)
		}
		if got := get(step.host, step.token); got != step.code {
			t.Errorf("token %q set, Host %s, bearer %q: %d, want %d", step.set, step.host, step.token, got, step.code)
		}
	}
}
