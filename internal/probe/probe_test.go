package probe

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/roottest"
)

// pair joins two fresh namespaces with a veth and gives them 10.250.0.1/24
// and 10.250.0.2/24.
func pair(t *testing.T) (a, b string) {
	_, a = roottest.NewNS(t, "pra")
	_, b = roottest.NewNS(t, "prb")
	hb, err := netns.GetFromPath(b)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	roottest.In(t, a, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(hb)}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.250.0.1/24")
		if err := netlink.AddrAdd(v, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	roottest.In(t, b, func() error {
		v, err := netlink.LinkByName("vb")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.250.0.2/24")
		if err := netlink.AddrAdd(v, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	return a, b
}

func TestPingTCPUDP(t *testing.T) {
	a, b := pair(t)
	if _, err := Ping(a, net.ParseIP("10.250.0.2"), 2*time.Second); err != nil {
		t.Fatalf("ping a->b: %v", err)
	}
	if _, err := Ping(a, net.ParseIP("10.250.0.9"), 300*time.Millisecond); err == nil {
		t.Fatal("ping to an absent address succeeded")
	}
	l, err := Listen(b, "0.0.0.0:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, proto := range []string{"tcp", "udp"} {
		from, err := Exchange(a, proto, "10.250.0.2:7777", 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if from != "10.250.0.1" {
			t.Fatalf("%s: server saw %s, want 10.250.0.1", proto, from)
		}
	}
	// Nothing listens in a: the TCP exchange must fail.
	if _, err := Exchange(b, "tcp", "10.250.0.1:7777", 500*time.Millisecond); err == nil {
		t.Fatal("tcp to a closed port succeeded")
	}
}
