package redisstore

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// Open takes the password from the URL's user info and the database from
// its path.
func TestOpenURL(t *testing.T) {
	r := startRedis(t, "--requirepass", "s3cret")
	ctx := context.Background()
	s, err := Open("redis://:s3cret@"+r.addr()+"/2", WithLogger(discardLogger()), WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Up() {
		t.Fatal("not up with the right password")
	}
	if _, err := s.Allow(ctx, "k", Rate{PerSecond: 1, Burst: 1}); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.cli("AUTH", "s3cret"); v != "OK" {
		t.Fatalf("AUTH: %s", v)
	}

	logs := &recordingHandler{}
	bad, err := Open("redis://:wrong@"+r.addr()+"/0", WithLogger(slog.New(logs)), WithProbeInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if bad.Up() {
		t.Error("up with a wrong password")
	}
	time.Sleep(100 * time.Millisecond) // several failed probes: still one log line
	if m := logs.messages(); len(m) != 1 {
		t.Errorf("logged %q, want one line", m)
	}
	if err := bad.Ping(ctx); err == nil {
		t.Error("Ping with a wrong password succeeded")
	}

	for _, u := range []string{"http://127.0.0.1:1", "redis://127.0.0.1:1/notadb", "::"} {
		if s, err := Open(u); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	for _, o := range []Option{nil, WithTimeout(0), WithLocalShare(0), WithLocalShare(1.5), WithFailureThreshold(0),
		WithProbeInterval(0), WithCertCache(-1), WithFailurePolicy(Kind(7), FailOpen), WithFailurePolicy(Leases, Policy(9)),
		WithLogger(nil), WithCertExpiryMargin(-time.Second), WithTLSConfig(nil)} {
		if s, err := Open(r.url(), o); err == nil {
			s.Close()
			t.Errorf("Open accepted a bad option")
		}
	}
}

// rediss:// with WithTLSConfig: a Redis whose certificate a private CA
// signed.
func TestOpenTLS(t *testing.T) {
	r, conf := startRedisTLS(t)
	u := "rediss://" + r.addr() + "/0"
	s, err := Open(u, WithTLSConfig(conf), WithLogger(discardLogger()), WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Up() {
		t.Fatal("not up over TLS")
	}
	if d, err := s.Allow(context.Background(), "k", Rate{PerSecond: 1, Burst: 1}); err != nil || !d.Allowed {
		t.Fatalf("Allow over TLS: %+v, %v", d, err)
	}
	// Without the CA, the server's certificate is not trusted.
	bad, err := Open(u, WithLogger(discardLogger()), WithProbeInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if bad.Up() {
		t.Error("up with a certificate the system's roots do not trust")
	}
	if s, err := Open("redis://"+r.addr(), WithTLSConfig(conf)); err == nil {
		s.Close()
		t.Error("WithTLSConfig accepted with a redis:// URL")
	}
}

// A Store opened while Redis is not there yet works from its fallback and
// uses Redis once it answers.
func TestOpenBeforeRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s, err := Open("redis://127.0.0.1:"+strconv.Itoa(port), WithLogger(discardLogger()), WithProbeInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Up() {
		t.Fatal("up without Redis")
	}
	d, err := s.Allow(context.Background(), "k", Rate{PerSecond: 1, Burst: 1})
	if err != nil || !d.Allowed {
		t.Fatalf("Allow from the fallback: %+v, %v", d, err)
	}
	r := startRedis(t)
	r.stop()
	r.port = port
	r.start()
	waitFor(t, 2*time.Second, "Redis up", s.Up)
	if st := s.Stats(); st.StateChanges != 2 || st.Fallbacks != 1 {
		t.Errorf("stats %+v, want 2 state changes (down at Open, up) and 1 fallback", st)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := s.Allow(context.Background(), "k", Rate{PerSecond: 1, Burst: 1}); err != ErrClosed {
		t.Errorf("Allow after Close: %v, want ErrClosed", err)
	}
}
