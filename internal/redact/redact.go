// Package redact keeps credentials out of logs and captured headers.
//
// A header is sensitive when its name is in the table named sensitive in
// redact.go, compared case-insensitively. To protect another header, add its
// canonical name to that table and a row to TestIsSensitive; every function
// here uses the table, so nothing else changes.
package redact

import (
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Redacted is the value that replaces each value of a sensitive header.
const Redacted = "[REDACTED]"

// sensitive lists the headers that carry credentials. Keep it to
// credentials: headers such as Proxy-Authenticate only name a scheme.
var sensitive = [...]string{
	"Authorization",
	"Proxy-Authorization",
	"Cookie",
	"Set-Cookie",
}

// IsSensitive reports whether a header of this name carries credentials.
// The comparison ignores case and does not allocate.
func IsSensitive(name string) bool {
	for _, s := range sensitive {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// Header returns a deep copy of h in which every value of a sensitive header
// is replaced by [Redacted]; the number of values is kept. The copy shares
// nothing with h, so it may be kept after h changes. A nil h gives nil.
func Header(h http.Header) http.Header {
	c := h.Clone()
	for name, values := range c {
		if IsSensitive(name) {
			redactAll(values)
		}
	}
	return c
}

// redactAll replaces every element of values by [Redacted].
func redactAll(values []string) {
	for i := range values {
		values[i] = Redacted
	}
}

// HeaderAttr returns an attribute that logs h as a group, one attribute per
// header name in sorted order, with sensitive values redacted as by [Header].
// A name with one value logs a string, otherwise a []string.
//
// Building the attribute costs no allocation: the value is a [slog.LogValuer]
// that reads h only when a handler resolves it, so nothing is copied for a
// record whose level is disabled. The caller must therefore not change h
// until the record has been handled. The asynchronous handler in
// internal/asynclog resolves LogValuers on the caller's goroutine before it
// queues a record, so with it h is free again as soon as the log call returns.
func HeaderAttr(key string, h http.Header) slog.Attr {
	return slog.Any(key, headerValue(h))
}

// headerValue is an [http.Header] whose log value is redacted.
type headerValue http.Header

// LogValue implements [slog.LogValuer]. It copies every value, so the result
// stays valid after the header changes.
func (h headerValue) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(h))
	for _, name := range slices.Sorted(maps.Keys(h)) {
		values, secret := h[name], IsSensitive(name)
		if len(values) == 1 {
			v := values[0]
			if secret {
				v = Redacted
			}
			attrs = append(attrs, slog.String(name, v))
			continue
		}
		values = slices.Clone(values)
		if secret {
			redactAll(values)
		}
		attrs = append(attrs, slog.Any(name, values))
	}
	return slog.GroupValue(attrs...)
}

// ReplaceAttr is a [slog.HandlerOptions] ReplaceAttr function that replaces
// the value of an attribute by [Redacted] when its key, or the name of any
// group that encloses it, is a sensitive header name. It is a second line of
// defence for attributes logged without [HeaderAttr] or [Header]; it does not
// see group attributes themselves, hence the check of the enclosing groups.
func ReplaceAttr(groups []string, a slog.Attr) slog.Attr {
	if IsSensitive(a.Key) || slices.ContainsFunc(groups, IsSensitive) {
		return slog.String(a.Key, Redacted)
	}
	return a
}
