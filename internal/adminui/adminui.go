// Package adminui holds what the admin pages of internal/dashboard and
// internal/flows share: the guard in front of every admin route (an optional
// bearer token, a Host check against DNS rebinding, cross-origin protection),
// the Server-Sent Events writer, and the common style sheet and script.
//
// It knows nothing of the proxy: the packages that serve pages import it,
// never the other way round.
package adminui

import (
	"embed"
	"errors"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// assets is the file system of the shared assets (admin.css, admin.js,
// favicon.svg) at its root. The page packages serve it under their own
// prefix through WithAssets, so that mounting a page never needs a second
// registration.
var assets = func() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}()

// ContentSecurityPolicy is the policy of every admin page: scripts, styles
// and connections to the admin listener only, images also as data: URLs
// (the flow inspector shows captured images that way), no frames.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// SetPageHeaders sets the headers every admin HTML page carries: its
// content type, [ContentSecurityPolicy], no caching, no sniffing, no
// framing and no referrer.
func SetPageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// FileServer serves fsys with the headers of [SetPageHeaders] that apply to
// assets (no sniffing, a short private cache) and http.FileServerFS's
// content types. Mount it with http.StripPrefix.
func FileServer(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "private, max-age=300")
		files.ServeHTTP(w, r)
	})
}

// WithAssets returns a file system that serves the files of own and, for
// names own does not hold, the shared assets: admin.css, admin.js and
// favicon.svg. Directories are not listed: FileServer answers 404 for
// them.
func WithAssets(own fs.FS) fs.FS { return union{own, assets} }

type union [2]fs.FS

// Open opens name from the first file system that holds it, refusing
// directories.
func (u union) Open(name string) (fs.File, error) {
	for _, fsys := range u {
		f, err := fsys.Open(name)
		if err == nil {
			if st, err := f.Stat(); err == nil && st.IsDir() {
				f.Close()
				return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
			}
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
