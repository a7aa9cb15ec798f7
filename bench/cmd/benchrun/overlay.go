package main

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// freeMemSource is added to the example server's package main when the
// harness builds it (go build -overlay; the source tree is not changed): on
// SIGUSR1 it collects garbage and returns the freed memory to the system,
// as gopeer does, for the idle scenarios' "forced" reading. Nothing else
// in the server changes, and nothing runs until the signal comes.
const freeMemSource = `package main

// Added by bench/cmd/benchrun's build overlay; not part of fwdproxy.

import (
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func init() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		for range ch {
			debug.FreeOSMemory()
		}
	}()
}
`

// writeFreeMemOverlay writes freeMemSource and an overlay file that adds it
// to ./examples/fwdproxy of every given fwdproxy source tree, and returns
// the overlay file's path.
func writeFreeMemOverlay(tmp string, srcs ...string) (string, error) {
	file := filepath.Join(tmp, "benchrun_freemem.go")
	if err := os.WriteFile(file, []byte(freeMemSource), 0o644); err != nil {
		return "", err
	}
	replace := map[string]string{}
	for _, src := range srcs {
		if src == "" {
			continue
		}
		abs, err := filepath.Abs(src)
		if err != nil {
			return "", err
		}
		replace[filepath.Join(abs, "examples", "fwdproxy", "zz_benchrun_freemem.go")] = file
	}
	b, err := json.Marshal(struct{ Replace map[string]string }{replace})
	if err != nil {
		return "", err
	}
	overlay := filepath.Join(tmp, "overlay.json")
	return overlay, os.WriteFile(overlay, b, 0o644)
}
