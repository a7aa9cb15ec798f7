package redisstore

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fwdproxy/fwdproxy"
)

// replicaEnv makes the test binary a replica process: the Redis URL, then
// the port its policy lets tunnels reach, separated by a space.
const replicaEnv = "REDISSTORE_TEST_REPLICA"

// replicaLeaseTTL is the tunnel lease ttl of the replicas of
// TestReplicaKilledFreesLeases.
const replicaLeaseTTL = time.Second

// tunnelPolicy is alice's policy in TestReplicaKilledFreesLeases: 10
// concurrent tunnels to port.
func tunnelPolicy(port uint16) []fwdproxy.Option {
	return []fwdproxy.Option{fwdproxy.WithAllowPorts(port), fwdproxy.WithLeaseTTL(replicaLeaseTTL),
		fwdproxy.WithPolicies(fwdproxy.Policy{Name: "ten", Users: []string{"alice"}, MaxTunnels: 10})}
}

// runReplica serves a Proxy on a Store until killed; it prints its
// address on stdout.
func runReplica() int {
	redisURL, portText, _ := strings.Cut(os.Getenv(replicaEnv), " ")
	port, _ := strconv.Atoi(portText)
	s, err := Open(redisURL, WithLogger(discardLogger()), WithTimeout(2*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := append([]fwdproxy.Option{fwdproxy.WithLogger(discardLogger()), fwdproxy.WithAllowPrivate(), aliceAuth,
		fwdproxy.WithSharedState(s)}, tunnelPolicy(uint16(port))...)
	p, err := fwdproxy.New(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Addr().String())
	_ = p.Serve(l)
	return 0
}

// TestReplicaKilledFreesLeases: a replica process holds alice's 10
// tunnels, so the other refuses her; once it is killed with -9 (no
// release, no shutdown), its leases lapse within their ttl and the other
// replica lets her in.
func TestReplicaKilledFreesLeases(t *testing.T) {
	r := startRedis(t)
	echo := proxytestEcho(t)
	port := portOf(t, echo)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), replicaEnv+"="+r.url()+" "+strconv.Itoa(int(port)))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the replica process did not start: %v", err)
	}
	child := &replica{addr: strings.TrimSpace(line)}
	other := startReplica(t, r, nil, tunnelPolicy(port)...)

	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range 10 {
		c, _, status := child.tunnel(t, "alice", echo)
		if status != 200 {
			t.Fatalf("tunnel %d through the replica process: %d", i+1, status)
		}
		open = append(open, c)
	}
	// Renewed, the leases outlive their ttl.
	time.Sleep(2 * replicaLeaseTTL)
	if c, _, status := other.tunnel(t, "alice", echo); status != 429 {
		if c != nil {
			c.Close()
		}
		t.Fatalf("the other replica while the process holds 10: %d, want 429", status)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	_ = cmd.Wait()
	for {
		c, _, status := other.tunnel(t, "alice", echo)
		if status == 200 {
			c.Close()
			break
		}
		if status != 429 {
			t.Fatalf("after the kill: %d", status)
		}
		if time.Since(killed) > 5*replicaLeaseTTL {
			t.Fatalf("no tunnel %v after the replica was killed (lease ttl %v)", time.Since(killed), replicaLeaseTTL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	freed := time.Since(killed)
	t.Logf("the killed replica's leases were free %v after kill -9 (ttl %v)", freed.Round(time.Millisecond), replicaLeaseTTL)
	// Each lease was renewed at most a third of the ttl before the kill; the
	// last may have been renewed just before it. Allow the machine's delay.
	if freed > replicaLeaseTTL+300*time.Millisecond {
		t.Errorf("freed after %v, want within the ttl of %v", freed, replicaLeaseTTL)
	}
}
