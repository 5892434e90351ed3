package bridge

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/sysctl"
)

// conf builds a bridge config with a host-local IPAM over subnet (and
// subnet6 when set) in env's data dir; extra is spliced in as fields.
func conf(e *nxtest.Env, ver, network, subnet, subnet6, extra string) []byte {
	fields := `"type":"bridge","bridge":"br0"`
	if extra != "" {
		fields += "," + extra
	}
	return e.Conf(ver, network, fields, "", subnet, subnet6)
}

func TestRootTwoPodsOneBridge(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "net1", "10.11.0.0/24", "fd11::/64", `"isDefaultGateway":true,"mtu":1400`)
	podA, podB := e.Pod(), e.Pod()
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))

	// Result shape: [bridge, host veth, pod veth], IPs on index 2.
	if len(ra.Interfaces) != 3 || ra.Interfaces[0].Name != "br0" || !strings.HasPrefix(ra.Interfaces[1].Name, "veth") ||
		ra.Interfaces[2].Name != "eth0" || ra.Interfaces[2].Sandbox != podA || ra.Interfaces[1].Sandbox != "" {
		t.Fatalf("interfaces %+v", ra.Interfaces)
	}
	if len(ra.IPs) != 2 || *ra.IPs[0].Interface != 2 || ra.IPs[0].Gateway.String() != "10.11.0.1" {
		t.Fatalf("ips %+v", ra.IPs)
	}
	if len(ra.Routes) != 2 {
		t.Errorf("want default routes for both families, got %v", ra.Routes)
	}
	for _, i := range ra.Interfaces {
		if _, err := net.ParseMAC(i.Mac); err != nil {
			t.Errorf("interface %s MAC %q", i.Name, i.Mac)
		}
	}

	a4, b4 := ra.IPs[0].Address.IP, rb.IPs[0].Address.IP
	a6, b6 := ra.IPs[1].Address.IP, rb.IPs[1].Address.IP
	for _, p := range []struct {
		from string
		to   net.IP
	}{{podA, b4}, {podB, a4}, {podA, b6}, {podB, a6}, {e.Node, a4}, {e.Node, b6}} {
		t0 := time.Now()
		err := nxtest.Ping(p.from, p.to)
		t.Logf("ping %s: %v", p.to, time.Since(t0))
		if err != nil {
			t.Errorf("ping %s from %s: %v", p.to, p.from, err)
		}
	}

	// The node side: bridge has the gateways, forwarding is on, MTU applied.
	e.In(e.Node, func() error {
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		if br.Attrs().MTU != 1400 {
			t.Errorf("bridge MTU %d", br.Attrs().MTU)
		}
		if br.Attrs().HardwareAddr.String() != ra.Interfaces[0].Mac || rb.Interfaces[0].Mac != ra.Interfaces[0].Mac {
			t.Errorf("bridge MAC moved: %s / %s / %s", br.Attrs().HardwareAddr, ra.Interfaces[0].Mac, rb.Interfaces[0].Mac)
		}
		if err := netlinkx_CheckAddrs(br, "10.11.0.1/24", "fd11::1/64"); err != nil {
			t.Error(err)
		}
		if v, _ := sysctl.Get("net/ipv4/ip_forward"); v != "1" {
			t.Errorf("ip_forward = %s", v)
		}
		return nil
	})
	e.In(podA, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1400 || l.Attrs().HardwareAddr.String() != ra.Interfaces[2].Mac {
			t.Errorf("pod link %+v", l.Attrs())
		}
		return nil
	})

	for _, a := range []struct {
		id, p string
		r     *current.Result
	}{{"ctr-a", podA, ra}, {"ctr-b", podB, rb}} {
		args := e.Args(nxtest.WithPrev(t, c, a.r), a.id, a.p, "eth0")
		if err := e.Check(args); err != nil {
			t.Errorf("CHECK %s: %v", a.id, err)
		}
		if err := e.Del(args); err != nil {
			t.Errorf("DEL %s: %v", a.id, err)
		}
	}
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
	if r := e.Reservations("net1"); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
}

