package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to name in a new temporary directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrecedence: a flag wins over the environment, the environment over
// the file, the file over the default; a list from a higher layer replaces
// the lower one's; and each setting says where it came from.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, "fwdproxy.yaml", `
listen: 127.0.0.1:1001
deny-host: [file.example, 10.0.0.0/8]
dial-timeout: 3s
allow-private: true
`)
	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		key   string
		value string
		where string
	}{
		{"default", nil, nil, "listen", "127.0.0.1:8080", "listen"},
		{"file over default", []string{"-config", file}, nil, "listen", "127.0.0.1:1001", file + ":2: listen"},
		{"environment over file", []string{"-config", file}, []string{"FWDPROXY_LISTEN=127.0.0.1:1002"}, "listen", "127.0.0.1:1002", "FWDPROXY_LISTEN"},
		{"flag over environment", []string{"-config", file, "-listen", "127.0.0.1:1003"}, []string{"FWDPROXY_LISTEN=127.0.0.1:1002"}, "listen", "127.0.0.1:1003", "-listen"},
		{"flag over file", []string{"-config", file, "-dial-timeout", "4s"}, nil, "dial-timeout", "4s", "-dial-timeout"},
		{"file kept where nothing is over it", []string{"-config", file, "-listen", "127.0.0.1:1003"}, nil, "dial-timeout", "3s", file + ":4: dial-timeout"},
		{"file list", []string{"-config", file}, nil, "deny-host", "file.example,10.0.0.0/8", file + ":3: deny-host"},
		{"environment list replaces the file's", []string{"-config", file}, []string{"FWDPROXY_DENY_HOST=env.example"}, "deny-host", "env.example", "FWDPROXY_DENY_HOST"},
		{"flag list replaces the environment's", []string{"-config", file, "-deny-host", "a.example", "-deny-host", "b.example"}, []string{"FWDPROXY_DENY_HOST=env.example"}, "deny-host", "a.example,b.example", "-deny-host"},
		{"environment switch over the file's", []string{"-config", file}, []string{"FWDPROXY_ALLOW_PRIVATE=no"}, "allow-private", "false", "FWDPROXY_ALLOW_PRIVATE"},
		{"flag switch over the file's", []string{"-config", file, "-allow-private=false"}, nil, "allow-private", "false", "-allow-private"},
		{"file named by the environment", nil, []string{"FWDPROXY_CONFIG=" + file}, "listen", "127.0.0.1:1001", file + ":2: listen"},
		{"-config over FWDPROXY_CONFIG", []string{"-config", file}, []string{"FWDPROXY_CONFIG=/nonexistent"}, "listen", "127.0.0.1:1001", file + ":2: listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := load(tc.args, tc.env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.value(tc.key); got != tc.value {
				t.Errorf("%s = %q, want %q", tc.key, got, tc.value)
			}
			if got := l.origins[tc.key].where(tc.key); got != tc.where {
				t.Errorf("%s set at %q, want %q", tc.key, got, tc.where)
			}
		})
	}
}

// TestFileValues: what each kind of key takes in the file.
func TestFileValues(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		key  string
		want string
	}{
		{"allow-private: true", "allow-private", "true"},
		{"allow-private: yes", "allow-private", "true"},
		{"allow-private: off", "allow-private", "false"},
		{"allow-port: 8443", "allow-port", "8443"},
		{"allow-port: [8443, 8444]", "allow-port", "8443,8444"},
		{"allow-port:\n  - 8443\n  - 8444", "allow-port", "8443,8444"},
		{"auth: [\"a:p,w\"]", "auth", "a:p,w"}, // items are taken whole: a comma in a password stays
		{"deny-host: []", "deny-host", ""},
		{"rate-limit: 2.5", "rate-limit", "2.5"},
		{"rate-burst: 10", "rate-burst", "10"},
		{"dial-timeout: 1m30s", "dial-timeout", "1m30s"},
		{"max-request-body-bytes: 1048576", "max-request-body-bytes", "1MiB"},
		{"max-request-body-bytes: 64KiB", "max-request-body-bytes", "64KiB"},
		{"max-request-body-bytes: 1 MiB", "max-request-body-bytes", "1MiB"},
		{"max-request-body-bytes: 1000", "max-request-body-bytes", "1000"},
		{"capture: 0", "capture", "0"},
		{"capture: 4KiB", "capture", "4KiB"},
		{"capture: off", "capture", "off"},
		{"listen: \"[::1]:3128\"", "listen", "[::1]:3128"},
		{"log-queue-size: 10", "log-queue-size", "10"},
		{"allow-host: &h [a.example]\ndeny-host: *h", "deny-host", "a.example"},
		{"max-conns: &n 10\nmax-tunnels: *n", "max-tunnels", "10"},
		{"# only a comment", "listen", "127.0.0.1:8080"},
		{"", "listen", "127.0.0.1:8080"},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			path := writeFile(t, "f.yaml", tc.yaml)
			l, err := load([]string{"-config", path}, nil, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.value(tc.key); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

// TestFileErrors: every problem in the file is reported, each with its
// line, the key and what the key accepts.
func TestFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // the lines of the error, after "FILE:"
	}{
		{"unknown key", "listen: :1\ndns-servers: [1.1.1.1]", []string{`2: unknown key "dns-servers" (did you mean "dns-server"?)`}},
		{"underscores", "allow_private: true", []string{`1: unknown key "allow_private" (did you mean "allow-private"?)`}},
		{"nothing close", "colour: blue", []string{`1: unknown key "colour"`}},
		{"config in the file", "config: x.yaml", []string{`1: config: not a key of the file (-config or FWDPROXY_CONFIG names the file)`}},
		{"version in the file", "version: true", []string{`1: version: only on the command line`}},
		{"duration without unit", "dial-timeout: 10", []string{`1: dial-timeout: want a duration such as 10s, 1m30s or 500ms, got "10"`}},
		{"not a switch", "allow-private: maybe", []string{`1: allow-private: want true or false, got "maybe"`}},
		{"list for a scalar", "listen: [a, b]", []string{`1: listen: want a string, got a list`}},
		{"mapping for a list", "deny-host: {a: b}", []string{`1: deny-host: want a list of strings (or one string), got a mapping`}},
		{"nested list", "deny-host:\n  - a.example\n  - [b]", []string{`3: deny-host: want a list of strings (or one string), got a list`}},
		{"empty item", "deny-host: [a.example, \"\"]", []string{`1: deny-host: want a list of strings (or one string), got empty item`}},
		{"no value", "listen:", []string{`1: listen: want a string, got no value (leave the key out for the default)`}},
		{"not an integer", "max-conns: many", []string{`1: max-conns: want an integer, got "many"`}},
		{"not a number", "rate-limit: fast", []string{`1: rate-limit: want a number, got "fast"`}},
		{"bad size unit", "max-header-bytes: 64KB", []string{`1: max-header-bytes: want a size in bytes: an integer, or one with KiB, MiB or GiB (64KiB), got "64KB"`}},
		{"negative size", "max-request-body-bytes: -1", []string{`1: max-request-body-bytes: want a size in bytes: an integer, or one with KiB, MiB or GiB (64KiB), got "-1"`}},
		{"bad capture", "capture: all", []string{`1: capture: want off, or a size in bytes (0: headers only; 64KiB), got "all"`}},
		{"twice", "listen: :1\nlisten: :2", []string{`2: listen: set twice (first at line 1)`}},
		{"syntax", "listen: :1\n  deny-host: [a", []string{`2: YAML: mapping values are not allowed in this context`}},
		{"not a mapping", "- listen", []string{`1: want a mapping of settings (listen: 127.0.0.1:8080), one key per flag`}},
		{"two documents", "listen: :1\n---\nlisten: :2", []string{`2: a second YAML document; the file holds one`}},
		{"every problem", "dial-timeout: 1\nnope: 1\nmax-conns: x", []string{
			`1: dial-timeout: want a duration such as 10s, 1m30s or 500ms, got "1"`,
			`2: unknown key "nope"`,
			`3: max-conns: want an integer, got "x"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "f.yaml", tc.yaml)
			_, err := load([]string{"-config", path}, nil, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, path+":"+w)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestSettingErrors: a value that parses but is wrong (the library or the
// server refuses it) is reported where it was set: the file's line, the
// environment variable or the flag.
func TestSettingErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		args []string
		env  []string
		want string // after "FILE:" when it starts with a digit
	}{
		{"auth without colon", "auth: [alice]", nil, nil, "1: auth: want USER:PASS"},
		{"auth password not shown", "auth: [\"alice:secret\", bob]", nil, nil, "1: auth: want USER:PASS"},
		{"port", "allow-port: [8443, 0]", nil, nil, `1: allow-port: "0" is not a port number`},
		{"log level", "\nlog-level: loud", nil, nil, `2: log-level: want debug, info, warn or error, got "loud"`},
		{"log format", "log-format: xml", nil, nil, `1: log-format: want text or json, got "xml"`},
		{"listen", "listen: nowhere", nil, nil, `1: listen: want host:port, got "nowhere"`},
		{"listen port", "listen: 127.0.0.1:99999", nil, nil, `1: listen: want host:port, got "127.0.0.1:99999": no port "99999"`},
		{"metrics listen", "metrics-listen: x", nil, nil, `1: metrics-listen: want host:port, got "x"`},
		{"burst without rate", "rate-burst: 5", nil, nil, "1: rate-burst: needs -rate-limit"},
		{"bypass without CA", "mitm-bypass: a.example", nil, nil, "1: mitm-bypass: needs -mitm-ca-dir"},
		{"upstream CA", "upstream-ca: /nonexistent/ca.pem", nil, nil, "1: upstream-ca: open /nonexistent/ca.pem: no such file or directory"},
		{"deny pattern", "deny-host: [\"bad pattern!\"]", nil, nil, `1: deny-host: WithDenyHosts: "bad pattern!" is neither`},
		{"allow pattern", "allow-host: \"*.\"", nil, nil, "1: allow-host: WithAllowHosts: "},
		{"dns server", "dns-server: \"no such:port\"", nil, nil, "1: dns-server: WithDNSServers: "},
		{"zero duration", "tunnel-idle-timeout: 0s", nil, nil, "1: tunnel-idle-timeout: WithTunnelIdleTimeout: duration must be positive, got 0s"},
		{"negative conns", "max-conns: -1", nil, nil, "1: max-conns: WithMaxConns: -1 is not positive"},
		{"negative tunnels", "max-tunnels: -1", nil, nil, "1: max-tunnels: WithMaxTunnels: -1 is not positive"},
		{"idle per host over total", "max-idle-conns: 10\nmax-idle-conns-per-host: 20", nil, nil, "2: max-idle-conns-per-host: WithMaxIdleConns: need 1 <= perHost <= total, got 20, 10"},
		{"idle total under per host", "max-idle-conns: 10", nil, nil, "1: max-idle-conns: WithMaxIdleConns: need 1 <= perHost <= total, got 64, 10"},
		{"negative rate", "rate-limit: -1", nil, nil, "1: rate-limit: WithRateLimit: need a positive rate"},
		{"burst", "rate-limit: 5\nrate-burst: -1", nil, nil, "1: rate-limit: WithRateLimit: need a positive rate and a burst of at least 1, got 5 and -1"},
		{"small header limit", "max-header-bytes: 100", nil, nil, "1: max-header-bytes: WithMaxHeaderBytes: need at least 1024, got 100"},
		{"small response header limit", "max-response-header-bytes: 100", nil, nil, "1: max-response-header-bytes: WithMaxResponseHeaderBytes: "},
		{"log queue", "log-queue-size: 0", nil, nil, "1: log-queue-size: WithLogQueueSize: size must be at least 1"},
		{"flag", "", []string{"-max-conns", "-1"}, nil, "-max-conns: WithMaxConns: -1 is not positive"},
		{"flag over a good file", "max-conns: 10", []string{"-max-conns", "-1"}, nil, "-max-conns: WithMaxConns: -1 is not positive"},
		{"environment", "", nil, []string{"FWDPROXY_DENY_HOST=*."}, "FWDPROXY_DENY_HOST: WithDenyHosts: "},
		{"environment port", "allow-port: 8443", nil, []string{"FWDPROXY_ALLOW_PORT=x"}, `FWDPROXY_ALLOW_PORT: "x" is not a port number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "f.yaml", tc.yaml)
			l, err := load(append([]string{"-config", path}, tc.args...), tc.env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			err = checkBuild(l, io.Discard)
			want := tc.want
			if want[0] >= '0' && want[0] <= '9' {
				want = path + ":" + want
			}
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %v, want %q", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

// TestConfigPath: the ways to name the file, and to check one.
func TestConfigPath(t *testing.T) {
	file := writeFile(t, "f.yaml", "listen: 127.0.0.1:1")
	other := writeFile(t, "g.yaml", "listen: 127.0.0.1:2")
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		check   bool
		file    string
		wantErr string
	}{
		{"none", nil, nil, false, "", ""},
		{"-config", []string{"-config", file}, nil, false, file, ""},
		{"FWDPROXY_CONFIG", nil, []string{"FWDPROXY_CONFIG=" + file}, false, file, ""},
		{"-check-config FILE", []string{"-check-config", file}, nil, true, file, ""},
		{"-check-config=FILE", []string{"-check-config=" + file}, nil, true, file, ""},
		{"-config FILE -check-config", []string{"-config", file, "-check-config"}, nil, true, file, ""},
		{"-check-config with FWDPROXY_CONFIG", []string{"-check-config"}, []string{"FWDPROXY_CONFIG=" + file}, true, file, ""},
		{"-check-config without a file", []string{"-check-config"}, nil, false, "", "-check-config: which file?"},
		{"two files", []string{"-config", file, "-check-config", other}, nil, false, "", "name different files"},
		{"a stray argument", []string{"-config", file, "extra"}, nil, false, "", "unexpected arguments"},
		{"two files to check", []string{"-check-config", file, other}, nil, false, "", "unexpected arguments"},
		{"missing file", []string{"-config", file + ".nope"}, nil, false, "", "configuration file: open " + file + ".nope: no such file"},
		{"FWDPROXY_CHECK_CONFIG is no variable", nil, []string{"FWDPROXY_CHECK_CONFIG=" + file}, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := load(tc.args, tc.env, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.s.config != tc.file || l.s.checkConfig.on != tc.check {
				t.Errorf("file %q, check %v; want %q, %v", l.s.config, l.s.checkConfig.on, tc.file, tc.check)
			}
		})
	}
	if _, err := load([]string{"-h"}, nil, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// TestParseSize: sizes in bytes, with binary units.
func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"65536", 65536, true},
		{"64KiB", 64 << 10, true},
		{"64 KiB", 64 << 10, true},
		{"1MiB", 1 << 20, true},
		{"2GiB", 2 << 30, true},
		{"100B", 100, true},
		{"64KB", 0, false},
		{"64k", 0, false},
		{"1.5MiB", 0, false},
		{"-1", 0, false},
		{"KiB", 0, false},
		{"", 0, false},
		{"99999999GiB", 0, false},
	} {
		got, err := parseSize(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		n    byteSize
		want string
	}{{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {1536, "1536"}, {256 << 10, "256KiB"}, {3 << 20, "3MiB"}, {1 << 30, "1GiB"}} {
		if got := tc.n.String(); got != tc.want {
			t.Errorf("byteSize(%d) = %q, want %q", int64(tc.n), got, tc.want)
		}
	}
}

// TestSizesReachTheLibrary: a size given with a unit is the number of
// bytes, and the library takes it.
func TestSizesReachTheLibrary(t *testing.T) {
	path := writeFile(t, "f.yaml", "max-header-bytes: 8KiB\nrate-limit: 2.5\ncapture: 1KiB\ntunnel-idle-timeout: 90s")
	l, err := load([]string{"-config", path}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if l.s.maxHeader != 8192 || l.s.capture != (captureSize{true, 1024}) || l.s.timeouts.tunnelIdle != 90*time.Second {
		t.Errorf("settings %+v", l.s)
	}
	if err := checkBuild(l, io.Discard); err != nil {
		t.Fatal(err)
	}
}
