package sbr

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/probe"
	"github.com/podnet/podnet/internal/roottest"
)

const (
	podV4  = "10.99.1.2"
	gwV4   = "10.99.1.1"
	podV6  = "fd00:99::2"
	gwV6   = "fd00:99::1"
	podMAC = "0a:58:0a:63:01:02"
)

// pod is a node namespace and a pod namespace joined by a veth pair (host0
// in the node, eth0 in the pod) with addresses and default routes, as a
// main plugin would have left them, and that plugin's prevResult.
type pod struct {
	nodePath, podName, podPath string
	prev                       map[string]any
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func newPod(t *testing.T, v6 bool) *pod {
	t.Helper()
	_, nodePath := roottest.NewNS(t, "sbr-node")
	podName, podPath := roottest.NewNS(t, "sbr-pod")
	p := &pod{nodePath: nodePath, podName: podName, podPath: podPath}
	podNS, err := vnetns.GetFromPath(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	setup := func(name string, addrs []string) func() error {
		return func() error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR(a), Flags: unix.IFA_F_NODAD}); err != nil {
					return fmt.Errorf("add %s: %w", a, err)
				}
			}
			return netlink.LinkSetUp(l)
		}
	}
	nodeAddrs, podAddrs := []string{gwV4 + "/24"}, []string{podV4 + "/24"}
	if v6 {
		nodeAddrs, podAddrs = append(nodeAddrs, gwV6+"/64"), append(podAddrs, podV6+"/64")
	}
	roottest.In(t, nodePath, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "host0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNS))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return setup("host0", nodeAddrs)()
	})
	roottest.In(t, podPath, func() error {
		if err := setup("eth0", podAddrs)(); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.RouteAdd(&netlink.Route{Dst: mustCIDR("0.0.0.0/0"), Gw: net.ParseIP(gwV4), LinkIndex: l.Attrs().Index}); err != nil {
			return err
		}
		if v6 {
			return netlink.RouteAdd(&netlink.Route{Dst: mustCIDR("::/0"), Gw: net.ParseIP(gwV6), LinkIndex: l.Attrs().Index})
		}
		return nil
	})
	ips := []any{map[string]any{"address": podV4 + "/24", "gateway": gwV4, "interface": 1}}
	if v6 {
		ips = append(ips, map[string]any{"address": podV6 + "/64", "gateway": gwV6, "interface": 1})
	}
	p.prev = map[string]any{
		"cniVersion": "1.0.0",
		"interfaces": []any{
			map[string]any{"name": "host0", "mac": "0a:00:00:00:00:aa"},
			map[string]any{"name": "eth0", "mac": podMAC, "sandbox": podPath},
		},
		"ips":    ips,
		"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": gwV4}},
	}
	return p
}