// netlinkx_CheckAddrs checks addresses on l in the calling namespace.
func netlinkx_CheckAddrs(l netlink.Link, want ...string) error {
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, w := range want {
		found := false
		for _, a := range addrs {
			if a.IPNet.String() == w {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s has no address %s (has %v)", l.Attrs().Name, w, addrs)
		}
	}
	return nil
}

func TestRootResultVersions(t *testing.T) {
	e := nxtest.New(t, Plugin)
	for i, ver := range []string{"0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		c := conf(e, ver, "netv", "10.12.0.0/24", "", `"isGateway":true`)
		pod := e.Pod()
		id := fmt.Sprintf("ctr-%d", i)
		r := e.MustAdd(e.Args(c, id, pod, "eth0"))
		out, err := r.GetAsVersion(ver)
		if err != nil {
			t.Fatalf("%s: convert: %v", ver, err)
		}
		b, _ := json.Marshal(out)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if m["cniVersion"] != ver {
			t.Errorf("%s: cniVersion %v", ver, m["cniVersion"])
		}
		if ver == "0.2.0" {
			ip4, _ := m["ip4"].(map[string]any)
			if ip4 == nil || !strings.HasPrefix(fmt.Sprint(ip4["ip"]), "10.12.0.") || ip4["gateway"] != "10.12.0.1" {
				t.Errorf("0.2.0 result %s", b)
			}
		} else {
			ifs, _ := m["interfaces"].([]any)
			ips, _ := m["ips"].([]any)
			if len(ifs) != 3 || len(ips) != 1 {
				t.Errorf("%s result %s", ver, b)
			} else if ip := ips[0].(map[string]any); ip["interface"] != float64(2) {
				t.Errorf("%s: ip interface index %v", ver, ip["interface"])
			}
			if (ver == "0.3.1" || ver == "0.4.0") && !strings.Contains(string(b), `"version":"4"`) {
				t.Errorf("%s: no ip version field: %s", ver, b)
			}
		}
		if err := e.Del(e.Args(c, id, pod, "eth0")); err != nil {
			t.Errorf("%s: DEL: %v", ver, err)
		}
	}
}

func TestRootCheckDetectsDamage(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.0.0", "netc", "10.13.0.0/24", "", `"isDefaultGateway":true`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	args := e.Args(nxtest.WithPrev(t, c, r), "ctr", pod, "eth0")
	if err := e.Check(args); err != nil {
		t.Fatalf("CHECK on a fresh pod: %v", err)
	}
	// Remove the default route.
	e.In(pod, func() error {
		_, def, _ := net.ParseCIDR("0.0.0.0/0")
		l, _ := netlink.LinkByName("eth0")
		return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def, Gw: r.IPs[0].Gateway})
	})
	if err := e.Check(args); err == nil || !strings.Contains(err.Error(), "route") {
		t.Errorf("CHECK after removing the default route: %v", err)
	}
	// Remove the pod address.
	e.In(pod, func() error {
		l, _ := netlink.LinkByName("eth0")
		return netlink.AddrDel(l, &netlink.Addr{IPNet: &r.IPs[0].Address})
	})
	if err := e.Check(args); err == nil || !strings.Contains(err.Error(), "address") {
		t.Errorf("CHECK after removing the address: %v", err)
	}
	// CHECK without prevResult is an error.
	if err := e.Check(e.Args(c, "ctr", pod, "eth0")); err == nil {
		t.Error("CHECK without prevResult passed")
	}
	if err := e.Del(args); err != nil {
		t.Error(err)
	}
}

