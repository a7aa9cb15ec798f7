package flows

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// Filter selects flows. Its zero value selects every flow.
type Filter struct {
	// Host selects flows whose Host contains it, ignoring ASCII case.
	Host string
	// Method selects flows of this method, ignoring case.
	Method string
	// User selects the flows of this user, exactly.
	User string
	// Status selects by status code; see [ParseStatus].
	Status StatusFilter
	// AfterID and BeforeID, when not zero, select flows with an ID above
	// AfterID and below BeforeID (for paging and for catching up).
	AfterID, BeforeID uint64
	// Limit caps the number of flows a query returns; 0 is no cap.
	Limit int
}

// StatusFilter selects flows by status. Its zero value selects all.
type StatusFilter struct {
	lo, hi int
	set    bool
	errors bool
}

// ParseStatus parses a status filter: "" (any), a code such as "404", a
// class such as "4xx", "0" for flows that sent no status, or "error" for
// flows that ended with an error (ErrorKind set, refusals included).
func ParseStatus(s string) (StatusFilter, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "":
		return StatusFilter{}, nil
	case s == "error":
		return StatusFilter{set: true, errors: true}, nil
	case len(s) == 3 && s[1:] == "xx" && s[0] >= '1' && s[0] <= '5':
		lo := int(s[0]-'0') * 100
		return StatusFilter{lo: lo, hi: lo + 99, set: true}, nil
	}
	code, err := strconv.Atoi(s)
	if err != nil || code < 0 || code > 999 || (code != 0 && code < 100) {
		return StatusFilter{}, errors.New(`status filter: want a code such as 404, a class such as 4xx, 0, or "error"`)
	}
	return StatusFilter{lo: code, hi: code, set: true}, nil
}

// String returns the filter as ParseStatus reads it.
func (s StatusFilter) String() string {
	switch {
	case !s.set:
		return ""
	case s.errors:
		return "error"
	case s.hi != s.lo:
		return strconv.Itoa(s.lo/100) + "xx"
	}
	return strconv.Itoa(s.lo)
}

// Match reports whether a flow of this status and error kind passes.
func (s StatusFilter) match(status int, errKind string) bool {
	switch {
	case !s.set:
		return true
	case s.errors:
		return errKind != ""
	}
	return status >= s.lo && status <= s.hi
}

// MaxLimit caps the Limit that ParseFilter accepts.
const MaxLimit = 10000

// ParseFilter reads a filter from query parameters: host, method, user,
// status (see [ParseStatus]), after and before (flow IDs), limit (at most
// MaxLimit). Missing parameters select all; a malformed one is an error.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{
		Host:   strings.TrimSpace(q.Get("host")),
		Method: strings.TrimSpace(q.Get("method")),
		User:   q.Get("user"),
	}
	var err error
	if f.Status, err = ParseStatus(q.Get("status")); err != nil {
		return Filter{}, err
	}
	for _, p := range []struct {
		name string
		dst  *uint64
	}{{"after", &f.AfterID}, {"before", &f.BeforeID}} {
		if v := q.Get(p.name); v != "" {
			if *p.dst, err = strconv.ParseUint(v, 10, 64); err != nil {
				return Filter{}, errors.New(p.name + ": want a flow ID")
			}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return Filter{}, errors.New("limit: want a number of flows")
		}
		f.Limit = min(n, MaxLimit)
	}
	return f, nil
}

// Values returns the filter as query parameters that ParseFilter reads
// back; empty fields are left out.
func (f Filter) Values() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("host", f.Host)
	set("method", f.Method)
	set("user", f.User)
	set("status", f.Status.String())
	if f.AfterID != 0 {
		q.Set("after", strconv.FormatUint(f.AfterID, 10))
	}
	if f.BeforeID != 0 {
		q.Set("before", strconv.FormatUint(f.BeforeID, 10))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Match reports whether fl passes the filter's Host, Method, User, Status
// and ID bounds (Limit is the query's business). It does not allocate.
func (f *Filter) Match(fl *Flow) bool {
	return (f.AfterID == 0 || fl.ID > f.AfterID) &&
		(f.BeforeID == 0 || fl.ID < f.BeforeID) &&
		(f.Method == "" || strings.EqualFold(fl.Method, f.Method)) &&
		(f.User == "" || fl.User == f.User) &&
		f.Status.match(fl.Status, fl.ErrorKind) &&
		(f.Host == "" || containsFold(fl.Host, f.Host))
}

// containsFold reports whether sub is within s, ignoring ASCII case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
