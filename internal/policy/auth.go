package policy

import (
	"encoding/base64"
	"strings"
)

// ParseBasic parses a Proxy-Authorization header value carrying Basic
// credentials (RFC 7617): the scheme "Basic" in any case, one or more spaces
// or tabs, then the base64 of "user:pass". Surrounding spaces and tabs are
// ignored. The encoding is strict: the standard alphabet with its '='
// padding, no line breaks, canonical trailing bits. The user part ends at
// the first ':', so the password may hold colons. Either part may be empty,
// but neither may hold control characters (bytes below 0x20, and 0x7f);
// other bytes are returned as they are, without UTF-8 validation.
func ParseBasic(header string) (user, pass string, ok bool) {
	h := strings.Trim(header, " \t")
	const scheme = "basic"
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", "", false
	}
	token := strings.TrimLeft(h[len(scheme):], " \t")
	if len(token) == len(h)-len(scheme) || strings.ContainsAny(token, "\r\n") {
		return "", "", false // no space after the scheme, or a line break
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(token)
	if err != nil {
		return "", "", false
	}
	for _, c := range raw {
		if c < 0x20 || c == 0x7f {
			return "", "", false
		}
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", false
	}
	return user, pass, true
}
