package hostile

import (
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/roottest"
)

// nodeState is what the own-namespace tests compare before and after: the
// node namespace's links (name, kind, up), addresses and routes.
func nodeState(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	roottest.In(t, node, func() error {
		links, err := netlinkx.Retry(netlink.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			out = append(out, fmt.Sprintf("link %s %s up=%v", a.Name, l.Type(), a.Flags&net.FlagUp != 0))
		}
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue // kernel-made, come and go with links
			}
			out = append(out, "addr "+a.IPNet.String())
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, 0)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() || r.Dst != nil && r.Dst.IP.IsMulticast() {
				continue
			}
			out = append(out, fmt.Sprintf("route %v table %d", r.Dst, r.Table))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// ownNetnsNode makes a node namespace with what the plugins would use or
// damage: eth0 with an address (the node's own interface named like a
// pod's), a macvlan master, a device for host-device.
func ownNetnsNode(t *testing.T) string {
	_, node := roottest.NewNS(t, "hown")
	roottest.In(t, node, func() error {
		for _, v := range [][2]string{{"eth0", "peer0"}, {"up0", "up1"}, {"hd0", "hd1"}} { // veths: no dummy module on every kernel
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v[0]}, PeerName: v[1]}); err != nil {
				return err
			}
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("192.0.2.10/24")
		if err := netlink.AddrAdd(eth0, a); err != nil {
			return err
		}
		for _, n := range []string{"eth0", "peer0", "up0", "up1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	return node
}

// ownNetnsConfs are configs of every plugin type that would succeed (or
// get far) with a pod namespace; their IPAM writes under data.
func ownNetnsConfs(data, netnsPath, ifName string) map[string]string {
	ipam := fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.88.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}`, data)
	prev := fmt.Sprintf(`"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":%q,"sandbox":%q}],"ips":[{"interface":0,"address":"192.0.2.10/24","gateway":"192.0.2.1"}]}`, ifName, netnsPath)
	c := func(typ, fields string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ownnet","type":%q,%s}`, typ, fields)
	}
	return map[string]string{
		"bridge":      c("bridge", `"bridge":"br0","isGateway":true,"ipMasq":true,`+ipam),
		"ptp":         c("ptp", ipam),
		"macvlan":     c("macvlan", `"master":"up0",`+ipam),
		"tap":         c("tap", ipam),
		"host-device": c("host-device", `"device":"hd0",`+ipam),
		"loopback":    c("loopback", `"x":0`),
		"tuning":      c("tuning", fmt.Sprintf(`"mtu":1280,"dataDir":%q,%s`, filepath.Join(data, "tuning"), prev)),
		"sbr":         c("sbr", prev),
		"bandwidth":   c("bandwidth", `"ingressRate":1000000,"ingressBurst":100000,`+prev),
		"portmap":     c("portmap", `"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]},`+prev),
		"firewall":    c("firewall", prev),
		"podnet":      c("podnet", fmt.Sprintf(`"stateDir":%q`, filepath.Join(data, "podnet"))),
		"host-local":  strings.Replace(c("host-local", ipam), `"type":"host-local","name"`, `"name"`, 1),
		"static":      c("static", `"ipam":{"type":"static","addresses":[{"address":"10.89.0.5/24"}]}`),
	}
}

// TestOwnNetnsRefused: ADD and CHECK with CNI_NETNS naming the namespace
// the plugin runs in (the node's, by its bind-mount path or as
// /proc/self/ns/net) are refused with code 4 naming CNI_NETNS before
// anything is touched: the node's links, addresses and routes are as
// before, and no reservation or state file is written. It used to do the
// whole ADD in the node namespace (eth0 with the pod address, routes, a
// reservation) and then fail with code 8, leaving it all behind.
func TestOwnNetnsRefused(t *testing.T) {
	roottest.Require(t)
	node := ownNetnsNode(t)
	data := t.TempDir()
	before := nodeState(t, node)
	for _, nsPath := range []string{node, "/proc/self/ns/net"} {
		// CNI_IFNAME pod0 is free in the node namespace: nothing in the
		// way of an ADD that would go ahead.
		for typ, conf := range ownNetnsConfs(data, nsPath, "pod0") {
			for _, verb := range []string{"ADD", "CHECK"} {
				t.Run(fmt.Sprintf("%s/%s/%s", verb, typ, filepath.Base(filepath.Dir(nsPath))), func(t *testing.T) {
					o := run(t, call{typ: typ, cmd: verb, stdin: []byte(conf), netns: nsPath, node: node, cid: "own1", ifname: "pod0"})
					wantErr(t, o, 4, typ+": CNI_NETNS", "plugin's own network namespace")
				})
			}
		}
	}
	if after := nodeState(t, node); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("node namespace changed:\nbefore %q\nafter  %q", before, after)
	}
	if left := tree(t, data); len(left) != 0 {
		t.Errorf("written under the data dir: %v", left)
	}
}

// TestOwnNetnsDel: DEL with CNI_NETNS the plugin's own namespace runs as
// for a namespace that is gone: it succeeds (a runtime can finish tearing
// down) and deletes nothing in the node namespace, in particular not the
// node's interface named CNI_IFNAME (eth0), which a DEL used to delete
// (macvlan, tap, host-device) or move (host-device) as the pod's; the
// loopback plugin used to set the node's lo down.
func TestOwnNetnsDel(t *testing.T) {
	roottest.Require(t)
	node := ownNetnsNode(t)
	data := t.TempDir()
	before := nodeState(t, node)
	for _, nsPath := range []string{node, "/proc/self/ns/net"} {
		for typ, conf := range ownNetnsConfs(data, nsPath, "eth0") {
			if typ == "podnet" {
				continue // DEL needs the agent's node.json first; its DEL goes through the same CmdDel
			}
			t.Run(fmt.Sprintf("%s/%s", typ, filepath.Base(filepath.Dir(nsPath))), func(t *testing.T) {
				o := run(t, call{typ: typ, cmd: "DEL", stdin: []byte(conf), netns: nsPath, node: node, cid: "own1"})
				if o.err != nil {
					t.Errorf("DEL: %v %s", o.err, o.stdout)
				}
			})
		}
	}
	if after := nodeState(t, node); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("node namespace changed:\nbefore %q\nafter  %q", before, after)
	}
}
