package ptp

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/sysctl"
)

// TestRootPodRouterAdvertIgnored: a pod on an IPv4-only ptp network, on a
// node that does not forward IPv6, sends router advertisements to its host
// veth; the node must not take a default route from it (issue 18: the host
// end has accept_ra=0). The control half turns accept_ra back on and sees
// the same advertisement install the route, so the packet did arrive.
func TestRootPodRouterAdvertIgnored(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptp-ra", "10.33.0.0/24", "", "")
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr-ra", pod, "eth0"))
	host := r.Interfaces[0].Name

	e.In(e.Node, func() error {
		if v, _ := sysctl.Get("net/ipv6/conf/" + host + "/accept_ra"); v != "0" {
			t.Errorf("%s accept_ra = %q, want 0", host, v)
		}
		return nil
	})
	advertise(t, e, pod)
	if rt := defaultRoute6(t, e); rt != nil {
		t.Fatalf("the pod's router advertisement gave the node a default route: %v", rt)
	}

	// Control: with accept_ra on, the same advertisement is taken.
	e.In(e.Node, func() error { return sysctl.Set("net/ipv6/conf/"+host+"/accept_ra", "1") })
	for deadline := time.Now().Add(3 * time.Second); ; {
		advertise(t, e, pod)
		if defaultRoute6(t, e) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control: no default route from the advertisement even with accept_ra=1; the test sends nothing that arrives")
		}
	}
}

// advertise sends one router advertisement (router lifetime 1800 s) from
// the pod's eth0 to all nodes, then gives the node a moment to process it.
func advertise(t *testing.T, e *nxtest.Env, pod string) {
	t.Helper()
	e.In(pod, func() error {
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		pc := ipv6.NewPacketConn(c)
		if err := pc.SetMulticastHopLimit(255); err != nil { // RFC 4861: hop limit 255
			return err
		}
		// Type 134, code 0, checksum (the kernel fills it in), cur hop
		// limit 64, flags 0, router lifetime 1800, reachable and
		// retransmit timers 0.
		ra := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
		// The pod's link-local address comes with the carrier, a moment
		// after ADD on an IPv4-only network.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, err = c.WriteTo(ra, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "eth0"})
			if err == nil || time.Now().After(deadline) {
				return err
			}
		}
	})
	time.Sleep(200 * time.Millisecond)
}

// defaultRoute6 is the node's IPv6 default route, or nil.
func defaultRoute6(t *testing.T, e *nxtest.Env) *netlink.Route {
	var found *netlink.Route
	e.In(e.Node, func() error {
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for i, rt := range rs {
			if rt.Dst == nil || rt.Dst.String() == "::/0" {
				found = &rs[i]
			}
		}
		return nil
	})
	return found
}
