package netlinkx

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/roottest"
)

func TestPure(t *testing.T) {
	if n := RandomHostVethName(); !regexp.MustCompile(`^veth[0-9a-f]{8}$`).MatchString(n) {
		t.Errorf("veth name %q", n)
	}
	m := RandomMAC()
	if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("MAC %s is not local unicast", m)
	}
	ip, n, _ := net.ParseCIDR("10.1.2.3/24")
	n.IP = ip
	if s := Subnet(*n).String(); s != "10.1.2.0/24" {
		t.Errorf("subnet %s", s)
	}
	if s := HostNet(net.ParseIP("fd00::1")).String(); s != "fd00::1/128" {
		t.Errorf("hostnet %s", s)
	}
	if !IsDefault(nil) || !IsDefault(DefaultNet(net.ParseIP("fd00::1"))) || IsDefault(n) {
		t.Error("IsDefault")
	}
	for _, bad := range []string{"", "0123456789abcdef", "a/b", "a b", ".", "é"} {
		if ValidIfName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := ValidIfName("eth0.100"); err != nil {
		t.Error(err)
	}
	_, d, _ := net.ParseCIDR("10.9.0.0/16")
	routes := []netlink.Route{
		{Family: netlink.FAMILY_V4, Dst: d, Gw: net.ParseIP("10.1.2.1")},
		{Family: netlink.FAMILY_V4, Dst: nil, Gw: net.ParseIP("10.1.2.1")},
	}
	for _, c := range []struct {
		w    RouteWant
		want bool
	}{
		{RouteWant{Dst: d}, true},
		{RouteWant{Dst: d, GW: net.ParseIP("10.1.2.1")}, true},
		{RouteWant{Dst: d, GW: net.ParseIP("10.1.2.9")}, false},
		{RouteWant{Dst: DefaultNet(net.IPv4(1, 1, 1, 1))}, true},
		{RouteWant{Dst: DefaultNet(net.ParseIP("fd00::1"))}, false},
	} {
		if got := hasRoute(routes, c.w); got != c.want {
			t.Errorf("hasRoute(%s) = %v", c.w, got)
		}
	}
}

func TestRootVethBridgeAddrs(t *testing.T) {
	_, nodePath := roottest.NewNS(t, "nlx-node")
	_, podPath := roottest.NewNS(t, "nlx-pod")
	podNS, err := netns.GetFromPath(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	roottest.In(t, nodePath, func() error {
		h, err := NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		ph, err := NewHandleAt(podNS)
		if err != nil {
			return err
		}
		defer ph.Close()

		// A non-bridge link with the name is refused.
		if err := h.LinkAdd(netlink.NewVeth(netlink.LinkAttrs{Name: "notbr", TxQLen: -1})); err == nil {
			if _, _, err := EnsureBridge(h, Bridge{Name: "notbr"}); err == nil || !strings.Contains(err.Error(), "not a bridge") {
				t.Errorf("EnsureBridge on a veth: %v", err)
			}
		}
		br, created, err := EnsureBridge(h, Bridge{Name: "br9", MTU: 1450})
		if err != nil || !created {
			t.Fatalf("EnsureBridge: %v created=%v", err, created)
		}
		br2, created, err := EnsureBridge(h, Bridge{Name: "br9"})
		if err != nil || created || br2.Index != br.Index {
			t.Fatalf("adopt: %v created=%v", err, created)
		}
		mac := net.HardwareAddr{2, 1, 2, 3, 4, 5}
		host, pod, err := CreateVethPair(h, ph, Veth{PodName: "eth0", PodNS: podNS, MTU: 1450, PodMAC: mac, MasterIndex: br.Index})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Attrs().HardwareAddr.String() != mac.String() || pod.Attrs().MTU != 1450 || pod.Attrs().ParentIndex != host.Index {
			t.Errorf("pod end %+v", pod.Attrs())
		}
		l, err := h.LinkByName(host.Name)
		if err != nil || l.Attrs().MasterIndex != br.Index || l.Attrs().HardwareAddr.String() != host.HardwareAddr.String() {
			t.Errorf("host end %+v %v", l.Attrs(), err)
		}
		// Same pod name again: ErrPodIfExists, nothing left behind.
		if _, _, err := CreateVethPair(h, ph, Veth{PodName: "eth0", PodNS: podNS}); err == nil || !strings.Contains(err.Error(), ErrPodIfExists.Error()) {
			t.Errorf("second eth0: %v", err)
		}
		// Gateway addresses: conflict without force, replace with force.
		gw := net.IPNet{IP: net.IPv4(10, 9, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}
		if added, err := EnsureGatewayAddr(h, br, gw, nil, false); err != nil || !added {
			t.Errorf("first gateway: %v %v", added, err)
		}
		if added, err := EnsureGatewayAddr(h, br, gw, nil, false); err != nil || added {
			t.Errorf("same gateway again: %v %v", added, err)
		}
		gw2 := net.IPNet{IP: net.IPv4(10, 8, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}
		if _, err := EnsureGatewayAddr(h, br, gw2, nil, false); err == nil {
			t.Error("conflicting gateway accepted without force")
		}
		if _, err := EnsureGatewayAddr(h, br, gw2, nil, true); err != nil {
			t.Error(err)
		}
		if err := CheckAddrs(h, br, []net.IPNet{gw2}); err != nil {
			t.Error(err)
		}
		if err := CheckAddrs(h, br, []net.IPNet{gw}); err == nil {
			t.Error("forced-out address still there")
		}
		if ok, err := WaitOperUp(h, host.Index, 0); err != nil || ok {
			t.Errorf("host end up with the pod end down: %v %v", ok, err)
		}
		if existed, err := DelLinkByName(ph, "eth0"); err != nil || !existed {
			t.Errorf("delete: %v %v", existed, err)
		}
		if existed, err := DelLinkByName(ph, "eth0"); err != nil || existed {
			t.Errorf("delete again: %v %v", existed, err)
		}
		return nil
	})
}

func TestOpenNSGone(t *testing.T) {
	if _, gone, err := OpenNS("/nonexistent/netns"); !gone || err != nil {
		t.Errorf("gone=%v err=%v", gone, err)
	}
	if _, gone, err := OpenNS("/proc/self/status"); !gone || err != nil {
		t.Errorf("regular file: gone=%v err=%v", gone, err)
	}
}
