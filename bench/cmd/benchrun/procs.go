package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process in its own process group, so that it and any
// processes it forks can be stopped together.
type proc struct {
	cmd  *exec.Cmd
	log  string        // file holding its stdout and stderr
	done chan struct{} // closed when it has exited
}

// procs tracks every process the harness started, so that all of them are
// stopped on exit and on Ctrl-C.
type procs struct {
	mu  sync.Mutex
	set map[*proc]bool
}

// start runs argv with env, its stdout and stderr going to logFile.
func (ps *procs) start(argv, env []string, logFile string) (*proc, error) {
	return ps.startWith(argv, env, logFile, nil, nil)
}

// startPiped runs argv with env and its stderr going to logFile; the
// caller writes its stdin and reads its stdout through the returned pipes,
// and closes both when done.
func (ps *procs) startPiped(argv, env []string, logFile string) (*proc, *os.File, *os.File, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, nil, err
	}
	p, err := ps.startWith(argv, env, logFile, inR, outW)
	inR.Close() // the child has its own copies
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, nil, nil, err
	}
	return p, inW, outR, nil
}

func (ps *procs) startWith(argv, env []string, logFile string, stdin, stdout *os.File) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// Pdeathsig: children die with the harness even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, log: logFile, done: make(chan struct{})}
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	if ps.set == nil {
		ps.set = map[*proc]bool{}
	}
	ps.set[p] = true
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after a grace
// period; for a process that has exited, it kills any child left in its group.
func (ps *procs) stop(p *proc) {
	if !p.exited() {
		syscall.Kill(-p.pid(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(2 * time.Second):
		}
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
	ps.mu.Lock()
	delete(ps.set, p)
	ps.mu.Unlock()
}

func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := make([]*proc, 0, len(ps.set))
	for p := range ps.set {
		all = append(all, p)
	}
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Go(func() { ps.stop(p) })
	}
	wg.Wait()
}

// tail returns the last lines of a process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " | ")
}
