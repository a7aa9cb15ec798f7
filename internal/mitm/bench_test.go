package mitm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"
)

func BenchmarkMint(b *testing.B) {
	for _, bm := range []struct {
		name   string
		genKey func() (crypto.Signer, error)
	}{
		{"ecdsa-p256", generateP256},
		{"rsa-2048", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			iss, _ := newIssuer(b)
			iss.genKey = bm.genKey
			b.ReportAllocs()
			for b.Loop() {
				if _, err := iss.mint("example.com", netip.Addr{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCertificateCached(b *testing.B) {
	iss, _ := newIssuer(b)
	ctx := context.Background()
	if _, err := iss.Certificate(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Certificate(ctx, "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshakeCached measures a full (not resumed) TLS 1.3 handshake,
// both sides, over loopback TCP with the leaf already cached; connection
// setup is included.
func BenchmarkHandshakeCached(b *testing.B) {
	iss, ca := newIssuer(b)
	srvCfg := iss.TLSConfig("h2", "http/1.1")
	cliCfg := &tls.Config{ServerName: "example.com", RootCAs: caPool(ca), NextProtos: []string{"h2", "http/1.1"}}
	ctx := WithConnectHost(context.Background(), "example.com")
	if _, err := iss.Certificate(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	results := make(chan error)
	b.Cleanup(func() {
		ln.Close()
		for range results { // until the server loop ends
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(results)
				return
			}
			err = tls.Server(c, srvCfg).HandshakeContext(ctx)
			c.Close()
			results <- err
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		err = tls.Client(c, cliCfg).HandshakeContext(ctx)
		if serr := <-results; err == nil {
			err = serr
		}
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	if st := iss.Stats(); st.Mints != 1 {
		b.Errorf("stats %+v, want a single mint", st)
	}
}
