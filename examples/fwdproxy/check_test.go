package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestCheckConfigCommand: -check-config exits 0 on a valid file and 1 on a
// bad one, printing each problem as FILE:LINE: key: problem; it binds
// nothing and creates no CA nor trace file; and the server started with the same file
// stops with the same problems.
func TestCheckConfigCommand(t *testing.T) {
	bin := build(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	caDir := filepath.Join(t.TempDir(), "ca")
	traceFile := filepath.Join(t.TempDir(), "trace.json")
	valid := writeFile(t, "valid.yaml", "listen: "+busy.Addr().String()+"\nmitm-ca-dir: "+caDir+"\nmetrics-listen: "+busy.Addr().String()+"\ntrace-file: "+traceFile+"\n")
	bad := writeFile(t, "bad.yaml", "listen: 127.0.0.1:0\ndeny-host: [\"bad pattern!\"]\nallow-port: 0\nnope: 1\n")
	badValues := writeFile(t, "bad-values.yaml", "listen: 127.0.0.1:0\ndeny-host: [\"bad pattern!\"]\nallow-port: 0\n")
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		code   int
		stdout string
		stderr string
	}{
		{"valid", []string{"-check-config", valid}, nil, 0, valid + ": the server would create a TLS interception CA in " + caDir + "\n" + valid + ": configuration ok\n", ""},
		{"valid with -config", []string{"-config", valid, "-check-config"}, nil, 0, valid + ": the server would create a TLS interception CA in " + caDir + "\n" + valid + ": configuration ok\n", ""},
		{"a flag after the file", []string{"-check-config", valid, "-max-conns=0"}, nil, 1, "", "unexpected arguments"}, // flags go first
		{"flag over the file", []string{"-max-conns=-1", "-check-config", valid}, nil, 1, "", "-max-conns: WithMaxConns: -1 is not positive\n"},
		{"environment over the file", []string{"-check-config", valid}, []string{"FWDPROXY_MAX_TUNNELS=-1"}, 1, "", "FWDPROXY_MAX_TUNNELS: WithMaxTunnels: -1 is not positive\n"},
		{"unknown key", []string{"-check-config", bad}, nil, 1, "", bad + ":4: unknown key \"nope\"\n"},
		{"bad values", []string{"-check-config", badValues}, nil, 1, "",
			badValues + ":3: allow-port: \"0\" is not a port number\n"},
		{"invalid in the library", []string{"-allow-port", "8443", "-check-config", badValues}, nil, 1, "",
			badValues + ":2: deny-host: WithDenyHosts: \"bad pattern!\" is neither a host pattern nor a CIDR range"},
		{"missing", []string{"-check-config", valid + ".nope"}, nil, 1, "", "configuration file: open " + valid + ".nope: no such file or directory\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tc.code || stdout.String() != tc.stdout && tc.stdout != "" || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant %d, %q, and stderr containing %q", code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
	for _, p := range []string{caDir, traceFile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("-check-config created %s: %v", p, err)
		}
	}

	// The server agrees: it stops on the same file with the same lines.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-config", badValues, "-allow-port", "8443").CombinedOutput()
	if want := "fwdproxy: " + badValues + ":2: deny-host: WithDenyHosts: \"bad pattern!\""; !strings.Contains(string(out), want) {
		t.Errorf("server on the bad file: %q, want %q", out, want)
	}
}

// TestVersionFlag: -version prints the version and exits 0.
func TestVersionFlag(t *testing.T) {
	bin := build(t)
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^fwdproxy (\(devel\)|v\S+)( revision [0-9a-f]+( \(modified\))?)? go1\.\S+\n$`).Match(out) {
		t.Errorf("-version printed %q", out)
	}
}

// TestVersion: what -version says for the builds there are.
func TestVersion(t *testing.T) {
	const rev = "0c9ba6b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7"
	for _, tc := range []struct {
		name     string
		version  string
		settings []debug.BuildSetting
		want     string
	}{
		{"from the tree", "(devel)", nil, "fwdproxy (devel) go1.26.0"},
		{"from the tree, with VCS", "(devel)", []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}, "fwdproxy (devel) revision " + rev + " (modified) go1.26.0"},
		{"go install @version", "v1.2.3", nil, "fwdproxy v1.2.3 go1.26.0"},
		{"pseudo-version", "v0.0.0-20260102030405-0c9ba6b1d2e3", []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}, "fwdproxy v0.0.0-20260102030405-0c9ba6b1d2e3 go1.26.0"},
		{"no version", "", nil, "fwdproxy (devel) go1.26.0"},
	} {
		bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/fwdproxy/fwdproxy/examples", Version: tc.version}, Settings: tc.settings}
		if got := version(bi, true); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := version(nil, false); got != "fwdproxy (unknown version)" {
		t.Errorf("no build info: %q", got)
	}
}