func (p *pod) args(t *testing.T, fields map[string]any) *skel.CmdArgs {
	t.Helper()
	conf := map[string]any{"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr", "prevResult": p.prev}
	for k, v := range fields {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return &skel.CmdArgs{ContainerID: "c1", Netns: p.podPath, IfName: "eth0", StdinData: b}
}

// view is what the test reads back in the pod.
type view struct {
	rules  map[string]int // source IP -> table
	tables map[int][]string
	main   []string // main-table routes through eth0
}

func (p *pod) read(t *testing.T) view {
	t.Helper()
	v := view{rules: map[string]int{}, tables: map[int][]string{}}
	roottest.In(t, p.podPath, func() error {
		rules, err := netlink.RuleList(netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Src != nil {
				v.rules[r.Src.IP.String()] = r.Table
			}
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.LinkIndex != l.Attrs().Index || r.Table == unix.RT_TABLE_LOCAL {
				continue
			}
			s := routeString(r)
			if r.Table == unix.RT_TABLE_MAIN {
				v.main = append(v.main, s)
			} else {
				v.tables[r.Table] = append(v.tables[r.Table], s)
			}
		}
		return nil
	})
	return v
}

func routeString(r netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			dst = r.Dst.String()
		}
	}
	if r.Gw != nil {
		return dst + " via " + r.Gw.String()
	}
	return dst
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// exchangeFrom sends a UDP token from src in the pod to dst and returns the
// source address the echo server saw.
func exchangeFrom(podPath, src, dst string) (string, error) {
	var conn net.Conn
	err := netns.Do(podPath, func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		var err error
		conn, err = d.Dial("udp", dst)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("sbr")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	from, _, _ := strings.Cut(string(buf[:n]), " ")
	host, _, _ := net.SplitHostPort(from)
	return host, nil
}

func TestRootAddCheckDel(t *testing.T) {
	p := newPod(t, true)
	a := p.args(t, nil)
	if _, err := Plugin.Add(a); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	v := p.read(t)
	if v.rules[podV4] != 100 || v.rules[podV6] != 101 {
		t.Fatalf("rules: %v, want %s->100 and %s->101", v.rules, podV4, podV6)
	}
	for _, want := range []string{"10.99.1.0/24", "default via " + gwV4} {
		if !has(v.tables[100], want) {
			t.Errorf("table 100 %v lacks %q", v.tables[100], want)
		}
	}
	for _, want := range []string{"fd00:99::/64", "default via " + gwV6} {
		if !has(v.tables[101], want) {
			t.Errorf("table 101 %v lacks %q", v.tables[101], want)
		}
	}
	if has(v.tables[100], "fd00:99::/64") || has(v.tables[101], "10.99.1.0/24") {
		t.Errorf("a table holds the other family's routes: %v", v.tables)
	}
	if len(v.main) != 0 {
		t.Errorf("main table still routes through eth0: %v", v.main)
	}

	// The kernel picks the tables by source address.
	roottest.In(t, p.podPath, func() error {
		for _, c := range []struct{ dst, src, gw string }{{"192.0.2.7", podV4, gwV4}, {"2001:db8::7", podV6, gwV6}} {
			rs, err := netlink.RouteGetWithOptions(net.ParseIP(c.dst), &netlink.RouteGetOptions{SrcAddr: net.ParseIP(c.src)})
			if err != nil {
				return fmt.Errorf("route get %s from %s: %w", c.dst, c.src, err)
			}
			if len(rs) != 1 || !rs[0].Gw.Equal(net.ParseIP(c.gw)) {
				return fmt.Errorf("route get %s from %s = %+v, want via %s", c.dst, c.src, rs, c.gw)
			}
		}
		if rs, err := netlink.RouteGet(net.ParseIP("192.0.2.7")); err == nil {
			return fmt.Errorf("without a source the main table has no route, got %+v", rs)
		}
		return nil
	})

	// Real packets: bound to the pod IP they reach the node; unbound they
	// have no route.
	l, err := probe.Listen(p.nodePath, "0.0.0.0:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if from, err := exchangeFrom(p.podPath, podV4, gwV4+":7777"); err != nil || from != podV4 {
		t.Errorf("UDP from %s: seen from %q, %v", podV4, from, err)
	}
	if _, err := probe.Exchange(p.podPath, "udp", gwV4+":7777", time.Second); err == nil {
		t.Errorf("unbound UDP reached the node though the main table has no route")
	}

	if err := Plugin.Check(a); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// A repeated ADD changes nothing.
	if _, err := Plugin.Add(a); err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if v2 := p.read(t); fmt.Sprint(v2) != fmt.Sprint(v) {
		t.Errorf("second ADD changed state:\n%v\n%v", v, v2)
	}

	// Someone deletes a rule: CHECK notices.
	roottest.In(t, p.podPath, func() error {
		r := netlink.NewRule()
		r.Src, r.Table = mustCIDR(podV6+"/128"), 101
		return netlink.RuleDel(r)
	})
	if err := Plugin.Check(a); err == nil || !strings.Contains(err.Error(), "no rule from "+podV6) {
		t.Errorf("CHECK with a rule missing: %v", err)
	}

	if err := Plugin.Del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	v = p.read(t)
	if len(v.rules) != 0 || len(v.tables) != 0 {
		t.Errorf("after DEL: rules %v tables %v", v.rules, v.tables)
	}
	if err := Plugin.Del(a); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func TestRootPicksFreeTable(t *testing.T) {
	p := newPod(t, false)
	roottest.In(t, p.podPath, func() error {
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.RouteAdd(&netlink.Route{Dst: mustCIDR("198.51.100.0/24"), Gw: net.ParseIP(gwV4), LinkIndex: l.Attrs().Index, Table: 100}); err != nil {
			return err
		}
		r := netlink.NewRule()
		r.Src, r.Table = mustCIDR("192.0.2.1/32"), 101
		return netlink.RuleAdd(r)
	})
	a := p.args(t, nil)
	if _, err := Plugin.Add(a); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	v := p.read(t)
	if v.rules[podV4] != 102 || !has(v.tables[102], "default via "+gwV4) {
		t.Fatalf("want table 102: rules %v tables %v", v.rules, v.tables)
	}
	if err := Plugin.Check(a); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatal(err)
	}
	v = p.read(t)
	if _, ok := v.rules[podV4]; ok || len(v.tables[102]) != 0 {
		t.Errorf("after DEL: %+v", v)
	}
	// Other people's tables and rules are untouched.
	if v.rules["192.0.2.1"] != 101 || !has(v.tables[100], "198.51.100.0/24 via "+gwV4) {
		t.Errorf("foreign rule or table touched: %+v", v)
	}
}

func TestRootExplicitTable(t *testing.T) {
	p := newPod(t, false)
	before := p.read(t)
	a := p.args(t, map[string]any{"table": 5000})
	if _, err := Plugin.Add(a); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	v := p.read(t)
	if v.rules[podV4] != 5000 {
		t.Errorf("rules %v", v.rules)
	}
	if fmt.Sprint(v.main) != fmt.Sprint(before.main) || len(v.tables) != 0 {
		t.Errorf("table mode moved routes: %+v", v)
	}
	if err := Plugin.Check(a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if _, err := Plugin.Add(a); err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if err := Plugin.Del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if v := p.read(t); len(v.rules) != 0 {
		t.Errorf("rules after DEL: %v", v.rules)
	}
	if err := Plugin.Check(a); err == nil {
		t.Error("CHECK after DEL passed")
	}
}

func TestRootFailedAddRollsBack(t *testing.T) {
	p := newPod(t, false)
	before := p.read(t)
	// A gateway that is not on the link: the default route cannot be added
	// after the subnet route was already copied.
	p.prev["ips"] = []any{map[string]any{"address": podV4 + "/24", "gateway": "10.50.0.1", "interface": 1}}
	_, err := Plugin.Add(p.args(t, nil))
	if err == nil || !strings.Contains(err.Error(), "10.50.0.1") {
		t.Fatalf("ADD: %v", err)
	}
	if after := p.read(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("failed ADD left changes:\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestRootDelNetnsGone(t *testing.T) {
	p := newPod(t, false)
	a := p.args(t, nil)
	if _, err := Plugin.Add(a); err != nil {
		t.Fatal(err)
	}
	if err := netns.Delete(p.podName); err != nil {
		t.Fatal(err)
	}
	if err := Plugin.Del(a); err != nil {
		t.Errorf("DEL with the netns gone: %v", err)
	}
}

func TestRootVRFRejected(t *testing.T) {
	p := newPod(t, false)
	_, err := Plugin.Add(p.args(t, map[string]any{"vrfname": "blue"}))
	wantErr(t, err, 2, "vrfname")
	if v := p.read(t); len(v.rules) != 0 {
		t.Errorf("rules after rejected ADD: %v", v.rules)
	}
}

// TestRootTwoInterfacesConcurrently runs ADD for eth0 and net1 of one pod
// at the same time: the namespace lock must make them pick different tables.
func TestRootTwoInterfacesConcurrently(t *testing.T) {
	p := newPod(t, false)
	podNS, err := vnetns.GetFromPath(p.podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	roottest.In(t, p.nodePath, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "host1"}, PeerName: "net1", PeerNamespace: netlink.NsFd(int(podNS))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("host1")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("10.99.2.1/24")}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	roottest.In(t, p.podPath, func() error {
		l, _ := netlink.LinkByName("net1")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR("10.99.2.2/24")}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	p.prev["interfaces"] = append(p.prev["interfaces"].([]any), map[string]any{"name": "net1", "sandbox": p.podPath})
	p.prev["ips"] = append(p.prev["ips"].([]any), map[string]any{"address": "10.99.2.2/24", "gateway": "10.99.2.1", "interface": 2})

	a0 := p.args(t, nil)
	a1 := p.args(t, nil)
	a1.IfName = "net1"
	errs := make(chan error, 2)
	for _, a := range []*skel.CmdArgs{a0, a1} {
		go func() {
			_, err := Plugin.Add(a)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	v := p.read(t)
	t0, t1 := v.rules[podV4], v.rules["10.99.2.2"]
	if t0 < 100 || t1 < 100 || t0 == t1 {
		t.Fatalf("tables %d and %d, want two different ones from 100", t0, t1)
	}
	for _, a := range []*skel.CmdArgs{a0, a1} {
		if err := Plugin.Check(a); err != nil {
			t.Errorf("CHECK %s: %v", a.IfName, err)
		}
		if err := Plugin.Del(a); err != nil {
			t.Errorf("DEL %s: %v", a.IfName, err)
		}
	}
	if v := p.read(t); len(v.rules) != 0 {
		t.Errorf("rules after DEL: %v", v.rules)
	}
}
