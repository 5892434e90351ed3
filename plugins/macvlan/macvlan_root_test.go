package macvlan

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/roottest"
)

// lan is a node whose uplink up0 is wired to a host "outside" (10.77.0.1,
// fd77::1) on the same L2 segment: the network macvlan pods join.
type lan struct {
	e       *nxtest.Env
	outside string
}

func newLAN(t *testing.T) *lan {
	e := nxtest.New(t, Plugin)
	_, out := roottest.NewNS(t, "outside")
	nxtest.Wire(t, e.Node, "up0", []string{"10.77.0.254/24"}, out, "eth0", []string{"10.77.0.1/24", "fd77::1/64"})
	nxtest.DefaultRoute(t, e.Node, "10.77.0.1")
	return &lan{e: e, outside: out}
}

// conf is a macvlan config with host-local IPAM over 10.77.0.0/24 (and
// fd77::/64 when v6) and a default route via the outside host.
func (l *lan) conf(network string, v6 bool, fields string) []byte {
	subnet6 := ""
	if v6 {
		subnet6 = "fd77::/64"
	}
	if fields != "" {
		fields = "," + fields
	}
	return l.e.Conf("1.1.0", network, `"type":"macvlan"`+fields, `"routes":[{"dst":"0.0.0.0/0"}]`, "10.77.0.0/24", subnet6)
}

// podLink returns the pod's ifName and the index of up0 in the node.
func podLink(t *testing.T, e *nxtest.Env, pod, ifName string) (*netlink.Macvlan, int) {
	t.Helper()
	var mv *netlink.Macvlan
	roottest.In(t, pod, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		var ok bool
		if mv, ok = l.(*netlink.Macvlan); !ok {
			return fmt.Errorf("%s is a %s", ifName, l.Type())
		}
		return nil
	})
	up := 0
	roottest.In(t, e.Node, func() error {
		l, err := netlink.LinkByName("up0")
		if err == nil {
			up = l.Attrs().Index
		}
		return err
	})
	return mv, up
}

func links(t *testing.T, path string) []string {
	t.Helper()
	var names []string
	roottest.In(t, path, func() error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	return names
}

func TestRootBridgeMode(t *testing.T) {
	l := newLAN(t)
	e := l.e
	c := l.conf("mv1", true, `"master":"up0","mtu":1400`)
	podA, podB := e.Pod(), e.Pod()
	aArgs, bArgs := e.Args(c, "ctr-a", podA, "eth0"), e.Args(c, "ctr-b", podB, "net1")
	ra, rb := e.MustAdd(aArgs), e.MustAdd(bArgs)

	if len(ra.Interfaces) != 1 || ra.Interfaces[0].Name != "eth0" || ra.Interfaces[0].Sandbox != podA || len(ra.IPs) != 2 {
		t.Fatalf("result: %+v", ra)
	}
	for _, ipc := range ra.IPs {
		if ipc.Interface == nil || *ipc.Interface != 0 {
			t.Errorf("IP %s not on interface 0", ipc.Address)
		}
	}
	mv, up := podLink(t, e, podA, "eth0")
	if mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.ParentIndex != up || mv.MTU != 1400 || mv.HardwareAddr.String() != ra.Interfaces[0].Mac {
		t.Errorf("pod link: mode %v parent %d (up0 %d) mtu %d mac %s, result mac %s", mv.Mode, mv.ParentIndex, up, mv.MTU, mv.HardwareAddr, ra.Interfaces[0].Mac)
	}

	// Pods on one master reach each other (bridge mode) and the LAN, both
	// families, and the LAN reaches them.
	for _, ip := range rb.IPs {
		if err := nxtest.Ping(podA, ip.Address.IP); err != nil {
			t.Errorf("pod A -> pod B %s: %v", ip.Address.IP, err)
		}
	}
	for _, dst := range []string{"10.77.0.1", "fd77::1"} {
		if err := nxtest.Ping(podB, net.ParseIP(dst)); err != nil {
			t.Errorf("pod B -> outside %s: %v", dst, err)
		}
	}
	if err := nxtest.Ping(l.outside, ra.IPs[0].Address.IP); err != nil {
		t.Errorf("outside -> pod A: %v", err)
	}

	// CHECK passes, then fails once the address is gone.
	chk := e.Args(nxtest.WithPrev(t, c, ra), "ctr-a", podA, "eth0")
	if err := e.Check(chk); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	roottest.In(t, podA, func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrDel(link, &netlink.Addr{IPNet: &ra.IPs[0].Address})
	})
	if err := e.Check(chk); err == nil || !strings.Contains(err.Error(), ra.IPs[0].Address.IP.String()) {
		t.Errorf("CHECK after the address was removed: %v", err)
	}
	// A config whose mode differs fails CHECK naming the modes.
	priv := e.Args(nxtest.WithPrev(t, l.conf("mv1", true, `"master":"up0","mode":"private"`), rb), "ctr-b", podB, "net1")
	if err := e.Check(priv); err == nil || !strings.Contains(err.Error(), "mode bridge, config says private") {
		t.Errorf("CHECK with another mode: %v", err)
	}

	for i := 0; i < 2; i++ {
		for _, a := range []string{"ctr-a", "ctr-b"} {
			args := aArgs
			if a == "ctr-b" {
				args = bArgs
			}
			if err := e.Del(args); err != nil {
				t.Fatalf("DEL %s (#%d): %v", a, i+1, err)
			}
		}
	}
	if got := links(t, podA); len(got) != 1 {
		t.Errorf("pod A after DEL: %v", got)
	}
	if got := e.Reservations("mv1"); len(got) != 0 {
		t.Errorf("reservations after DEL: %v", got)
	}
}

