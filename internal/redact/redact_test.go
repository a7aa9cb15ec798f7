package redact

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"reflect"
	"testing"
)

func TestIsSensitive(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"Authorization", true},
		{"authorization", true},
		{"PROXY-AUTHORIZATION", true},
		{"Proxy-Authorization", true},
		{"Cookie", true},
		{"cOOKIE", true},
		{"Set-Cookie", true},
		{"set-cookie", true},

		{"", false},
		{"Proxy-Authenticate", false},
		{"WWW-Authenticate", false},
		{"Authorization2", false},
		{"X-Authorization", false},
		{"Cookies", false},
		{"Set-Cookie2", false},
		{"Content-Type", false},
		{" Cookie", false},
	}
	for _, tt := range tests {
		if got := IsSensitive(tt.name); got != tt.want {
			t.Errorf("IsSensitive(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsSensitiveNoAlloc(t *testing.T) {
	for _, name := range []string{"proxy-authorization", "Content-Type"} {
		if n := testing.AllocsPerRun(100, func() { IsSensitive(name) }); n != 0 {
			t.Errorf("IsSensitive(%q) allocates %v times", name, n)
		}
	}
}

func TestHeader(t *testing.T) {
	tests := []struct {
		name     string
		in, want http.Header
	}{
		{"nil", nil, nil},
		{"empty", http.Header{}, http.Header{}},
		{
			"no secrets",
			http.Header{"Accept": {"*/*"}, "Via": {"1.1 a", "1.1 b"}},
			http.Header{"Accept": {"*/*"}, "Via": {"1.1 a", "1.1 b"}},
		},
		{
			"each value replaced, count kept",
			http.Header{
				"Authorization":       {"Bearer abc"},
				"Proxy-Authorization": {"Basic dTpw"},
				"Cookie":              {"a=1", "b=2"},
				"Set-Cookie":          {"s=1; HttpOnly", "t=2", "u=3"},
				"Accept":              {"*/*"},
			},
			http.Header{
				"Authorization":       {Redacted},
				"Proxy-Authorization": {Redacted},
				"Cookie":              {Redacted, Redacted},
				"Set-Cookie":          {Redacted, Redacted, Redacted},
				"Accept":              {"*/*"},
			},
		},
		{
			"non-canonical keys",
			http.Header{"authorization": {"x"}, "set-cookie": {"y"}},
			http.Header{"authorization": {Redacted}, "set-cookie": {Redacted}},
		},
		{
			"empty value list",
			http.Header{"Cookie": {}},
			http.Header{"Cookie": {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.Clone()
			got := Header(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Header() = %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in, before) {
				t.Errorf("Header() changed its input: %v, was %v", tt.in, before)
			}
		})
	}
}

func TestHeaderIsIndependentCopy(t *testing.T) {
	h := http.Header{"Accept": {"a", "b"}}
	c := Header(h)
	h["Accept"][0] = "changed"
	h.Set("Cookie", "later")
	if want := (http.Header{"Accept": {"a", "b"}}); !reflect.DeepEqual(c, want) {
		t.Errorf("copy = %v after the original changed, want %v", c, want)
	}
}

// logJSON logs one record holding attrs through a JSON handler with opts and
// returns the decoded object without the time, level and msg keys.
func logJSON(t *testing.T, opts *slog.HandlerOptions, attrs ...slog.Attr) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, opts)).LogAttrs(t.Context(), slog.LevelInfo, "m", attrs...)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("decoding %q: %v", buf.Bytes(), err)
	}
	delete(got, slog.TimeKey)
	delete(got, slog.LevelKey)
	delete(got, slog.MessageKey)
	return got
}

func TestHeaderAttr(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want map[string]any
	}{
		{"nil", nil, map[string]any{}},
		{"empty", http.Header{}, map[string]any{}},
		{
			"mixed",
			http.Header{
				"Authorization": {"Bearer abc"},
				"Set-Cookie":    {"a=1", "b=2"},
				"Accept":        {"*/*"},
				"Via":           {"1.1 a", "1.1 b"},
				"X-Empty":       {},
			},
			map[string]any{"hdr": map[string]any{
				"Authorization": Redacted,
				"Set-Cookie":    []any{Redacted, Redacted},
				"Accept":        "*/*",
				"Via":           []any{"1.1 a", "1.1 b"},
				"X-Empty":       []any{},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := logJSON(t, nil, HeaderAttr("hdr", tt.h))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("logged %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHeaderAttrSortedAndLazy(t *testing.T) {
	h := http.Header{"B": {"2"}, "A": {"1"}, "C": {"3", "4"}}
	if n := testing.AllocsPerRun(100, func() { _ = HeaderAttr("h", h) }); n != 0 {
		t.Errorf("HeaderAttr allocates %v times, want 0", n)
	}

	a := HeaderAttr("h", h)
	if k := a.Value.Kind(); k != slog.KindLogValuer {
		t.Fatalf("HeaderAttr kind = %v, want LogValuer", k)
	}
	resolved := a.Value.Resolve()
	h["C"][0] = "changed" // the resolved value must not see this
	h.Set("A", "changed")

	var keys []string
	var values []any
	for _, ga := range resolved.Group() {
		keys = append(keys, ga.Key)
		values = append(values, ga.Value.Any())
	}
	if want := []string{"A", "B", "C"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	if want := []any{"1", "2", []string{"3", "4"}}; !reflect.DeepEqual(values, want) {
		t.Errorf("values = %v, want %v", values, want)
	}
}

func TestReplaceAttr(t *testing.T) {
	secret := slog.StringValue("s3cret")
	tests := []struct {
		groups []string
		key    string
		want   slog.Value
	}{
		{nil, "Authorization", slog.StringValue(Redacted)},
		{nil, "cookie", slog.StringValue(Redacted)},
		{[]string{"req"}, "Proxy-Authorization", slog.StringValue(Redacted)},
		{[]string{"set-cookie"}, "value", slog.StringValue(Redacted)},
		{[]string{"Cookie", "inner"}, "value", slog.StringValue(Redacted)},
		{nil, "user", secret},
		{[]string{"req", "headers"}, "Accept", secret},
		{nil, slog.MessageKey, secret},
	}
	for _, tt := range tests {
		got := ReplaceAttr(tt.groups, slog.Attr{Key: tt.key, Value: secret})
		if got.Key != tt.key || !got.Value.Equal(tt.want) {
			t.Errorf("ReplaceAttr(%q, %q) = %v, want %s=%v", tt.groups, tt.key, got, tt.key, tt.want)
		}
	}
}

func TestReplaceAttrInHandler(t *testing.T) {
	opts := &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}
	got := logJSON(t, opts,
		slog.String("Cookie", "a=1"),
		slog.Any("set-cookie", []string{"a", "b"}),
		slog.Group("Authorization", slog.String("scheme", "Bearer"), slog.String("token", "abc")),
		slog.Group("req", slog.String("Proxy-Authorization", "Basic x"), slog.String("host", "example.com")),
		slog.String("user", "alice"),
	)
	want := map[string]any{
		"Cookie":        Redacted,
		"set-cookie":    Redacted,
		"Authorization": map[string]any{"scheme": Redacted, "token": Redacted},
		"req":           map[string]any{"Proxy-Authorization": Redacted, "host": "example.com"},
		"user":          "alice",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("logged %v, want %v", got, want)
	}
}
