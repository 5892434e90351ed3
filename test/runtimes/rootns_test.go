package runtimes

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/netlinkx"
)

func goarch() string { return runtime.GOARCH }

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// rootGuard records the host namespace's state a runtime test may change
// and puts it back when the test ends, pass or fail: the test's bridge and
// any veth enslaved to it, every podnet-* nftables table, the libcni result
// cache of the test's network, and net.ipv4.ip_forward. It then checks that
// no link or named netns that was not there before is left.
type rootGuard struct {
	t        *testing.T
	bridge   string
	network  string
	forward  []byte
	links    map[string]bool
	netnsDir map[string]bool
}

func guardRoot(t *testing.T, bridge, network string) *rootGuard {
	t.Helper()
	g := &rootGuard{t: t, bridge: bridge, network: network, links: map[string]bool{}, netnsDir: map[string]bool{}}
	var err error
	if g.forward, err = os.ReadFile(ipForward); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(bridge); err == nil {
		t.Fatalf("bridge %s already exists in the host namespace (left by an earlier run?); delete it first", bridge)
	}
	for _, n := range linkNames(t) {
		g.links[n] = true
	}
	for _, n := range netnsNames() {
		g.netnsDir[n] = true
	}
	t.Cleanup(g.restore)
	return g
}

func linkNames(t *testing.T) []string {
	links, err := netlinkx.Retry(netlink.LinkList)
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names
}

func netnsNames() []string {
	ents, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// bridgePorts returns the links enslaved to the bridge (nil if it is gone).
func bridgePorts(bridge string) ([]string, error) {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, err
	}
	links, err := netlinkx.Retry(netlink.LinkList)
	if err != nil {
		return nil, err
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}

func (g *rootGuard) restore() {
	t := g.t
	if ports, err := bridgePorts(g.bridge); err == nil {
		for _, p := range ports {
			if l, err := netlink.LinkByName(p); err == nil {
				t.Logf("cleanup: deleting leftover bridge port %s", p)
				netlink.LinkDel(l)
			}
		}
	}
	if br, err := netlink.LinkByName(g.bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			t.Errorf("cleanup: delete bridge %s: %v", g.bridge, err)
		}
	}
	if err := deletePodnetTables(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if cur, err := os.ReadFile(ipForward); err == nil && !bytes.Equal(cur, g.forward) {
		if err := os.WriteFile(ipForward, g.forward, 0o644); err != nil {
			t.Errorf("cleanup: restore ip_forward: %v", err)
		}
	}
	files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", g.network+"-*"))
	for _, f := range files {
		t.Logf("cleanup: removing libcni cache %s", f)
		os.Remove(f)
	}
	// Whatever is still new in the host namespace was left by the test.
	// (Only veths and bridges: loading a module such as ifb may add other
	// links at any time.)
	links, _ := netlinkx.Retry(netlink.LinkList)
	for _, l := range links {
		if typ := l.Type(); !g.links[l.Attrs().Name] && (typ == "veth" || typ == "bridge") {
			t.Errorf("%s %s left in the host namespace", typ, l.Attrs().Name)
		}
	}
	// Only the runtimes' own names: other tests make named netns too.
	for _, n := range netnsNames() {
		if !g.netnsDir[n] && (strings.HasPrefix(n, "netns-") || strings.HasPrefix(n, "cni-")) {
			t.Errorf("netns /run/netns/%s left behind", n)
		}
	}
	if left := podnetTables(); len(left) > 0 {
		t.Errorf("nftables tables left in the host namespace: %v", left)
	}
}

// podnetTables lists the host namespace's podnet-* nftables tables as
// "family name".
func podnetTables() []string {
	c, err := nftables.New()
	if err != nil {
		return []string{"(nftables: " + err.Error() + ")"}
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return []string{"(nftables: " + err.Error() + ")"}
	}
	var out []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "podnet-") {
			out = append(out, fmt.Sprintf("%s %s", familyName(tb.Family), tb.Name))
		}
	}
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprint(f)
}

func deletePodnetTables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	n := 0
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "podnet-") {
			c.DelTable(tb)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete podnet nftables tables: %w", err)
	}
	return nil
}

// nftElements returns, per "table/set", the elements of every set in the
// host namespace's podnet-* tables (read only). The portmap and firewall
// plugins keep their per-attachment state in such sets and maps.
func nftElements() (map[string]int, error) {
	m, err := nftElementList()
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out, err
}

// nftElementList is nftElements with each element's key and comment.
func nftElementList() (map[string][]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, tb := range tables {
		if !strings.HasPrefix(tb.Name, "podnet-") {
			continue
		}
		sets, err := c.GetSets(tb)
		if err != nil {
			return nil, fmt.Errorf("sets of %s: %w", tb.Name, err)
		}
		for _, s := range sets {
			el, err := c.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("elements of %s/%s: %w", tb.Name, s.Name, err)
			}
			for _, e := range el {
				k := familyName(tb.Family) + " " + tb.Name + "/" + s.Name
				out[k] = append(out[k], fmt.Sprintf("%x %q", e.Key, e.Comment))
			}
		}
	}
	return out, nil
}

// storeIPs lists the addresses host-local holds in dataDir/network.
func storeIPs(dataDir, network string) []string {
	ents, _ := os.ReadDir(filepath.Join(dataDir, network))
	var ips []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// checkNothingLeft asserts that after teardown the host-local store is
// empty, no veth is on the bridge and no podnet nftables set holds an
// element.
func checkNothingLeft(t *testing.T, dataDir, network, bridge string) {
	t.Helper()
	if ips := storeIPs(dataDir, network); len(ips) > 0 {
		t.Errorf("host-local still holds %v", ips)
	}
	ports, err := bridgePorts(bridge)
	if err != nil {
		t.Errorf("list bridge ports: %v", err)
	} else if len(ports) > 0 {
		t.Errorf("veths still on %s: %v", bridge, ports)
	}
	el, err := nftElementList()
	if err != nil {
		t.Errorf("read nftables: %v", err)
	} else if len(el) > 0 {
		t.Errorf("nftables elements left (key, comment): %v", el)
	}
}