// TestRootPrivateMode: pods in private mode reach the LAN but not each
// other.
func TestRootPrivateMode(t *testing.T) {
	l := newLAN(t)
	e := l.e
	c := l.conf("mv2", false, `"master":"up0","mode":"private"`)
	podA, podB := e.Pod(), e.Pod()
	e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))
	if mv, _ := podLink(t, e, podA, "eth0"); mv.Mode != netlink.MACVLAN_MODE_PRIVATE {
		t.Errorf("mode %v", mv.Mode)
	}
	if err := nxtest.Ping(podA, net.ParseIP("10.77.0.1")); err != nil {
		t.Errorf("pod A -> outside: %v", err)
	}
	if err := nxtest.Ping(podA, rb.IPs[0].Address.IP); err == nil {
		t.Errorf("pod A reached pod B in private mode")
	}
}

// TestRootFailedAdd: every refused ADD names its field and leaves nothing:
// no interface in the pod, no reservation.
func TestRootFailedAdd(t *testing.T) {
	l := newLAN(t)
	e := l.e
	pod := e.Pod()
	for _, tc := range []struct {
		fields string
		code   uint
		want   string
	}{
		{`"master":"up0","mtu":9000`, 7, `"mtu": 9000 is above the MTU 1500 of master "up0"`},
		{`"master":"nope0"`, 7, `"master": "nope0": no such interface`},
		{`"master":"up0","mode":"passthru"`, 0, ""}, // works alone on up0
	} {
		_, err := e.Add(e.Args(l.conf("mv3", false, tc.fields), "ctr-x", pod, "eth0"))
		if tc.code == 0 {
			if err != nil {
				t.Fatalf("%s: %v", tc.fields, err)
			}
			if err := e.Del(e.Args(l.conf("mv3", false, tc.fields), "ctr-x", pod, "eth0")); err != nil {
				t.Fatal(err)
			}
			continue
		}
		te, ok := err.(*types.Error)
		if !ok || te.Code != tc.code || !strings.Contains(te.Msg, tc.want) {
			t.Errorf("%s: %v, want code %d with %q", tc.fields, err, tc.code, tc.want)
		}
		if got := links(t, pod); len(got) != 1 {
			t.Errorf("%s: pod has %v", tc.fields, got)
		}
		if got := e.Reservations("mv3"); len(got) != 0 {
			t.Errorf("%s: reservations %v", tc.fields, got)
		}
	}

	// A second attachment under the same CNI_IFNAME is code 4, and rolls
	// back its own interface and address, not the first one's.
	c := l.conf("mv3", false, `"master":"up0"`)
	r1 := e.MustAdd(e.Args(c, "ctr-1", pod, "eth0"))
	_, err := e.Add(e.Args(c, "ctr-2", pod, "eth0"))
	if te, ok := err.(*types.Error); !ok || te.Code != 4 || !strings.Contains(te.Msg, "CNI_IFNAME") {
		t.Errorf("second eth0: %v", err)
	}
	if got := links(t, pod); len(got) != 2 {
		t.Errorf("pod after the failed ADD: %v", got)
	}
	if got := e.Reservations("mv3"); len(got) != 1 || got[0] != r1.IPs[0].Address.IP.String() {
		t.Errorf("reservations after the failed ADD: %v", got)
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r1), "ctr-1", pod, "eth0")); err != nil {
		t.Errorf("first attachment after the failed ADD: %v", err)
	}

	// DEL with the namespace gone still releases the address.
	if err := netns.DeletePath(pod); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(c, "ctr-1", pod, "eth0")); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if got := e.Reservations("mv3"); len(got) != 0 {
		t.Errorf("reservations after DEL: %v", got)
	}
}

