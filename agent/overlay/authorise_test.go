package overlay_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/overlay"
)

// leases is the honest cluster's lease keys: each node holds its subnets.
func leases() map[netip.Prefix]string {
	return datastore.SnapshotOf(nodes).Owners
}

// hostile are the records an independent audit wrote into a lab's etcd
// (issue 17), each next to the honest nodes a, b and c. Where the attack
// needs a lease of its own (a free subnet), it has one.
func hostile() (recs []datastore.NodeInfo, owners map[netip.Prefix]string, bad []datastore.BadRecord) {
	owners = leases()
	bMAC := overlay.VtepMAC("b", 1).String()
	u := addrs("100.64.0.99")
	rec := func(name, mac string, ips []netip.Addr, subnets ...string) {
		recs = append(recs, datastore.NodeInfo{Name: name, UnderlayIPs: ips, VtepMAC: mac, Subnets: pfx(subnets...), Backend: "vxlan"})
	}
	leased := func(name, subnet string) {
		owners[netip.MustParsePrefix(subnet)] = name
	}
	// 1. takes over b's subnet, without its lease.
	rec("evil", "02:00:00:00:00:99", u, "10.244.2.0/24")
	// 2. one of b's pods as a /32 (with a lease key, even).
	rec("evil32", "02:00:00:00:00:98", u, "10.244.2.7/32")
	leased("evil32", "10.244.2.7/32")
	// 3. b's VTEP MAC on a free subnet it holds, with another underlay.
	rec("evilmac", bMAC, addrs("100.64.0.97"), "10.244.9.0/24")
	leased("evilmac", "10.244.9.0/24")
	// 4. unparsable.
	bad = append(bad, datastore.BadRecord{Key: "/podnet/v1/nodes/badjson", Reason: "not a node record: unexpected end of JSON input"})
	// 5. weak fields, each on a subnet of its own that it holds.
	i := 10
	own := func(name, mac string, ips []netip.Addr) {
		s := fmt.Sprintf("10.244.%d.0/24", i)
		i++
		rec(name, mac, ips, s)
		leased(name, s)
	}
	own("mac8", "02:00:00:00:00:00:00:01", u)
	own("mac20", "02:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01", u)
	own("maczero", "00:00:00:00:00:00", u)
	own("macbcast", "ff:ff:ff:ff:ff:ff", u)
	own("macmcast", "01:00:5e:00:00:01", u)
	own("macours", overlay.VtepMAC("a", 1).String(), u)
	own("macjunk", "not-a-mac", u)
	for _, ip := range []string{"0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.0.1", "::ffff:100.64.0.9", "::1", "fe80::1", "100.64.0.1"} {
		own("ip-"+strings.NewReplacer(".", "-", ":", "-").Replace(ip), "02:00:00:00:01:00", addrs(ip))
	}
	many := make([]netip.Addr, 65000)
	for k := range many {
		many[k] = netip.AddrFrom4([4]byte{100, 65, byte(k >> 8), byte(k)})
	}
	own("manyips", "02:00:00:00:02:00", many)
	// Subnets that would route more than a node's share.
	rec("wide", "02:00:00:00:03:00", u, "10.244.0.0/16", "0.0.0.0/0", "10.244.200.0/23")
	leased("wide", "10.244.0.0/16")
	leased("wide", "0.0.0.0/0")
	leased("wide", "10.244.200.0/23")
	rec("covers", "02:00:00:00:04:00", addrs("10.244.30.1"), "10.244.30.0/24")
	leased("covers", "10.244.30.0/24")
	rec("nosubnets", "02:00:00:00:05:00", u)
	rec("twice", "02:00:00:00:06:00", u, "10.244.40.0/24", "10.244.41.0/24")
	leased("twice", "10.244.40.0/24")
	leased("twice", "10.244.41.0/24")
	rec("", "02:00:00:00:07:00", u, "10.244.50.0/24")
	return recs, owners, bad
}

// TestHostileRecords: none of the audit's records changes what a node
// programs for the honest ones, each is refused with its reason, and the
// one legitimate part (twice's first subnet) is kept.
func TestHostileRecords(t *testing.T) {
	recs, owners, bad := hostile()
	snap := datastore.Snapshot{Nodes: append(slices.Clone(nodes), recs...), Owners: owners, Bad: bad}
	slices.SortFunc(snap.Nodes, func(a, b datastore.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	for _, backend := range []string{overlay.VXLAN, overlay.HostGW, overlay.Auto} {
		honest := overlay.Compute(local(backend), datastore.SnapshotOf(nodes))
		got := overlay.Compute(local(backend), snap)
		var twice []overlay.Route
		got.Routes = slices.DeleteFunc(got.Routes, func(r overlay.Route) bool {
			if r.Node == "twice" {
				twice = append(twice, r)
			}
			return r.Node == "twice"
		})
		if len(twice) != 1 || twice[0].Dst.String() != "10.244.40.0/24" {
			t.Errorf("%s: twice's routes %v, want only 10.244.40.0/24", backend, twice)
		}
		got.Neighbors = slices.DeleteFunc(got.Neighbors, func(n overlay.Neighbor) bool { return n.MAC == "02:00:00:00:06:00" })
		got.FDB = slices.DeleteFunc(got.FDB, func(f overlay.FDBEntry) bool { return f.MAC == "02:00:00:00:06:00" })
		got.NAT.Nodes4 = slices.DeleteFunc(got.NAT.Nodes4, func(ip netip.Addr) bool { return ip.String() == "100.64.0.99" })
		got.Rejected = nil
		if g, w := got.Render(), honest.Render(); g != w {
			t.Errorf("%s: hostile records changed the state:\n--- got\n%s--- honest\n%s", backend, g, w)
		}
	}
	golden(t, "hostile", strings.Join(overlay.Compute(local("vxlan"), snap).Rejected, "\n")+"\n")
}

// TestBadRecordDoesNotStopOthers: a bad record, even one under a name
// sorting first, leaves every good record programmed.
func TestBadRecordDoesNotStopOthers(t *testing.T) {
	snap := datastore.SnapshotOf(nodes)
	snap.Bad = []datastore.BadRecord{{Key: "/podnet/v1/nodes/0", Reason: "too large"}}
	st := overlay.Compute(local("vxlan"), snap)
	if len(st.Routes) != 3 || len(st.Rejected) != 1 {
		t.Fatalf("routes %v rejected %v", st.Routes, st.Rejected)
	}
}

// TestDuplicateMACWithoutGenuineOwner: two records share a MAC derived from
// neither name: neither is programmed (no FDB flip), and saying so.
func TestDuplicateMACWithoutGenuineOwner(t *testing.T) {
	ns := []datastore.NodeInfo{
		{Name: "x", UnderlayIPs: addrs("100.64.0.7"), VtepMAC: "02:00:00:00:00:07", Subnets: pfx("10.244.7.0/24")},
		{Name: "y", UnderlayIPs: addrs("100.64.0.8"), VtepMAC: "02:00:00:00:00:07", Subnets: pfx("10.244.8.0/24")},
	}
	st := overlay.Compute(local("vxlan"), datastore.SnapshotOf(ns))
	if len(st.Routes) != 0 || len(st.FDB) != 0 || len(st.Rejected) != 2 {
		t.Fatalf("routes %v fdb %v rejected %v", st.Routes, st.FDB, st.Rejected)
	}
}
