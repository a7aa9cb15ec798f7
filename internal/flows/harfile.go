package flows

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultHARFileBuffer is the default of [HARFileOptions.Buffer].
const DefaultHARFileBuffer = 4096

// HARFileOptions configures [OpenHARFile].
type HARFileOptions struct {
	// MaxBytes, when above 0, rotates the file once it has grown past
	// it: the full file is closed and renamed with the time added to its
	// name (flows.har becomes flows-20260102T150405.000Z.har), and a new
	// one started.
	MaxBytes int64
	// Buffer is how many flows may wait for the writer
	// (DefaultHARFileBuffer); past it flows are missed and counted.
	Buffer int
}

// HARFile writes the flows a Ring records, as the ring records them, to a
// HAR 1.2 file: for -har-file, so that every flow can be opened in a
// browser's dev tools after the fact, not only those the ring still
// holds. It subscribes to the ring, so it sees what the ring records:
// nothing while the ring is paused, body prefixes cut to the ring's
// MaxBodyBytes, headers redacted. The file is complete (valid JSON) once
// Close returns; a rotated file is complete when it is renamed.
type HARFile struct {
	path string
	opts HARFileOptions
	sub  *Subscription
	done chan struct{}

	// Owned by the writing goroutine until done is closed.
	f       *os.File
	bw      *bufio.Writer
	size    int64
	entries int
	err     error

	closeOnce sync.Once
}

// OpenHARFile creates (or truncates) the file at path and writes to it
// every flow that r records from now on, until Close.
func OpenHARFile(r *Ring, path string, opts HARFileOptions) (*HARFile, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultHARFileBuffer
	}
	h := &HARFile{path: path, opts: opts, done: make(chan struct{})}
	if err := h.open(); err != nil {
		return nil, err
	}
	h.sub = r.Subscribe(opts.Buffer)
	go h.run()
	return h, nil
}

func (h *HARFile) open() error {
	f, err := os.Create(h.path)
	if err != nil {
		return err
	}
	h.f, h.bw, h.entries = f, bufio.NewWriterSize(f, 64<<10), 0
	head := harHead()
	h.bw.Write(head)
	h.size = int64(len(head))
	return nil
}

// finish ends the current file: the tail, a flush, a sync, a close.
func (h *HARFile) finish() error {
	h.bw.WriteString(harTail)
	err := h.bw.Flush()
	if err == nil {
		err = h.f.Sync()
	}
	return errors.Join(err, h.f.Close())
}

func (h *HARFile) run() {
	defer close(h.done)
	for f := range h.sub.C() {
		if h.err != nil {
			continue // the file failed: drain until Close
		}
		cw := countingWriter{w: h.bw}
		if err := writeHAREntry(&cw, f, h.entries == 0); err != nil {
			h.err = err
			continue
		}
		h.entries++
		h.size += cw.n
		if h.opts.MaxBytes > 0 && h.size >= h.opts.MaxBytes {
			h.err = h.rotate()
		}
	}
	if h.err == nil {
		h.err = h.finish()
	} else {
		h.f.Close()
	}
}

// rotate finishes the file, renames it with the time, and starts anew.
func (h *HARFile) rotate() error {
	if err := h.finish(); err != nil {
		return err
	}
	ext := filepath.Ext(h.path)
	base := strings.TrimSuffix(h.path, ext)
	stamp := time.Now().UTC().Format("20060102T150405.000Z")
	name := base + "-" + stamp + ext
	for i := 1; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			break
		}
		name = base + "-" + stamp + "-" + strconv.Itoa(i) + ext
	}
	if err := os.Rename(h.path, name); err != nil {
		return err
	}
	return h.open()
}

// Missed is the number of flows the file missed because its writer fell
// Buffer flows behind.
func (h *HARFile) Missed() uint64 { return h.sub.Dropped() }

// Close stops following the ring, writes the flows still waiting, and
// completes the file. It returns the first error writing met; later calls
// return the same.
func (h *HARFile) Close() error {
	h.closeOnce.Do(h.sub.Close)
	<-h.done
	return h.err
}

// countingWriter counts what it passes on.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
