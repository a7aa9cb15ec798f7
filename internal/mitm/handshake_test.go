package mitm

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// handshake runs a TLS handshake over loopback TCP between a server using
// iss.TLSConfig(serverProtos...) with connectHost in its handshake context
// (if not empty) and a client using cfg. It returns the client's connection
// state and both sides' errors.
func handshake(t *testing.T, iss *Issuer, connectHost string, serverProtos []string, cfg *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if connectHost != "" {
		ctx = WithConnectHost(ctx, connectHost)
	}
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		serverErr <- tls.Server(c, iss.TLSConfig(serverProtos...)).HandshakeContext(ctx)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, cfg)
	clientErr := tc.HandshakeContext(ctx)
	return tc.ConnectionState(), clientErr, <-serverErr
}

func TestHandshake(t *testing.T) {
	iss, ca := newIssuer(t)
	tests := []struct {
		name                     string
		serverName, connectHost  string   // client's ServerName (no SNI for IPs), the CONNECT host
		serverProtos, clientALPN []string // offered by each side
		wantDNS, wantIP          string   // leaf SAN
		wantALPN                 string
		wantServerErr            string // if the handshake must fail
	}{
		{name: "SNI", serverName: "example.com", connectHost: "192.0.2.1", wantDNS: "example.com"},
		{name: "SNI without CONNECT host", serverName: "www.example.com", wantDNS: "www.example.com"},
		{name: "no SNI, IPv4", serverName: "192.0.2.1", connectHost: "192.0.2.1", wantIP: "192.0.2.1"},
		{name: "no SNI, IPv6", serverName: "2001:db8::1", connectHost: "2001:db8::1", wantIP: "2001:db8::1"},
		{name: "no SNI, no CONNECT host", serverName: "192.0.2.1", wantServerErr: "no SNI"},
		{name: "ALPN h2", serverName: "example.com", serverProtos: []string{"h2", "http/1.1"}, clientALPN: []string{"h2", "http/1.1"}, wantDNS: "example.com", wantALPN: "h2"},
		{name: "ALPN http/1.1", serverName: "example.com", serverProtos: []string{"h2", "http/1.1"}, clientALPN: []string{"http/1.1"}, wantDNS: "example.com", wantALPN: "http/1.1"},
		{name: "ALPN not offered by server", serverName: "example.com", clientALPN: []string{"h2"}, wantDNS: "example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: tt.serverName, RootCAs: caPool(ca), NextProtos: tt.clientALPN}
			st, clientErr, serverErr := handshake(t, iss, tt.connectHost, tt.serverProtos, cfg)
			if tt.wantServerErr != "" {
				if serverErr == nil || !strings.Contains(serverErr.Error(), tt.wantServerErr) || clientErr == nil {
					t.Errorf("server err %v, client err %v; want server err containing %q", serverErr, clientErr, tt.wantServerErr)
				}
				return
			}
			if clientErr != nil || serverErr != nil {
				t.Fatalf("client err %v, server err %v", clientErr, serverErr)
			}
			leaf := st.PeerCertificates[0]
			if tt.wantDNS != "" && !slices.Equal(leaf.DNSNames, []string{tt.wantDNS}) {
				t.Errorf("DNS SANs %v, want %s", leaf.DNSNames, tt.wantDNS)
			}
			if tt.wantIP != "" && (len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != tt.wantIP) {
				t.Errorf("IP SANs %v, want %s", leaf.IPAddresses, tt.wantIP)
			}
			if len(st.VerifiedChains) == 0 || !st.VerifiedChains[0][len(st.VerifiedChains[0])-1].Equal(ca.Leaf) {
				t.Error("chain not verified up to the CA")
			}
			if st.NegotiatedProtocol != tt.wantALPN {
				t.Errorf("ALPN %q, want %q", st.NegotiatedProtocol, tt.wantALPN)
			}
		})
	}
}

func TestGetCertificateWithoutContext(t *testing.T) {
	iss, _ := newIssuer(t)
	c, err := iss.GetCertificate(&tls.ClientHelloInfo{ServerName: "example.com"})
	if err != nil || c.Leaf.DNSNames[0] != "example.com" {
		t.Errorf("err %v", err)
	}
	if _, err := iss.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("no SNI, no context: no error")
	}
}
