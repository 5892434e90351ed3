package kernel_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/kernel"
	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/roottest"
)

// setupNode makes a namespace with an underlay veth "ul0" at 100.64.0.1/24
// and a default route, and opens a kernel.Node on it.
func setupNode(t *testing.T) (*kernel.Node, string) {
	t.Helper()
	_, path := roottest.NewNS(t, "kern")
	n, err := kernel.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	h := n.Handle()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0", MTU: 1500}, PeerName: "ul1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ul0", "ul1"} {
		l, _ := h.LinkByName(name)
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := h.LinkByName("ul0")
	a, _ := netlink.ParseAddr("100.64.0.1/24")
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("100.64.0.254")}); err != nil {
		t.Fatal(err)
	}
	return n, path
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func state(u kernel.Underlay, nodes []datastore.NodeInfo, backend string) overlay.State {
	return overlay.Compute(overlay.Local{
		Name: "a", Backend: backend, UnderlayDev: u.Dev, UnderlayIPs: u.IPs, UnderlayNets: u.Nets,
		Subnets: pfx("10.244.1.0/24"), VtepMAC: overlay.VtepMAC("a", 1).String(), VNI: 1, Port: 8472,
		MTU: u.MTU - 50, ClusterCIDRs: pfx("10.244.0.0/16"),
	}, datastore.SnapshotOf(nodes))
}

var remotes = []datastore.NodeInfo{
	{Name: "b", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, VtepMAC: overlay.VtepMAC("b", 1).String(), Subnets: pfx("10.244.2.0/24")},
	{Name: "c", UnderlayIPs: []netip.Addr{netip.MustParseAddr("100.64.9.3")}, VtepMAC: overlay.VtepMAC("c", 1).String(), Subnets: pfx("10.244.3.0/24")},
}

func TestFindUnderlay(t *testing.T) {
	n, _ := setupNode(t)
	for _, c := range []struct {
		name string
		cidr netip.Prefix
	}{{"", netip.Prefix{}}, {"ul0", netip.Prefix{}}, {"", netip.MustParsePrefix("100.64.0.0/16")}} {
		u, err := n.FindUnderlay(c.name, c.cidr)
		if err != nil {
			t.Fatal(err)
		}
		if u.Dev != "ul0" || u.MTU != 1500 || len(u.IPs) != 1 || u.IPs[0].String() != "100.64.0.1" || u.Nets[0].String() != "100.64.0.0/24" {
			t.Fatalf("%+v", u)
		}
	}
	if _, err := n.FindUnderlay("", netip.MustParsePrefix("10.0.0.0/8")); err == nil || !strings.Contains(err.Error(), "no interface has an address in 10.0.0.0/8") {
		t.Fatalf("want clear error, got %v", err)
	}
}

func dump(t *testing.T, n *kernel.Node) (routes, neigh, fdb []string) {
	t.Helper()
	h := n.Handle()
	rs, err := n.OwnRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		l, _ := h.LinkByIndex(r.LinkIndex)
		routes = append(routes, r.Dst.String()+" via "+r.Gw.String()+" dev "+l.Attrs().Name)
	}
	l, err := h.LinkByName("podnet.1")
	if err != nil {
		return
	}
	ns, _ := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	for _, e := range ns {
		if e.State == netlink.NUD_PERMANENT {
			neigh = append(neigh, e.IP.String()+" "+e.HardwareAddr.String())
		}
	}
	fs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, e := range fs {
		fdb = append(fdb, e.HardwareAddr.String()+" "+e.IP.String())
	}
	return
}

