package overlay_test

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/overlay"
)

var update = flag.Bool("update", false, "rewrite golden files")

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

var cluster = pfx("10.244.0.0/16", "fd00:244::/48")

func local(backend string) overlay.Local {
	return overlay.Local{
		Name: "a", Backend: backend, UnderlayDev: "eth0",
		UnderlayIPs: addrs("100.64.0.1"), UnderlayNets: pfx("100.64.0.0/24"),
		Subnets: pfx("10.244.1.0/24", "fd00:244:0:1::/64"),
		VtepMAC: overlay.VtepMAC("a", 1).String(), VNI: 1, Port: 8472, MTU: 1450,
		ClusterCIDRs: cluster,
	}
}

var nodes = []datastore.NodeInfo{
	{Name: "a", UnderlayIPs: addrs("100.64.0.1"), VtepMAC: overlay.VtepMAC("a", 1).String(), Subnets: pfx("10.244.1.0/24", "fd00:244:0:1::/64"), Backend: "vxlan"},
	// same L2 as a
	{Name: "b", UnderlayIPs: addrs("100.64.0.2", "fd64::2"), VtepMAC: overlay.VtepMAC("b", 1).String(), Subnets: pfx("10.244.2.0/24", "fd00:244:0:2::/64"), Backend: "vxlan"},
	// routed underlay, another L2
	{Name: "c", UnderlayIPs: addrs("100.64.9.3"), VtepMAC: overlay.VtepMAC("c", 1).String(), Subnets: pfx("10.244.3.0/24"), Backend: "auto"},
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from golden:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	for _, c := range []struct {
		name  string
		l     overlay.Local
		nodes []datastore.NodeInfo
	}{
		{"vxlan", local("vxlan"), nodes},
		{"hostgw", local("host-gw"), nodes},
		{"auto", local("auto"), nodes},
		{"problems", local("vxlan"), append(append([]datastore.NodeInfo{}, nodes...),
			datastore.NodeInfo{Name: "nomac", UnderlayIPs: addrs("100.64.0.4"), Subnets: pfx("10.244.4.0/24"), Backend: "host-gw"},
			datastore.NodeInfo{Name: "overlap", UnderlayIPs: addrs("100.64.0.5"), VtepMAC: "02:00:00:00:00:05", Subnets: pfx("10.244.1.0/24")},
			datastore.NodeInfo{Name: "outside", UnderlayIPs: addrs("100.64.0.6"), VtepMAC: "02:00:00:00:00:06", Subnets: pfx("10.99.0.0/24")},
		)},
		{"alone", local("vxlan"), nodes[:1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			golden(t, c.name, overlay.Compute(c.l, datastore.SnapshotOf(c.nodes)).Render())
		})
	}
}

func TestOneEntryPerRemote(t *testing.T) {
	st := overlay.Compute(local("vxlan"), datastore.SnapshotOf(nodes))
	// b: 2 subnets (v4+v6) -> 2 routes, 2 neighbours, 1 FDB; c: 1 of each.
	if len(st.Routes) != 3 || len(st.Neighbors) != 3 || len(st.FDB) != 2 {
		t.Fatalf("routes %d neigh %d fdb %d:\n%s", len(st.Routes), len(st.Neighbors), len(st.FDB), st.Render())
	}
	for _, r := range st.Routes {
		if r.Via != r.Dst.Addr() || !r.Onlink || r.Dev != "podnet.1" {
			t.Errorf("vxlan route %s not via the remote .0 onlink", r)
		}
	}
	if len(st.Problems) != 0 {
		t.Errorf("problems: %v", st.Problems)
	}
}

func TestVtepMACStable(t *testing.T) {
	a, b := overlay.VtepMAC("node-1", 1), overlay.VtepMAC("node-1", 1)
	if a.String() != b.String() || a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("mac %s/%s not stable or not local unicast", a, b)
	}
	if overlay.VtepMAC("node-2", 1).String() == a.String() {
		t.Fatal("two nodes share a MAC")
	}
}
