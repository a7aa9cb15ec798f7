package pac

import (
	"strconv"
	"strings"
	"time"

	"github.com/dop251/goja"
)

var weekdays = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

var months = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6,
	"JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}

// timeArgs returns the arguments without a final "GMT", and the current
// time in UTC if it was there, else in the configured location.
func (v *vm) timeArgs(c goja.FunctionCall) ([]goja.Value, time.Time) {
	args := c.Arguments
	now := v.e.opts.now()
	if n := len(args); n > 0 && strings.EqualFold(args[n-1].String(), "GMT") {
		return args[:n-1], now.UTC()
	}
	return args, now.In(v.e.opts.loc)
}

// number returns a as an integer: a JavaScript number, or a string of
// digits (parseInt's reading of "5").
func number(a goja.Value) (int, bool) {
	switch x := a.Export().(type) {
	case int64:
		return int(x), true
	case float64:
		return int(x), x == float64(int(x))
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	return 0, false
}

// inRange reports whether lo <= x <= hi, wrapping around when lo > hi
// (weekdayRange("FRI", "MON"), timeRange(22, 6)) if wrap is set.
func inRange(x, lo, hi int, wrap bool) bool {
	if lo <= hi {
		return lo <= x && x <= hi
	}
	return wrap && (x >= lo || x <= hi)
}

// weekdayRange(wd1 [, wd2] [, "GMT"]): today is wd1, or between wd1 and
// wd2 inclusive; "FRI", "MON" wraps over the weekend.
func (v *vm) weekdayRange(c goja.FunctionCall) goja.Value {
	args, now := v.timeArgs(c)
	if len(args) < 1 || len(args) > 2 {
		return v.bool(false)
	}
	lo, ok1 := weekdays[strings.ToUpper(args[0].String())]
	hi, ok2 := lo, true
	if len(args) == 2 {
		hi, ok2 = weekdays[strings.ToUpper(args[1].String())]
	}
	return v.bool(ok1 && ok2 && inRange(int(now.Weekday()), lo, hi, true))
}

// datePart is one bound of dateRange: some of day, month and year.
type datePart struct {
	day, month, year int // 0 when absent
}

// parseDatePart reads dateRange arguments: a number below 32 is a day, a
// larger one a year, a name ("JAN") a month. Each may appear once.
func parseDatePart(args []goja.Value) (datePart, bool) {
	var p datePart
	for _, a := range args {
		if n, ok := number(a); ok {
			switch {
			case n >= 1 && n <= 31 && p.day == 0:
				p.day = n
			case n > 31 && p.year == 0:
				p.year = n
			default:
				return p, false
			}
			continue
		}
		m, ok := months[strings.ToUpper(a.String())]
		if !ok || p.month != 0 {
			return p, false
		}
		p.month = m
	}
	return p, true
}

// key orders dates on the fields present in shape.
func (p datePart) key(shape datePart) int {
	k := 0
	if shape.year != 0 {
		k += p.year * 10000
	}
	if shape.month != 0 {
		k += p.month * 100
	}
	if shape.day != 0 {
		k += p.day
	}
	return k
}

// dateRange(…[, "GMT"]) in its Netscape forms: (day), (month), (year),
// (day1, day2), (month1, month2), (year1, year2), (day1, month1, day2,
// month2), (month1, year1, month2, year2), (day1, month1, year1, day2,
// month2, year2). Both bounds are inclusive and must have the same
// fields. A range without a year whose start is after its end wraps:
// dateRange("DEC", "FEB") is December to February.
func (v *vm) dateRange(c goja.FunctionCall) goja.Value {
	args, now := v.timeArgs(c)
	today := datePart{day: now.Day(), month: int(now.Month()), year: now.Year()}
	switch len(args) {
	case 1:
		p, ok := parseDatePart(args)
		return v.bool(ok && p.key(p) == today.key(p))
	case 2, 4, 6:
	default:
		return v.bool(false)
	}
	lo, ok1 := parseDatePart(args[:len(args)/2])
	hi, ok2 := parseDatePart(args[len(args)/2:])
	if !ok1 || !ok2 || (lo.day == 0) != (hi.day == 0) || (lo.month == 0) != (hi.month == 0) || (lo.year == 0) != (hi.year == 0) {
		return v.bool(false)
	}
	return v.bool(inRange(today.key(lo), lo.key(lo), hi.key(lo), lo.year == 0))
}

// timeRange(…[, "GMT"]) in its Netscape forms: (hour), (hour1, hour2),
// (hour1, min1, hour2, min2), (hour1, min1, sec1, hour2, min2, sec2).
// Bounds are inclusive (timeRange(9, 17) until 17:59:59, timeRange(9, 0,
// 17, 30) until 17:30:59) and a start after the end wraps over midnight.
func (v *vm) timeRange(c goja.FunctionCall) goja.Value {
	args, now := v.timeArgs(c)
	n := make([]int, len(args))
	for i, a := range args {
		x, ok := number(a)
		if !ok {
			return v.bool(false)
		}
		n[i] = x
	}
	sec := now.Hour()*3600 + now.Minute()*60 + now.Second()
	switch len(n) {
	case 1:
		return v.bool(now.Hour() == n[0])
	case 2:
		return v.bool(inRange(now.Hour(), n[0], n[1], true))
	case 4:
		return v.bool(inRange(sec, n[0]*3600+n[1]*60, n[2]*3600+n[3]*60+59, true))
	case 6:
		return v.bool(inRange(sec, n[0]*3600+n[1]*60+n[2], n[3]*3600+n[4]*60+n[5], true))
	}
	return v.bool(false)
}