// TestRootDefaultMasterL2: without master the default route's interface is
// used; without IPAM the interface is up with no address; the MAC comes
// from runtimeConfig.
func TestRootDefaultMasterL2(t *testing.T) {
	l := newLAN(t)
	e := l.e
	c := []byte(`{"cniVersion":"1.1.0","name":"mv4","type":"macvlan","ipam":{},"runtimeConfig":{"mac":"0a:58:0a:4d:00:42"}}`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr-a", pod, "eth0"))
	if len(r.IPs) != 0 || len(r.Interfaces) != 1 || r.Interfaces[0].Mac != "0a:58:0a:4d:00:42" {
		t.Fatalf("result: %+v", r)
	}
	mv, up := podLink(t, e, pod, "eth0")
	if mv.ParentIndex != up || mv.HardwareAddr.String() != "0a:58:0a:4d:00:42" || mv.Flags&net.FlagUp == 0 {
		t.Errorf("pod link: parent %d (up0 %d) mac %s flags %v", mv.ParentIndex, up, mv.HardwareAddr, mv.Flags)
	}
	roottest.In(t, pod, func() error {
		as, err := netlink.AddrList(mv, netlink.FAMILY_V4)
		if len(as) != 0 {
			return fmt.Errorf("L2-only interface has %v", as)
		}
		return err
	})
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "eth0")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.Del(e.Args(c, "ctr-a", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
}

// TestRootLinkInContainer: the master is an interface already in the pod
// (linkInContainer), wired to its own LAN.
func TestRootLinkInContainer(t *testing.T) {
	e := nxtest.New(t, Plugin)
	pod := e.Pod()
	_, out := roottest.NewNS(t, "outside")
	nxtest.Wire(t, pod, "up1", nil, out, "eth0", []string{"10.78.0.1/24"})
	c := e.Conf("1.1.0", "mv5", `"type":"macvlan","master":"up1","linkInContainer":true`, "", "10.78.0.0/24")
	r := e.MustAdd(e.Args(c, "ctr-a", pod, "eth0"))
	if err := nxtest.Ping(pod, net.ParseIP("10.78.0.1")); err != nil {
		t.Errorf("pod -> its LAN: %v", err)
	}
	if err := nxtest.Ping(out, r.IPs[0].Address.IP); err != nil {
		t.Errorf("LAN -> pod: %v", err)
	}
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, r), "ctr-a", pod, "eth0")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// The same config without linkInContainer looks for up1 on the node.
	bad := e.Conf("1.1.0", "mv5", `"type":"macvlan","master":"up1"`, "", "10.78.0.0/24")
	if _, err := e.Add(e.Args(bad, "ctr-b", e.Pod(), "eth0")); err == nil || !strings.Contains(err.Error(), `"up1": no such interface in the node's namespace`) {
		t.Errorf("master only in the pod, linkInContainer unset: %v", err)
	}
	if err := e.Del(e.Args(c, "ctr-a", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
	if got := links(t, pod); len(got) != 2 { // lo and up1
		t.Errorf("pod after DEL: %v", got)
	}
}