func TestRootDelIdempotentAndNetnsGone(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netd", "10.14.0.0/24", "", `"isGateway":true,"ipMasq":true,"macspoofchk":true`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	args := e.Args(nxtest.WithPrev(t, c, r), "ctr", pod, "eth0")
	for i := 0; i < 2; i++ {
		if err := e.Del(args); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	// DEL with the pod netns gone and no prevResult.
	podPath := e.Pod()
	e.MustAdd(e.Args(c, "ctr2", podPath, "eth0"))
	if len(e.Reservations("netd")) != 1 {
		t.Fatalf("reservations %v", e.Reservations("netd"))
	}
	if err := netns.DeletePath(podPath); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(c, "ctr2", podPath, "eth0")); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if res := e.Reservations("netd"); len(res) != 0 {
		t.Errorf("reservation left after DEL: %v", res)
	}
	// The kernel destroys a namespace (and the veth in it) asynchronously.
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
	e.In(e.Node, func() error {
		assertRules(t, MasqChain, 0)
		assertRules(t, SpoofChain, 0)
		return nil
	})
	// DEL with no netns at all.
	if err := e.Del(e.Args(c, "ctr3", "", "eth0")); err != nil {
		t.Errorf("DEL without netns: %v", err)
	}
}

func assertRules(t *testing.T, c nft.Chain, want int) {
	t.Helper()
	rules, err := nft.List(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != want {
		t.Errorf("%s has %d rules, want %d", c, len(rules), want)
	}
}

func TestRootFailedAddLeavesNothing(t *testing.T) {
	e := nxtest.New(t, Plugin)
	extra := `"isGateway":true,"ipMasq":true,"macspoofchk":true`
	c := conf(e, "1.1.0", "netf", "10.15.0.0/30", "", extra)
	podA := e.Pod()
	e.MustAdd(e.Args(c, "ctr-a", podA, "eth0")) // takes the only address (.2)
	before := e.Veths(e.Node)
	resBefore := e.Reservations("netf")

	nothingNew := func(what string) {
		t.Helper()
		if v := e.Veths(e.Node); strings.Join(v, ",") != strings.Join(before, ",") {
			t.Errorf("%s: veths %v, before %v", what, v, before)
		}
		if r := e.Reservations("netf"); strings.Join(r, ",") != strings.Join(resBefore, ",") {
			t.Errorf("%s: reservations %v, before %v", what, r, resBefore)
		}
		e.In(e.Node, func() error {
			assertRules(t, MasqChain, 1)
			assertRules(t, SpoofChain, 1)
			return nil
		})
	}

	// IPAM failure: the range is exhausted.
	podB := e.Pod()
	if _, err := e.Add(e.Args(c, "ctr-b", podB, "eth0")); err == nil {
		t.Fatal("ADD with the range exhausted succeeded")
	}
	nothingNew("range exhausted")

	// A bad field.
	bad := conf(e, "1.1.0", "netf", "10.15.0.0/30", "", extra+`,"vlan":5`)
	_, err := e.Add(e.Args(bad, "ctr-b", podB, "eth0"))
	if te, ok := err.(*types.Error); !ok || te.Code != 2 || !strings.Contains(te.Msg, `"vlan"`) {
		t.Errorf("vlan 5: %v", err)
	}
	nothingNew("vlan")

	// Failure after IPAM and the veth: the bridge already has another IPv4
	// address and forceAddress is off. A second network on the same bridge.
	c2 := conf(e, "1.1.0", "netf2", "10.16.0.0/24", "", extra)
	if _, err := e.Add(e.Args(c2, "ctr-c", podB, "eth0")); err == nil || !strings.Contains(err.Error(), "forceAddress") {
		t.Fatalf("ADD with a conflicting bridge address: %v", err)
	}
	nothingNew("gateway conflict")
	if r := e.Reservations("netf2"); len(r) != 0 {
		t.Errorf("netf2 reservation left: %v", r)
	}
	e.In(podB, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("eth0 left in the pod")
		}
		return nil
	})
	// With forceAddress the address is replaced.
	c3 := conf(e, "1.1.0", "netf2", "10.16.0.0/24", "", extra+`,"forceAddress":true`)
	r := e.MustAdd(e.Args(c3, "ctr-c", podB, "eth0"))
	e.In(e.Node, func() error {
		br, _ := netlink.LinkByName("br0")
		if err := netlinkx_CheckAddrs(br, "10.16.0.1/24"); err != nil {
			t.Error(err)
		}
		if err := netlinkx_CheckAddrs(br, "10.15.0.1/30"); err == nil {
			t.Error("forceAddress kept the old address")
		}
		return nil
	})
	_ = r
}

