package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/datastore/etcd"
	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/roottest"
)

// TestLabHostileRecords replays issue 17's audit on a 3-node VXLAN lab: a
// record taking over n2's subnet, one routing n2-p1 alone as a /32, one
// carrying n2's VTEP MAC (on a subnet it holds), an unparsable one, records
// with malformed MACs and underlay addresses and one with 65,000 underlay
// addresses, then n1's own record deleted by hand. On the old agent the
// neighbour and FDB entries for n2 flipped, pairs failed and n1's record was
// never repaired; now every node keeps n2's entries, every pair works and
// n1 republishes.
func TestLabHostileRecords(t *testing.T) {
	t.Parallel()
	l := upLab(t, VXLAN, 3, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: l.Etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	put := func(key, val string) {
		t.Helper()
		if _, err := cli.Put(ctx, etcd.DefaultPrefix+"/"+key, val); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	n2 := l.Node("n2")
	n2sub := n2.Subnets[0]
	n2mac := overlay.VtepMAC("n2", 1).String()
	p1 := l.Pod("n2-p1").IPv4()
	rec := func(name, mac, ips, subnets string) string {
		return fmt.Sprintf(`{"name":%q,"underlayIPs":[%s],"vtepMAC":%q,"subnets":[%s],"backend":"vxlan"}`, name, ips, mac, subnets)
	}
	// Free subnets of the cluster CIDR for the records that hold a lease.
	free := func(i int) netip.Prefix {
		return etcd.NthSubnet(l.ClusterCIDR, n2sub.Bits(), 200+i)
	}
	lease := func(name string, p netip.Prefix) {
		put(fmt.Sprintf("subnets/%s-%d", p.Addr(), p.Bits()), name)
	}
	put("nodes/evil", rec("evil", "02:00:00:00:00:99", `"100.104.0.99"`, fmt.Sprintf("%q", n2sub)))
	put("nodes/evil32", rec("evil32", "02:00:00:00:00:98", `"100.104.0.98"`, fmt.Sprintf(`"%s/32"`, p1)))
	lease("evilmac", free(0))
	put("nodes/evilmac", rec("evilmac", n2mac, `"100.104.0.97"`, fmt.Sprintf("%q", free(0))))
	put("nodes/badjson", `{"name":`)
	for i, bad := range []struct{ mac, ip string }{
		{"02:00:00:00:00:00:00:01", "100.104.0.1"},
		{"00:00:00:00:00:00", "100.104.0.2"},
		{"ff:ff:ff:ff:ff:ff", "100.104.0.3"},
		{"02:00:00:00:01:04", "0.0.0.0"},
		{"02:00:00:00:01:05", "127.0.0.1"},
		{"02:00:00:00:01:06", "224.0.0.1"},
		{"02:00:00:00:01:07", "255.255.255.255"},
	} {
		name := fmt.Sprintf("bad%d", i)
		lease(name, free(1+i))
		put("nodes/"+name, rec(name, bad.mac, fmt.Sprintf("%q", bad.ip), fmt.Sprintf("%q", free(1+i))))
	}
	many := make([]string, 65000)
	for i := range many {
		many[i] = fmt.Sprintf(`"100.105.%d.%d"`, i>>8, i&0xff)
	}
	lease("many", free(9))
	put("nodes/many", rec("many", "02:00:00:00:02:00", strings.Join(many, ","), fmt.Sprintf("%q", free(9))))
	if _, err := cli.Delete(ctx, etcd.DefaultPrefix+"/nodes/n1"); err != nil {
		t.Fatal(err)
	}

	roottest.Eventually(t, 15*time.Second, "n1 republishes its record", func() error {
		r, err := cli.Get(ctx, etcd.DefaultPrefix+"/nodes/n1")
		if err != nil || len(r.Kvs) == 0 {
			return fmt.Errorf("no record (%v)", err)
		}
		return nil
	})
	// Over several resyncs (2 s each) n1 and n3 keep n2's entries: no flip.
	gw := net.IP(n2sub.Addr().AsSlice())
	for round := range 4 {
		for _, node := range []string{"n1", "n3"} {
			if err := n2Entries(l.Node(node).Netns, gw, n2mac, n2.IP, p1); err != nil {
				t.Fatalf("round %d, %s: %v", round, node, err)
			}
		}
		time.Sleep(1500 * time.Millisecond)
	}
	r := check(t, l)
	for k, c := range r.Cells {
		if !c.OK() {
			t.Errorf("%s -> %s: %s", k[0], k[1], c.short())
		}
	}
}

// n2Entries checks, in a node namespace, that n2's subnet is reached
// through n2's VTEP (neighbour gw -> mac, FDB mac -> underlay) and that no
// route singles out pod p1.
func n2Entries(ns string, gw net.IP, mac string, underlay netip.Addr, p1 netip.Addr) error {
	h, err := handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	dev, err := h.LinkByName(overlay.DeviceName(1))
	if err != nil {
		return err
	}
	neighs, err := h.NeighList(dev.Attrs().Index, unix.AF_INET)
	if err != nil {
		return err
	}
	found := false
	for _, n := range neighs {
		if n.IP.Equal(gw) {
			if n.HardwareAddr.String() != mac {
				return fmt.Errorf("neighbour %s is %s, want n2's %s", gw, n.HardwareAddr, mac)
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no neighbour for %s", gw)
	}
	fdb, err := h.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	for _, f := range fdb {
		if f.HardwareAddr.String() == mac && !f.IP.Equal(net.IP(underlay.AsSlice())) {
			return fmt.Errorf("FDB sends n2's MAC %s to %s, want %s", mac, f.IP, underlay)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	for _, rt := range routes {
		if rt.Dst != nil && rt.Dst.IP.Equal(net.IP(p1.AsSlice())) {
			return errors.New("a route singles out n2-p1: " + rt.String())
		}
	}
	return nil
}
