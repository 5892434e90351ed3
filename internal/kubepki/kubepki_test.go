package kubepki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"
)

func TestBundleVerifies(t *testing.T) {
	b, err := New("test-ca", []net.IP{net.IPv4(100, 64, 0, 10), net.IPv4(10, 96, 0, 1)}, []string{"cp"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CA) {
		t.Fatal("CA PEM does not parse")
	}
	blk, _ := pem.Decode(b.Cert)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"100.64.0.10", "10.96.0.1", "kubernetes.default.svc", "cp"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("serving cert for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.0.1"}); err == nil {
		t.Error("serving cert valid for an address it was not made for")
	}
	for name, p := range map[string][]byte{"CAKey": b.CAKey, "Key": b.Key, "SAKey": b.SAKey, "SAPublic": b.SAPublic} {
		if blk, _ := pem.Decode(p); blk == nil {
			t.Errorf("%s: not PEM", name)
		}
	}
}
