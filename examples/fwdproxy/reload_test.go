package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// fakeApply stands in for (*fwdproxy.Proxy).Reload: it records each call
// and returns err, or, with check set, what New says of the options.
type fakeApply struct {
	mu    sync.Mutex
	calls int
	err   error
	check bool
	got   chan struct{} // a value per call
}

func newFakeApply() *fakeApply { return &fakeApply{got: make(chan struct{}, 100)} }

func (f *fakeApply) apply(opts ...fwdproxy.Option) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.got <- struct{}{}
	if f.check {
		if err := validate(opts); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeApply) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// testServer is what a reload needs of a server started with args and env
// over the file at path, with a log to read.
type testServer struct {
	rl    *reloader
	fake  *fakeApply
	log   *countingWriter // logwriter_test.go
	level *slog.LevelVar
}

func newTestServer(t *testing.T, path string, args, env []string) *testServer {
	t.Helper()
	args = append([]string{"-config", path}, args...)
	l, err := load(args, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{fake: newFakeApply(), log: &countingWriter{}, level: new(slog.LevelVar)}
	// The test reads every line the reloader writes, Debug included
	// ("configuration file applied"); ts.level is the level the reloader
	// sets from the file, which the tests look at.
	all := new(slog.LevelVar)
	all.Set(slog.LevelDebug)
	logger, err := newLogger(l.s.logFormat, ts.log, all)
	if err != nil {
		t.Fatal(err)
	}
	sh := &shared{logger: logger}
	b, err := configure(l, sh)
	if err != nil {
		t.Fatal(err)
	}
	ts.level.Set(b.level)
	ts.rl = newReloader(l, args, env, sh, ts.level, ts.fake.apply)
	return ts
}

// lines are the log lines so far.
func (ts *testServer) lines() []string {
	_, s := ts.log.state()
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func (ts *testServer) lastLine() string { l := ts.lines(); return l[len(l)-1] }

func (ts *testServer) value(key string) string {
	ts.rl.mu.Lock()
	defer ts.rl.mu.Unlock()
	return ts.rl.running.value(key)
}

func rewrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReload: a reload applies the file with the environment and the
// command line over it, as at start; a file with any problem, or a change
// to a fixed setting, is refused whole and the running configuration stays;
// each attempt is one log line saying what happened, with the line at
// fault.
func TestReload(t *testing.T) {
	const start = "listen: 127.0.0.1:0\nallow-private: true\ndeny-host: [a.example]\nrate-limit: 10\n"
	for _, tc := range []struct {
		name     string
		args     []string
		env      []string
		edit     string
		applyErr error
		check    bool   // the fake apply checks the options as New does
		applied  bool   // apply was called
		ok       bool   // and took it
		key      string // a setting to look at after
		want     string // its value
		log      string // in the log line
	}{
		{"a change", nil, nil, "listen: 127.0.0.1:0\ndeny-host: [b.example]\nrate-limit: 10\n", nil, false, true, true, "deny-host", "b.example",
			`msg="configuration file applied" trigger=test file=FILE changed="[allow-private deny-host]"`},
		{"no change", nil, nil, start, nil, false, true, true, "deny-host", "a.example",
			`msg="configuration file applied" trigger=test file=FILE changed=[]`},
		{"a flag stays over the file", []string{"-deny-host", "flag.example"}, nil, "listen: 127.0.0.1:0\nallow-private: true\ndeny-host: [b.example]\nrate-limit: 20\n", nil, false, true, true, "deny-host", "flag.example",
			`changed=[rate-limit]`},
		{"the environment stays over the file", nil, []string{"FWDPROXY_RATE_LIMIT=5"}, "listen: 127.0.0.1:0\nallow-private: true\nrate-limit: 20\ndeny-host: [b.example]\n", nil, false, true, true, "rate-limit", "5",
			`changed=[deny-host]`},
		{"a fixed setting under a flag", []string{"-listen", "127.0.0.1:0"}, nil, "listen: 127.0.0.1:9\nallow-private: true\ndeny-host: [b.example]\n", nil, false, true, true, "deny-host", "b.example",
			`changed="[deny-host rate-limit]"`},
		{"syntax error", nil, nil, "deny-host: [b.example\n", nil, false, false, false, "deny-host", "a.example",
			`msg="reload failed; the running configuration stays" trigger=test file=FILE error="FILE:1: YAML: did not find expected ',' or ']'"`},
		{"unknown key", nil, nil, start + "deny-hosts: [b.example]\n", nil, false, false, false, "deny-host", "a.example",
			`error="FILE:5: unknown key \"deny-hosts\" (did you mean \"deny-host\"?)"`},
		{"wrong type", nil, nil, start + "dial-timeout: 10\n", nil, false, false, false, "dial-timeout", "10s",
			`error="FILE:5: dial-timeout: want a duration such as 10s, 1m30s or 500ms, got \"10\""`},
		{"invalid value", nil, nil, "listen: 127.0.0.1:0\nallow-port: [8443, 0]\ndeny-host: [b.example]\n", nil, false, false, false, "deny-host", "a.example",
			`error="FILE:2: allow-port: \"0\" is not a port number"`},
		{"invalid in the library", nil, nil, "listen: 127.0.0.1:0\nrate-limit: 10\ndeny-host: [\"bad pattern!\"]\n", nil, true, true, false, "deny-host", "a.example",
			`error="FILE:3: deny-host: WithDenyHosts: \"bad pattern!\" is neither a host pattern nor a CIDR range`},
		{"apply refuses", nil, nil, "listen: 127.0.0.1:0\ndeny-host: [b.example]\n", errors.New("fwdproxy.Reload: WithRateLimit: no"), false, true, false, "deny-host", "a.example",
			`error="rate-limit: WithRateLimit: no"`},
		{"a fixed setting", nil, nil, "listen: 127.0.0.1:1\ndeny-host: [b.example]\n", nil, false, false, false, "deny-host", "a.example",
			`error="FILE:1: listen: cannot change on reload (running with \"127.0.0.1:0\", asked for \"127.0.0.1:1\"); restart the server to change it"`},
		{"every fixed setting", nil, nil, "listen: 127.0.0.1:1\nlog-format: json\nmetrics-listen: 127.0.0.1:0\ntrace-file: t.json\nmitm-ca-dir: ca\n", nil, false, false, false, "log-format", "text",
			`error="FILE:1: listen: cannot change on reload (running with \"127.0.0.1:0\", asked for \"127.0.0.1:1\"); restart the server to change it\nFILE:3: metrics-listen: cannot change`},
		{"file deleted", nil, nil, "", nil, false, false, false, "deny-host", "a.example",
			`error="configuration file: open FILE: no such file or directory"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "fwdproxy.yaml", start)
			ts := newTestServer(t, path, tc.args, tc.env)
			ts.fake.err, ts.fake.check = tc.applyErr, tc.check
			if tc.name == "file deleted" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				rewrite(t, path, tc.edit)
			}
			err := ts.rl.reload("test")
			if (err == nil) != tc.ok || (ts.fake.count() == 1) != tc.applied {
				t.Errorf("reload: %v, %d calls of apply; want ok %v, applied %v", err, ts.fake.count(), tc.ok, tc.applied)
			}
			if got := ts.value(tc.key); got != tc.want {
				t.Errorf("%s = %q after the reload, want %q", tc.key, got, tc.want)
			}
			if n := len(ts.lines()); n != 1 {
				t.Errorf("%d log lines, want 1:\n%s", n, strings.Join(ts.lines(), "\n"))
			}
			if want := strings.ReplaceAll(tc.log, "FILE", path); !strings.Contains(ts.lastLine(), want) {
				t.Errorf("log line\n%s\nwant it to contain\n%s", ts.lastLine(), want)
			}
		})
	}
}

// TestReloadLogLevel: -log-level changes with a reload, and only with one
// that succeeds.
func TestReloadLogLevel(t *testing.T) {
	path := writeFile(t, "fwdproxy.yaml", "log-level: info\n")
	ts := newTestServer(t, path, nil, nil)
	rewrite(t, path, "log-level: debug\n")
	ts.fake.err = errors.New("refused")
	if ts.rl.reload("test") == nil || ts.level.Level() != slog.LevelInfo {
		t.Fatalf("a refused reload changed the level to %v", ts.level.Level())
	}
	ts.fake.err = nil
	if err := ts.rl.reload("test"); err != nil || ts.level.Level() != slog.LevelDebug {
		t.Fatalf("reload: %v; level %v, want debug", err, ts.level.Level())
	}
}

// TestReloadIfChanged: the file watcher's reload does nothing when the file
// holds what it held at the last attempt, and tries once when it changed,
// went missing or came back.
func TestReloadIfChanged(t *testing.T) {
	path := writeFile(t, "fwdproxy.yaml", "deny-host: a.example\n")
	ts := newTestServer(t, path, nil, nil)
	step := func(what string, do func(), wantCalls, wantLines int) {
		t.Helper()
		do()
		ts.rl.reloadIfChanged("file change")
		if ts.fake.count() != wantCalls || len(ts.lines()) != wantLines {
			t.Fatalf("%s: %d calls of apply, %d log lines; want %d, %d:\n%s", what, ts.fake.count(), len(ts.lines()), wantCalls, wantLines, strings.Join(ts.lines(), "\n"))
		}
	}
	step("same content", func() { rewrite(t, path, "deny-host: a.example\n") }, 0, 0)
	step("new content", func() { rewrite(t, path, "deny-host: b.example\n") }, 1, 1)
	step("again", func() {}, 1, 1)
	step("bad content", func() { rewrite(t, path, "deny-host: [\n") }, 1, 2)
	step("bad content again", func() {}, 1, 2)
	step("removed", func() { _ = os.Remove(path) }, 1, 3)
	step("still removed", func() {}, 1, 3)
	step("back", func() { rewrite(t, path, "deny-host: b.example\n") }, 2, 4)
	if got := ts.value("deny-host"); got != "b.example" {
		t.Errorf("deny-host %q", got)
	}
}

// TestReloadThroughProxy: a reload hands its options to a real Proxy's
// Reload, which takes a valid file and refuses an invalid one with the
// error traced to the setting at fault, the running settings kept.
func TestReloadThroughProxy(t *testing.T) {
	path := writeFile(t, "fwdproxy.yaml", "deny-host: a.example\n")
	ts := newTestServer(t, path, nil, nil)
	p, err := fwdproxy.New(fwdproxy.WithDenyHosts("a.example"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	ts.rl.apply = p.Reload
	rewrite(t, path, "deny-host: b.example\n")
	if err := ts.rl.reload("SIGHUP"); err != nil {
		t.Errorf("valid file: %v", err)
	}
	if got := p.Stats().Config.Generation; got != 2 {
		t.Errorf("generation %d after one reload, want 2", got)
	}
	rewrite(t, path, "\ndeny-host: \"*.\"\n")
	if err := ts.rl.reload("SIGHUP"); err == nil || !strings.HasPrefix(err.Error(), path+":2: deny-host: WithDenyHosts: ") {
		t.Errorf("invalid file: %v", err)
	}
	if got := ts.value("deny-host"); got != "b.example" {
		t.Errorf("deny-host %q, want the last valid file's", got)
	}
	if got := p.Stats().Config.Generation; got != 2 {
		t.Errorf("generation %d after a refused reload, want 2", got)
	}
}

// TestReloadKeepsSecrets: the reload's log line names the settings that
// changed, never their values.
func TestReloadKeepsSecrets(t *testing.T) {
	path := writeFile(t, "fwdproxy.yaml", "auth: [\"alice:old-secret\"]\n")
	ts := newTestServer(t, path, nil, nil)
	rewrite(t, path, "auth: [\"alice:new-secret\", bob]\n")
	_ = ts.rl.reload("test")
	rewrite(t, path, "auth: [\"alice:new-secret\"]\n")
	_ = ts.rl.reload("test")
	log := strings.Join(ts.lines(), "\n")
	if strings.Contains(log, "secret") || !strings.Contains(log, "changed=[auth]") {
		t.Errorf("log:\n%s", log)
	}
}

// TestChangedNamesEverySetting: a change to any setting of the file is
// seen by a reload.
func TestChangedNamesEverySetting(t *testing.T) {
	base := writeFile(t, "fwdproxy.yaml", "")
	ts := newTestServer(t, base, nil, nil)
	// A value other than the default, for each kind of flag.
	other := map[string]string{"true": "false", "false": "true"}
	for _, k := range ts.rl.running.fs.order {
		if commandOnly[k] {
			continue
		}
		fl := ts.rl.running.fs.Lookup(k)
		v, ok := other[fl.DefValue]
		if !ok {
			v = "7"
			if _, isDuration := fl.Value.(flag.Getter).Get().(time.Duration); isDuration {
				v = "7s"
			}
			if _, structured := fl.Value.(*routesFlag); structured {
				v = "[{via: [DIRECT]}]"
			}
			if _, structured := fl.Value.(*policiesFlag); structured {
				v = "[{name: p, users: [alice], rate: 7}]"
			}
		}
		l, err := load([]string{"-config", base, "-" + k + "=" + v}, nil, io.Discard)
		if err != nil {
			t.Fatalf("%s=%s: %v", k, v, err)
		}
		if got := ts.rl.changed(l); !slices.Equal(got, []string{k}) {
			t.Errorf("%s=%s: changed %v", k, v, got)
		}
	}
}
