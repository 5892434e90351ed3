package overlay_test

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/overlay"
)

// Pools the fuzzer picks record fields from: the honest cluster's values,
// the audit's hostile ones, and the edges between them. A byte string picks
// a record set from them (dense: most inputs are records), and an optional
// JSON list of records adds arbitrary ones.
var (
	fzNames   = []string{"a", "b", "c", "d", "e", ""}
	fzSubnets = pfx("10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24", "10.244.4.0/24", "10.244.2.7/32",
		"10.244.0.0/16", "0.0.0.0/0", "100.64.0.0/24", "100.64.0.0/16", "10.99.0.0/24", "10.244.5.0/23",
		"10.244.5.128/25", "fd00:244:0:1::/64", "fd00:244:0:2::/64", "fd00:244::/48", "::/0", "fd64::/64", "10.244.6.1/24")
	fzMACs = []string{"", overlay.VtepMAC("a", 1).String(), overlay.VtepMAC("b", 1).String(), overlay.VtepMAC("c", 1).String(),
		overlay.VtepMAC("d", 1).String(), "02:00:00:00:00:01", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
		"02:00:00:00:00:00:00:01", "junk", "02:00:00:00:00:0A"}
	fzIPs = addrs("100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.9.3", "10.244.2.1", "0.0.0.0", "127.0.0.1",
		"224.0.0.1", "255.255.255.255", "::ffff:100.64.0.2", "fd64::2", "fe80::1", "::", "100.64.0.5", "169.254.1.1")
	fzBackends = []string{"vxlan", "host-gw", "auto"}
)

func pick[T any](l []T, b byte) T { return l[int(b)%len(l)] }

// fuzzSnapshot turns data into a snapshot: per record 6 bytes (name, MAC,
// 2 underlay picks, 2 subnet picks), and per byte pair after that a lease.
func fuzzSnapshot(data []byte, extra string) datastore.Snapshot {
	snap := datastore.Snapshot{Owners: map[netip.Prefix]string{}}
	nrec := 0
	if len(data) > 0 {
		nrec = int(data[0] % 8)
		data = data[1:]
	}
	for ; nrec > 0 && len(data) >= 6; nrec-- {
		n := datastore.NodeInfo{Name: pick(fzNames, data[0]), VtepMAC: pick(fzMACs, data[1])}
		n.UnderlayIPs = append(n.UnderlayIPs, pick(fzIPs, data[2]))
		if data[3]&0x80 != 0 {
			n.UnderlayIPs = append(n.UnderlayIPs, pick(fzIPs, data[3]))
		}
		n.Subnets = append(n.Subnets, pick(fzSubnets, data[4]))
		if data[5]&0x80 != 0 {
			n.Subnets = append(n.Subnets, pick(fzSubnets, data[5]))
		}
		snap.Nodes = append(snap.Nodes, n)
		data = data[6:]
	}
	for ; len(data) >= 2; data = data[2:] {
		snap.Owners[pick(fzSubnets, data[0])] = pick(fzNames, data[1])
	}
	var more []datastore.NodeInfo
	if json.Unmarshal([]byte(extra), &more) == nil {
		snap.Nodes = append(snap.Nodes, more...)
	}
	return snap
}

// FuzzCompute asserts the invariants of issue 17 on arbitrary record sets:
// no route for a prefix not leased to the node it leads to; never a default
// route, nor one covering an underlay address; no MAC programmed for two
// nodes, nor an FDB destination that is not a remote node's global unicast
// underlay address; our own subnets never routed away; bounded NAT sets.
func FuzzCompute(f *testing.F) {
	f.Add([]byte{3, 1, 2, 1, 0, 1, 0, 2, 3, 3, 0, 2, 0, 1, 1, 2, 2, 3}, "", byte(0))
	f.Add([]byte{2, 1, 2, 1, 0, 1, 0, 3, 1, 6, 0, 1, 0, 1, 1, 4, 3}, "", byte(2))
	f.Add([]byte{1, 3, 2, 5, 0, 4, 0, 4, 3}, `[{"name":"e","underlayIPs":["100.64.0.9"],"vtepMAC":"02:00:00:00:00:09","subnets":["10.244.3.0/24"]}]`, byte(1))
	recs, _, _ := hostile()
	if b, err := json.Marshal(recs[:3]); err == nil {
		f.Add([]byte{0, 1, 1, 4, 1}, string(b), byte(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, extra string, backend byte) {
		l := local(pick(fzBackends, backend))
		snap := fuzzSnapshot(data, extra)
		st := overlay.Compute(l, snap)
		checkInvariants(t, l, snap, st)
	})
}

func checkInvariants(t *testing.T, l overlay.Local, snap datastore.Snapshot, st overlay.State) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Fatalf(format+"\nstate:\n%s", append(a, st.Render())...)
	}
	var underlay []netip.Addr
	underlay = append(underlay, l.UnderlayIPs...)
	underlay = append(underlay, st.NAT.Nodes4...)
	underlay = append(underlay, st.NAT.Nodes6...)
	for _, r := range st.Routes {
		if r.Dst.Bits() == 0 {
			fail("default route %s", r)
		}
		if owner := snap.Owners[r.Dst]; owner != r.Node || owner == "" || owner == l.Name {
			fail("route %s leads to %q, its lease names %q", r, r.Node, owner)
		}
		for _, s := range l.Subnets {
			if r.Dst.Overlaps(s) {
				fail("route %s takes our subnet %s away", r, s)
			}
		}
		for _, ip := range underlay {
			if r.Dst.Contains(ip) {
				fail("route %s covers underlay address %s", r, ip)
			}
		}
		for _, n := range l.UnderlayNets {
			if r.Dst.Overlaps(n) {
				fail("route %s overlaps our underlay %s", r, n)
			}
		}
	}
	if len(slices.CompactFunc(slices.Clone(st.Routes), func(a, b overlay.Route) bool { return a.Dst == b.Dst })) != len(st.Routes) {
		fail("a prefix routed twice")
	}
	macNode := map[string]string{}
	for _, r := range st.Routes {
		if r.Mode != overlay.VXLAN {
			continue
		}
		for _, n := range st.Neighbors {
			if n.IP == r.Via {
				if prev, ok := macNode[n.MAC]; ok && prev != r.Node {
					fail("MAC %s programmed for nodes %s and %s", n.MAC, prev, r.Node)
				}
				macNode[n.MAC] = r.Node
			}
		}
	}
	seen := map[string]bool{}
	for _, f := range st.FDB {
		if seen[f.MAC] {
			fail("two FDB entries for MAC %s", f.MAC)
		}
		seen[f.MAC] = true
		if !f.Dst.IsGlobalUnicast() || f.Dst.Is4In6() || slices.Contains(l.UnderlayIPs, f.Dst) {
			fail("FDB destination %s", f.Dst)
		}
		if f.MAC == l.VtepMAC {
			fail("our own MAC %s in the FDB", f.MAC)
		}
	}
	for _, ip := range append(slices.Clone(st.NAT.Nodes4), st.NAT.Nodes6...) {
		if !ip.IsGlobalUnicast() {
			fail("NAT exemption for %s", ip)
		}
	}
	if max := overlay.MaxUnderlayIPs * (len(snap.Nodes) + 1); len(st.NAT.Nodes4)+len(st.NAT.Nodes6) > max {
		fail("NAT node sets hold %d addresses, over %d", len(st.NAT.Nodes4)+len(st.NAT.Nodes6), max)
	}
}
