package upstream

import "net/http"

// MayRetry reports whether a request that failed on one upstream may be
// tried on the next one, from what happened on the failed attempt:
//
//   - CONNECT: yes. A tunnel is retried until one is established; the
//     client's bytes flow only after that, and then there is no retry.
//   - nothing of the request was written (sent false): yes.
//   - some response byte came back (responseStarted): no. The upstream
//     or the origin has acted on it and answered.
//   - otherwise, only an idempotent request: GET, HEAD, OPTIONS, TRACE,
//     PUT, DELETE (RFC 9110 §9.2.2), or any request with an
//     Idempotency-Key or X-Idempotency-Key field (present, even if
//     empty, as net/http's Transport treats them).
//
// A non-idempotent request whose bytes went out is never replayed. When
// sent is true the caller must also be able to send the body again
// (http.Request.GetBody, or a body it kept); MayRetry cannot know that.
func MayRetry(method string, header http.Header, sent, responseStarted bool) bool {
	if method == http.MethodConnect {
		return true
	}
	if !sent {
		return true
	}
	if responseStarted {
		return false
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	if _, ok := header["Idempotency-Key"]; ok {
		return true
	}
	_, ok := header["X-Idempotency-Key"]
	return ok
}