func TestApplyConvergesAndRepairs(t *testing.T) {
	n, _ := setupNode(t)
	u, err := n.FindUnderlay("ul0", netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	st := state(u, remotes, "auto")
	if err := n.Apply(st); err != nil {
		t.Fatalf("apply: %v\n%s", err, st.Render())
	}
	routes, neigh, fdb := dump(t, n)
	t.Logf("routes %v neigh %v fdb %v", routes, neigh, fdb)
	if len(routes) != 2 || len(neigh) != 1 || len(fdb) != 1 {
		t.Fatalf("after apply: routes %v neigh %v fdb %v\n%s", routes, neigh, fdb, st.Render())
	}
	l, _ := n.Handle().LinkByName("podnet.1")
	vx := l.(*netlink.Vxlan)
	if vx.Learning || vx.Port != 8472 || vx.MTU != 1450 || vx.HardwareAddr.String() != overlay.VtepMAC("a", 1).String() {
		t.Fatalf("device %+v", vx)
	}
	idx := l.Attrs().Index
	// NAT: applied once, then a no-op.
	if ch, err := n.ApplyNAT(st.NAT); err != nil || ch {
		t.Fatalf("second NAT apply changed=%v err=%v", ch, err)
	}
	// Damage: delete a route, an FDB entry; add a foreign podnet route.
	rs, _ := n.OwnRoutes()
	if err := n.Handle().RouteDel(&rs[0]); err != nil {
		t.Fatal(err)
	}
	fs, _ := n.Handle().NeighList(idx, unix.AF_BRIDGE)
	fs[0].Family, fs[0].Flags = unix.AF_BRIDGE, netlink.NTF_SELF
	if err := n.Handle().NeighDel(&fs[0]); err != nil {
		t.Fatal(err)
	}
	stale := &netlink.Route{Dst: &net.IPNet{IP: net.IP{10, 244, 9, 0}, Mask: net.CIDRMask(24, 32)}, Gw: net.IP{10, 244, 9, 0},
		LinkIndex: idx, Flags: int(netlink.FLAG_ONLINK), Protocol: overlay.RouteProtocol}
	if err := n.Handle().RouteAdd(stale); err != nil {
		t.Fatal(err)
	}
	// A route that is not ours stays.
	foreign := &netlink.Route{Dst: &net.IPNet{IP: net.IP{10, 99, 0, 0}, Mask: net.CIDRMask(16, 32)}, Gw: net.IP{100, 64, 0, 9}, LinkIndex: u.Index}
	if err := n.Handle().RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(st); err != nil {
		t.Fatal(err)
	}
	routes2, neigh2, fdb2 := dump(t, n)
	if strings.Join(routes2, ";") != strings.Join(routes, ";") || len(neigh2) != 1 || len(fdb2) != 1 {
		t.Fatalf("not repaired: routes %v neigh %v fdb %v", routes2, neigh2, fdb2)
	}
	if _, err := n.Handle().RouteListFiltered(netlink.FAMILY_V4, foreign, netlink.RT_FILTER_DST); err != nil {
		t.Fatal(err)
	}
	all, _ := n.Handle().RouteList(nil, netlink.FAMILY_V4)
	found := false
	for _, r := range all {
		found = found || (r.Dst != nil && r.Dst.String() == "10.99.0.0/16")
	}
	if !found {
		t.Fatal("foreign route removed")
	}
	// A node leaves: its route, neighbour and FDB entry go.
	st = state(u, remotes[1:], "auto")
	if err := n.Apply(st); err != nil {
		t.Fatal(err)
	}
	routes3, neigh3, fdb3 := dump(t, n)
	if len(routes3) != 1 || !strings.HasPrefix(routes3[0], "10.244.3.0/24") || len(neigh3) != 1 || len(fdb3) != 1 {
		t.Fatalf("after b left: %v %v %v", routes3, neigh3, fdb3)
	}
	// Switch to vxlan for everything: b's host-gw route becomes vxlan.
	st = state(u, remotes, "vxlan")
	if err := n.Apply(st); err != nil {
		t.Fatal(err)
	}
	routes4, neigh4, fdb4 := dump(t, n)
	if len(routes4) != 2 || len(neigh4) != 2 || len(fdb4) != 2 {
		t.Fatalf("vxlan: %v %v %v", routes4, neigh4, fdb4)
	}
	for _, r := range routes4 {
		if !strings.HasSuffix(r, "dev podnet.1") {
			t.Fatalf("route %s not over vxlan", r)
		}
	}
}

func TestEnsureDeviceAdoptsAndReplaces(t *testing.T) {
	n, _ := setupNode(t)
	u, _ := n.FindUnderlay("ul0", netip.Prefix{})
	d := *state(u, nil, "vxlan").Device
	l1, err := n.EnsureDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := n.EnsureDevice(d)
	if err != nil || l2.Attrs().Index != l1.Attrs().Index {
		t.Fatalf("not adopted: %v %d/%d", err, l1.Attrs().Index, l2.Attrs().Index)
	}
	d.MTU = 1400 // adopt and fix MTU in place
	l3, err := n.EnsureDevice(d)
	if err != nil || l3.Attrs().Index != l1.Attrs().Index || l3.Attrs().MTU != 1400 {
		t.Fatalf("mtu: %v", err)
	}
	d.Port = 4789 // wrong port: replaced
	l4, err := n.EnsureDevice(d)
	if err != nil || l4.Attrs().Index == l1.Attrs().Index || l4.(*netlink.Vxlan).Port != 4789 {
		t.Fatalf("not replaced: %v", err)
	}
	// A non-vxlan link with our name is replaced too.
	h := n.Handle()
	h.LinkDel(l4)
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "podnet.1"}}); err != nil {
		t.Fatal(err)
	}
	l5, err := n.EnsureDevice(d)
	if err != nil || l5.Type() != "vxlan" {
		t.Fatalf("bridge not replaced: %v", err)
	}
}

func TestForwarding(t *testing.T) {
	n, path := setupNode(t)
	if err := n.EnableForwarding(true, true); err != nil {
		t.Fatal(err)
	}
	roottest.In(t, path, func() error {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			b, err := readFile(f)
			if err != nil || strings.TrimSpace(b) != "1" {
				t.Errorf("%s = %q %v", f, b, err)
			}
		}
		return nil
	})
}

// A remote node that comes back with a new underlay address and a new MAC
// (re-installed) is re-pointed, leaving no stale entry behind.
func TestRemoteChangesAddressAndMAC(t *testing.T) {
	n, _ := setupNode(t)
	u, _ := n.FindUnderlay("ul0", netip.Prefix{})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(n.Apply(state(u, remotes, "vxlan")))
	moved := append([]datastore.NodeInfo{}, remotes...)
	moved[0].UnderlayIPs = []netip.Addr{netip.MustParseAddr("100.64.0.22")}
	moved[1].VtepMAC = "02:11:22:33:44:55"
	must(n.Apply(state(u, moved, "vxlan")))
	_, neigh, fdb := dump(t, n)
	got := strings.Join(append(neigh, fdb...), ";")
	want := []string{
		"10.244.2.0 " + remotes[0].VtepMAC, "10.244.3.0 02:11:22:33:44:55",
		remotes[0].VtepMAC + " 100.64.0.22", "02:11:22:33:44:55 100.64.9.3",
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in %s", w, got)
		}
	}
	if len(neigh) != 2 || len(fdb) != 2 {
		t.Fatalf("stale entries left: neigh %v fdb %v", neigh, fdb)
	}
}