func TestRootIPMasq(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netm", "10.17.0.0/24", "fd17::/64", `"isDefaultGateway":true,"ipMasq":true`)
	pod := e.Pod()
	r := e.MustAdd(e.Args(c, "ctr", pod, "eth0"))

	// An "outside" namespace linked to the node, with no route back to the
	// pod subnet: the pod reaches it only if its traffic is masqueraded.
	outside := e.Pod()
	e.In(e.Node, func() error {
		v := netlink.NewVeth(netlink.LinkAttrs{Name: "uplink", TxQLen: -1})
		v.PeerName = "eth0"
		v.PeerNamespace = netlink.NsFd(openNS(t, outside))
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("uplink")
		_, n, _ := net.ParseCIDR("192.168.77.1/24")
		n.IP = net.ParseIP("192.168.77.1")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: n}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	e.In(outside, func() error {
		l, _ := netlink.LinkByName("eth0")
		_, n, _ := net.ParseCIDR("192.168.77.2/24")
		n.IP = net.ParseIP("192.168.77.2")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: n}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err := nxtest.Ping(pod, net.ParseIP("192.168.77.2")); err != nil {
		t.Errorf("masqueraded ping to the outside: %v", err)
	}
	tag := nft.Tag("netm", "ctr", "eth0")
	e.In(e.Node, func() error {
		rules, err := nft.List(MasqChain)
		if err != nil {
			return err
		}
		if len(rules) != 2 || rules[0].Tag != tag || rules[1].Tag != tag {
			t.Errorf("masquerade rules %+v", rules)
		}
		return nil
	})
	args := e.Args(nxtest.WithPrev(t, c, r), "ctr", pod, "eth0")
	if err := e.Check(args); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.Del(args); err != nil {
		t.Fatal(err)
	}
	e.In(e.Node, func() error { assertRules(t, MasqChain, 0); return nil })
}

func TestRootGC(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "netg", "10.18.0.0/24", "", `"isGateway":true,"ipMasq":true,"macspoofchk":true`)
	podA, podB := e.Pod(), e.Pod()
	e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))
	// Another network's rules must survive GC of netg.
	other := conf(e, "1.1.0", "neto", "10.18.0.0/24", "", `"isGateway":true,"ipMasq":true`)
	podC := e.Pod()
	e.MustAdd(e.Args(other, "ctr-c", podC, "eth1"))

	s := strings.TrimSpace(string(c))
	gcConf := s[:len(s)-1] + `,"cni.dev/valid-attachments":[{"containerID":"ctr-a","ifname":"eth0"}]}`
	if err := e.GC(e.Args([]byte(gcConf), "", "", "")); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if r := e.Reservations("netg"); len(r) != 1 {
		t.Errorf("netg reservations after GC: %v", r)
	}
	if r := e.Reservations("neto"); len(r) != 1 {
		t.Errorf("neto reservations after GC: %v", r)
	}
	e.In(e.Node, func() error {
		for _, ch := range []nft.Chain{MasqChain, SpoofChain} {
			rules, err := nft.List(ch)
			if err != nil {
				return err
			}
			for _, r := range rules {
				if r.Tag == nft.Tag("netg", "ctr-b", "eth0") {
					t.Errorf("%s: stale rule of ctr-b kept", ch)
				}
			}
		}
		if n, _ := nft.CountTag(MasqChain, nft.Tag("netg", "ctr-a", "eth0")); n != 1 {
			t.Errorf("valid rule of ctr-a removed")
		}
		if n, _ := nft.CountTag(SpoofChain, nft.Tag("netg", "ctr-a", "eth0")); n != 1 {
			t.Errorf("valid spoof rule of ctr-a removed")
		}
		if n, _ := nft.CountTag(MasqChain, nft.Tag("neto", "ctr-c", "eth1")); n != 1 {
			t.Errorf("other network's rule removed")
		}
		return nil
	})
	if err := e.Status(e.Args(c, "", "", "")); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

// openNS opens a namespace for the duration of the test.
func openNS(t *testing.T, path string) int {
	t.Helper()
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return int(h)
}
