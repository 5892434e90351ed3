package nxtest

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/roottest"
)

// Wire joins two test namespaces with a veth pair: aName in aPath with
// addresses aAddrs, bName in bPath with bAddrs (CIDR strings, no DAD), both
// up. It stands for a cable: a node's uplink to a switch or a host outside.
func Wire(t testing.TB, aPath, aName string, aAddrs []string, bPath, bName string, bAddrs []string) {
	t.Helper()
	roottest.In(t, aPath, func() error {
		bNS, gone, err := netlinkx.OpenNS(bPath)
		if err != nil || gone {
			return err
		}
		defer bNS.Close()
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(int(bNS))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return upWithAddrs(aName, aAddrs)
	})
	roottest.In(t, bPath, func() error { return upWithAddrs(bName, bAddrs) })
}

// upWithAddrs runs in the link's namespace.
func upWithAddrs(ifName string, addrs []string) error {
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ip, ipn, err := net.ParseCIDR(a)
		if err != nil {
			return err
		}
		ipn.IP = ip
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(l)
}

// DefaultRoute adds a default route via gw in the namespace at path.
func DefaultRoute(t testing.TB, path string, gw string) {
	t.Helper()
	roottest.In(t, path, func() error {
		ip := net.ParseIP(gw)
		return netlink.RouteAdd(&netlink.Route{Dst: netlinkx.DefaultNet(ip), Gw: ip})
	})
}
