package httpx

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckHostname(t *testing.T) {
	long := strings.Repeat("a.", 126) + "a" // 253 bytes
	tests := []struct {
		in   string
		info NameInfo
		err  string // "" when valid
	}{
		{"example.com", NameInfo{}, ""},
		{"example.com.", NameInfo{}, ""},
		{"Example.COM", NameInfo{Upper: true}, ""},
		{"a", NameInfo{}, ""},
		{"_acme-challenge.example.com", NameInfo{}, ""},
		{"under_score.example", NameInfo{}, ""},
		{"xn--nxasmq6b.example", NameInfo{}, ""},
		{"127.0.0.1", NameInfo{Numeric: true}, ""},
		{"127.0.0.1.", NameInfo{Numeric: true}, ""},
		{"1.2.3.4.5", NameInfo{Numeric: true}, ""},
		{"0x7f000001", NameInfo{}, ""},
		{"1-2.example", NameInfo{}, ""},
		{"-a.example", NameInfo{EdgeHyphen: true}, ""},
		{"a-.example", NameInfo{EdgeHyphen: true}, ""},
		{"a.-b", NameInfo{EdgeHyphen: true}, ""},
		{"a.b-", NameInfo{EdgeHyphen: true}, ""},
		{"a.b-.", NameInfo{EdgeHyphen: true}, ""},
		{"-", NameInfo{EdgeHyphen: true}, ""},
		{"a-b.c-d", NameInfo{}, ""},
		{strings.Repeat("a", 63) + ".com", NameInfo{}, ""},
		{long, NameInfo{}, ""},
		{long + ".", NameInfo{}, ""},

		{"", NameInfo{}, "empty name"},
		{".", NameInfo{}, "empty label"},
		{"..", NameInfo{}, "empty label"},
		{"a..b", NameInfo{}, "empty label"},
		{".example.com", NameInfo{}, "empty label"},
		{"example.com..", NameInfo{}, "empty label"},
		{strings.Repeat("a", 64) + ".com", NameInfo{}, "label longer than 63 bytes"},
		{long + "a", NameInfo{}, "name longer than 253 bytes"},  // 254 bytes: httpx.ValidHostname took it
		{long + "a.", NameInfo{}, "name longer than 253 bytes"}, // 254 bytes and the dot
		{long + "..", NameInfo{}, "name longer than 253 bytes"}, // only one dot is not counted
		{"exa mple.com", NameInfo{}, "invalid character ' '"},
		{"*.example.com", NameInfo{}, "invalid character '*'"},
		{"example.com:443", NameInfo{}, "invalid character ':'"},
		{"::1", NameInfo{}, "invalid character ':'"},
		{"[::1]", NameInfo{}, "invalid character '['"},
		{"ex\x00ample.com", NameInfo{}, `invalid character '\x00'`},
		{"bücher.example", NameInfo{}, "invalid byte 0xc3"},
		{"\u212aelvin.example", NameInfo{}, "invalid byte 0xe2"}, // KELVIN SIGN: strings.ToLower makes it "k"
		{"exa/mple.com", NameInfo{}, "invalid character '/'"},
	}
	for _, tt := range tests {
		info, err := CheckHostname(tt.in)
		if tt.err == "" {
			if err != nil || info != tt.info {
				t.Errorf("CheckHostname(%q) = %+v, %v; want %+v", tt.in, info, err, tt.info)
			}
		} else if err == nil || err.Error() != tt.err || info != (NameInfo{}) {
			t.Errorf("CheckHostname(%q) = %+v, %v; want error %q", tt.in, info, err, tt.err)
		}
		if ValidHostname(tt.in) != (tt.err == "") {
			t.Errorf("ValidHostname(%q) = %v", tt.in, !(tt.err == ""))
		}
	}
	for _, s := range []string{"", "a..b", strings.Repeat("a", 64), long + "a"} {
		if _, err := CheckHostname(s); !errors.Is(err, ErrEmptyName) && !errors.Is(err, ErrEmptyLabel) &&
			!errors.Is(err, ErrLongLabel) && !errors.Is(err, ErrLongName) {
			t.Errorf("CheckHostname(%q): %v is not one of the sentinel errors", s, err)
		}
	}
	for _, s := range []string{"Www.Example.com.", "a b", "é", "a..b", long + "a"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = CheckHostname(s) }); n != 0 {
			t.Errorf("CheckHostname(%q) allocates %v times", s, n)
		}
	}
}

// refHostname is the rule of CheckHostname written another way, as the
// fuzz test's oracle.
func refHostname(h string) (NameInfo, bool) {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > MaxHostname {
		return NameInfo{}, false
	}
	info := NameInfo{
		Upper:   strings.ContainsAny(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
		Numeric: strings.Trim(name, "0123456789.") == "",
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return NameInfo{}, false
		}
		if strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return NameInfo{}, false
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			info.EdgeHyphen = true
		}
	}
	return info, true
}

// FuzzCheckHostname: CheckHostname agrees with refHostname, and a name it
// accepts is ASCII, so strings.ToLower folds it byte for byte.
func FuzzCheckHostname(f *testing.F) {
	for _, s := range []string{"example.com", "Example.COM.", "a..b", "-a.b-", "1.2.3.4", "\u212a", "a.", ".", "", "a_b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		info, err := CheckHostname(h)
		want, ok := refHostname(h)
		if (err == nil) != ok || info != want {
			t.Fatalf("CheckHostname(%q) = %+v, %v; want %+v, valid %v", h, info, err, want, ok)
		}
		if err == nil && len(strings.ToLower(h)) != len(h) {
			t.Fatalf("CheckHostname accepted %q, which does not fold byte for byte", h)
		}
	})
}
