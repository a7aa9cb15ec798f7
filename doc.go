// Package fwdproxy is an embeddable forward proxy: mount the *Proxy returned
// by New as an http.Handler, or run it with ListenAndServe.
package fwdproxy
