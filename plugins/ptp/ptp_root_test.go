package ptp

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx/nxtest"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/sysctl"
)

// conf builds a ptp config with a host-local IPAM over subnet (and subnet6
// when set) and a default route; extra is spliced in as fields.
func conf(e *nxtest.Env, ver, network, subnet, subnet6, extra string) []byte {
	fields := `"type":"ptp"`
	if extra != "" {
		fields += "," + extra
	}
	return e.Conf(ver, network, fields, `"routes":[{"dst":"0.0.0.0/0"}]`, subnet, subnet6)
}

func TestRootTwoPodsRouted(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptp1", "10.31.0.0/24", "fd31::/64", `"mtu":1400`)
	podA, podB := e.Pod(), e.Pod()
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	rb := e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))

	if len(ra.Interfaces) != 2 || !strings.HasPrefix(ra.Interfaces[0].Name, "veth") || ra.Interfaces[1].Name != "eth0" || ra.Interfaces[1].Sandbox != podA {
		t.Fatalf("interfaces %+v", ra.Interfaces)
	}
	if len(ra.IPs) != 2 || *ra.IPs[0].Interface != 1 || ra.IPs[0].Gateway.String() != "10.31.0.1" {
		t.Fatalf("ips %+v", ra.IPs)
	}
	gw4, gw6 := ra.IPs[0].Gateway, ra.IPs[1].Gateway
	for _, p := range []struct {
		from string
		to   net.IP
	}{
		{podA, gw4}, {podA, gw6}, // the node through the gateway address
		{podA, rb.IPs[0].Address.IP}, {podB, ra.IPs[0].Address.IP}, // pod to pod through node routing
		{podA, rb.IPs[1].Address.IP}, {podB, ra.IPs[1].Address.IP},
		{e.Node, ra.IPs[0].Address.IP}, {e.Node, rb.IPs[1].Address.IP},
	} {
		t0 := time.Now()
		err := nxtest.Ping(p.from, p.to)
		t.Logf("ping %s from %s: %v", p.to, p.from, time.Since(t0))
		if err != nil {
			t.Errorf("ping %s from %s: %v", p.to, p.from, err)
		}
	}
	e.In(podA, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1400 {
			t.Errorf("pod MTU %d", l.Attrs().MTU)
		}
		// No on-link subnet route: everything goes via the gateway.
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Dst.String() == "10.31.0.0/24" && r.Gw == nil {
				t.Errorf("on-link subnet route present: %v", r)
			}
		}
		return nil
	})
	e.In(e.Node, func() error {
		if v, _ := sysctl.Get("net/ipv4/ip_forward"); v != "1" {
			t.Errorf("ip_forward = %s", v)
		}
		if v, _ := sysctl.Get("net/ipv6/conf/all/forwarding"); v != "1" {
			t.Errorf("ipv6 forwarding = %s", v)
		}
		return nil
	})
	for _, a := range []struct{ id, p string }{{"ctr-a", podA}, {"ctr-b", podB}} {
		r := ra
		if a.id == "ctr-b" {
			r = rb
		}
		args := e.Args(nxtest.WithPrev(t, c, r), a.id, a.p, "eth0")
		if err := e.Check(args); err != nil {
			t.Errorf("CHECK %s: %v", a.id, err)
		}
		for i := 0; i < 2; i++ {
			if err := e.Del(args); err != nil {
				t.Errorf("DEL #%d %s: %v", i+1, a.id, err)
			}
		}
	}
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
	if r := e.Reservations("ptp1"); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
}

func TestRootCheckDetectsDamage(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.0.0", "ptpc", "10.32.0.0/24", "", "")
	for _, damage := range []string{"route", "address"} {
		pod := e.Pod()
		id := "ctr-" + damage
		r := e.MustAdd(e.Args(c, id, pod, "eth0"))
		args := e.Args(nxtest.WithPrev(t, c, r), id, pod, "eth0")
		if err := e.Check(args); err != nil {
			t.Fatalf("CHECK on a fresh pod: %v", err)
		}
		e.In(pod, func() error {
			l, _ := netlink.LinkByName("eth0")
			if damage == "route" {
				_, def, _ := net.ParseCIDR("0.0.0.0/0")
				return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def})
			}
			return netlink.AddrDel(l, &netlink.Addr{IPNet: &r.IPs[0].Address})
		})
		if err := e.Check(args); err == nil || !strings.Contains(err.Error(), damage) {
			t.Errorf("CHECK after removing the %s: %v", damage, err)
		}
	}
}

