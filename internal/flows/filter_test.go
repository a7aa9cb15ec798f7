package flows

import (
	"net/url"
	"testing"
)

func mustQuery(t *testing.T, q string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		in, str string
		ok      bool
	}{
		{"", "", true}, {"404", "404", true}, {" 4xx ", "4xx", true}, {"5XX", "5xx", true},
		{"0", "0", true}, {"Error", "error", true},
		{"6xx", "", false}, {"42", "", false}, {"1000", "", false}, {"-1", "", false}, {"abc", "", false}, {"4x", "", false},
	} {
		s, err := ParseStatus(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseStatus(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if got := s.String(); tc.ok && got != tc.str {
			t.Errorf("ParseStatus(%q).String() = %q, want %q", tc.in, got, tc.str)
		}
	}
}

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter(mustQuery(t, "host=a&method=GET&user=u&status=4xx&after=3&before=9&limit=20000"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Host != "a" || f.Method != "GET" || f.User != "u" || f.AfterID != 3 || f.BeforeID != 9 || f.Limit != MaxLimit {
		t.Errorf("ParseFilter = %+v", f)
	}
	if got := f.Values().Encode(); got != "after=3&before=9&host=a&limit=10000&method=GET&status=4xx&user=u" {
		t.Errorf("Values = %q", got)
	}
	for _, bad := range []string{"status=x", "after=-1", "before=z", "limit=-2", "limit=ten"} {
		if _, err := ParseFilter(mustQuery(t, bad)); err == nil {
			t.Errorf("ParseFilter(%q) accepted", bad)
		}
	}
}

func TestMatchAllocs(t *testing.T) {
	f := Filter{Host: "EXAMPLE", Method: "get", Status: StatusFilter{lo: 200, hi: 299, set: true}}
	fl := newFlow(0, 0, 0)
	if n := testing.AllocsPerRun(100, func() { f.Match(fl) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
	if !f.Match(fl) {
		t.Error("no match")
	}
}
