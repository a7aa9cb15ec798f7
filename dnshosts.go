package fwdproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// hostsCheckInterval is how often, at most, the hosts file is checked
	// for changes.
	hostsCheckInterval = 5 * time.Second
	// maxHostsFileSize bounds how much of a hosts file is read.
	maxHostsFileSize = 16 << 20
)

// hostsFile answers names from a hosts(5) file, re-reading it when it changes.
type hostsFile struct {
	path      string
	table     atomic.Pointer[hostsTable]
	nextCheck atomic.Int64 // Resolver.clock reading after which the file is checked again
	reload    sync.Mutex   // held by the one caller checking the file
}

// hostsTable is one immutable reading of a hosts file.
type hostsTable struct {
	byName  map[string][]netip.Addr
	modTime time.Time
	size    int64
}

// newHostsFile reads the hosts file at path. A missing file is an empty
// table; other read errors are returned when strict, ignored otherwise.
func newHostsFile(path string, strict bool, now time.Duration) (*hostsFile, error) {
	h := &hostsFile{path: path}
	t, err := readHostsFile(path, nil)
	if err != nil {
		if strict {
			return nil, fmt.Errorf("fwdproxy: WithHostsFile: %w", err)
		}
		t = &hostsTable{}
	}
	h.table.Store(t)
	h.nextCheck.Store(int64(now + hostsCheckInterval))
	return h, nil
}

// lookup returns the addresses listed for name, a normalised host name, or
// nil. The slice is shared and must not be modified.
func (h *hostsFile) lookup(name string, now time.Duration) []netip.Addr {
	if int64(now) >= h.nextCheck.Load() {
		h.refresh(now)
	}
	return h.table.Load().byName[name]
}

// refresh re-reads the file if it changed. Callers arriving while another
// one checks use the current table rather than wait.
func (h *hostsFile) refresh(now time.Duration) {
	if !h.reload.TryLock() {
		return
	}
	defer h.reload.Unlock()
	if int64(now) < h.nextCheck.Load() {
		return
	}
	h.nextCheck.Store(int64(now + hostsCheckInterval))
	if t, err := readHostsFile(h.path, h.table.Load()); err == nil {
		h.table.Store(t)
	}
}

// readHostsFile parses the file at path, or returns old when the file's
// modification time and size are those of old.
func readHostsFile(path string, old *hostsTable) (*hostsTable, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &hostsTable{}, nil
	}
	if err != nil {
		return nil, err
	}
	if old != nil && old.byName != nil && fi.ModTime().Equal(old.modTime) && fi.Size() == old.size {
		return old, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHostsFileSize))
	if err != nil {
		return nil, err
	}
	return &hostsTable{byName: parseHosts(data), modTime: fi.ModTime(), size: fi.Size()}, nil
}

// parseHosts parses hosts(5) content: an IP address followed by names, with
// "#" starting a comment. Lines with an invalid address are skipped. Names
// are normalised like looked-up names; invalid names are skipped.
func parseHosts(data []byte) map[string][]netip.Addr {
	m := make(map[string][]netip.Addr)
	for line := range bytes.Lines(data) {
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := bytes.Fields(line)
		if len(fields) < 2 {
			continue
		}
		addr, err := netip.ParseAddr(string(fields[0]))
		if err != nil {
			continue
		}
		for _, f := range fields[1:] {
			name, kind := normalizeHost(string(f))
			if kind != hostName {
				continue
			}
			if !slices.Contains(m[name], addr) {
				m[name] = append(m[name], addr)
			}
		}
	}
	return m
}