func TestRootDelNetnsGone(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptpd", "10.33.0.0/24", "", `"ipMasq":true`)
	pod := e.Pod()
	e.MustAdd(e.Args(c, "ctr", pod, "eth0"))
	if err := netns.DeletePath(pod); err != nil {
		t.Fatal(err)
	}
	if err := e.Del(e.Args(c, "ctr", pod, "eth0")); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if r := e.Reservations("ptpd"); len(r) != 0 {
		t.Errorf("reservation left: %v", r)
	}
	e.In(e.Node, func() error {
		if rules, _ := nft.List(MasqChain); len(rules) != 0 {
			t.Errorf("masquerade rules left: %+v", rules)
		}
		return nil
	})
	if v := e.WaitVeths(e.Node, 0); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
}

func TestRootFailedAddLeavesNothing(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptpf", "10.34.0.0/30", "", `"ipMasq":true`)
	e.MustAdd(e.Args(c, "ctr-a", e.Pod(), "eth0"))
	pod := e.Pod()
	if _, err := e.Add(e.Args(c, "ctr-b", pod, "eth0")); err == nil {
		t.Fatal("ADD with the range exhausted succeeded")
	}
	if r := e.Reservations("ptpf"); len(r) != 1 {
		t.Errorf("reservations %v", r)
	}
	if v := e.Veths(e.Node); len(v) != 1 {
		t.Errorf("veths %v", v)
	}
	// Pod interface name taken: fails after IPAM.
	e.In(pod, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"})
	})
	c2 := conf(e, "1.1.0", "ptpf2", "10.35.0.0/24", "", `"ipMasq":true`)
	if _, err := e.Add(e.Args(c2, "ctr-c", pod, "eth0")); err == nil {
		t.Fatal("ADD with eth0 taken succeeded")
	}
	if r := e.Reservations("ptpf2"); len(r) != 0 {
		t.Errorf("reservation left: %v", r)
	}
	e.In(e.Node, func() error {
		if rules, _ := nft.List(MasqChain); len(rules) != 1 {
			t.Errorf("masquerade rules %+v", rules)
		}
		return nil
	})
}

func TestRootIPMasqAndGC(t *testing.T) {
	e := nxtest.New(t, Plugin)
	c := conf(e, "1.1.0", "ptpg", "10.36.0.0/24", "", `"ipMasq":true`)
	podA, podB := e.Pod(), e.Pod()
	ra := e.MustAdd(e.Args(c, "ctr-a", podA, "eth0"))
	e.MustAdd(e.Args(c, "ctr-b", podB, "eth0"))
	e.In(e.Node, func() error {
		if n, _ := nft.CountTag(MasqChain, nft.Tag("ptpg", "ctr-a", "eth0")); n != 1 {
			t.Errorf("masquerade rules of ctr-a: %d", n)
		}
		return nil
	})
	if err := e.Check(e.Args(nxtest.WithPrev(t, c, ra), "ctr-a", podA, "eth0")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	s := strings.TrimSpace(string(c))
	gcConf := s[:len(s)-1] + `,"cni.dev/valid-attachments":[{"containerID":"ctr-a","ifname":"eth0"}]}`
	if err := e.GC(e.Args([]byte(gcConf), "", "", "")); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if r := e.Reservations("ptpg"); len(r) != 1 || r[0] != ra.IPs[0].Address.IP.String() {
		t.Errorf("reservations after GC: %v", r)
	}
	e.In(e.Node, func() error {
		rules, err := nft.List(MasqChain)
		if err != nil {
			return err
		}
		if len(rules) != 1 || rules[0].Tag != nft.Tag("ptpg", "ctr-a", "eth0") {
			t.Errorf("rules after GC: %+v", rules)
		}
		return nil
	})
	if err := e.Del(e.Args(c, "ctr-a", podA, "eth0")); err != nil {
		t.Fatal(err)
	}
	e.In(e.Node, func() error {
		if rules, _ := nft.List(MasqChain); len(rules) != 0 {
			t.Errorf("rules after DEL: %+v", rules)
		}
		return nil
	})
	if err := e.Status(e.Args(c, "", "", "")); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}
