package policykernel_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
)

var tbl = &nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName}

func TestAdoption(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w1, rs := tp.openBase(t)
	check(t, baseFlows(tp))
	before, err := w1.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	w1.Close()

	// A restarted agent: open while traffic flows; nothing changes
	// before, during or after its first Apply of the same ruleset.
	stop := background(flow{"denied during adoption", C.path, A.v4, "tcp", 7001, false})
	stop2 := background(flow{"allowed during adoption", C.path, A.v4, "tcp", 7000, true})
	w2 := tp.open(t)
	check(t, baseFlows(tp))
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st != (policykernel.Stats{Duration: st.Duration}) {
		t.Errorf("adopting Apply changed something: %+v", st)
	}
	for _, s := range []func() (int, []error){stop, stop2} {
		_, errs := s()
		for _, err := range errs {
			t.Error(err)
		}
	}
	check(t, baseFlows(tp))
	after, err := w2.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	// The counters kept counting: the chains were never recreated.
	for c, n := range before {
		if after[c] <= n {
			t.Errorf("chain %s: %d packets dropped before adoption, %d after", c, n, after[c])
		}
	}

	// And the adopted state is a real base for differences: C no
	// longer isolated (its map elements, its profile and the cidr sets
	// only it used go).
	ingA, egA, _ := baseProfiles()
	rs2 := rs
	rs2.Pods = rs.Pods[:1]
	rs2.Profiles = sorted(policy.Ruleset{Profiles: []policy.Profile{ingA, egA}}).Profiles
	rs2.AddrSets = slices.DeleteFunc(slices.Clone(rs.AddrSets), func(s policy.AddrSet) bool { return strings.HasPrefix(s.Name, "cidr") })
	st, err = w2.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsRemoved != 1 || st.SetsRemoved != 2 || st.ElementsRemoved != 2 || st.ChainsAdded+st.SetsAdded+st.ElementsAdded != 0 {
		t.Errorf("removing C after adoption: %+v", st)
	}
	check(t, []flow{{"C unrestricted", B.path, C.v4, "tcp", 7001, true}, {"C unrestricted v6", B.path, C.v6, "tcp", 7000, true}})
}

// A restarted writer repairs what it finds different from what it would
// have made: a profile chain emptied behind its back, a chain and sets it
// does not know, a member it did not add, a map element it did not write.
func TestAdoptionRepairs(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w, rs := tp.openBase(t)
	w.Close()

	ingA, _, _ := baseProfiles()
	c := tp.conn(t)
	c.FlushChain(&nftables.Chain{Table: tbl, Name: ingA.Name})
	c.AddChain(&nftables.Chain{Table: tbl, Name: "junk"})
	c.AddChain(&nftables.Chain{Table: tbl, Name: "ingress-ffffffffffff"})
	for i, n := range []string{"junk-set", "pods4-ffffffffffff"} {
		if err := c.AddSet(&nftables.Set{Table: tbl, Name: n, KeyType: nftables.TypeIPAddr, ID: uint32(i + 1)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// C in B's set.
	if err := c.SetAddElements(&nftables.Set{Table: tbl, Name: setB4, KeyType: nftables.TypeIPAddr}, []nftables.SetElement{{Key: C.v4.AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{
		{"A's ingress chain emptied", C.path, A.v4, "tcp", 7001, true},
		{"C in B's set: A may reach it", A.path, C.v4, "udp", 7000, true},
	})

	w2 := tp.open(t)
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.RulesAdded != len(ingA.Rules)+1 || st.ChainsRemoved != 2 || st.SetsRemoved != 2 || st.ElementsRemoved != 1 || st.ChainsAdded+st.SetsAdded+st.ElementsAdded != 0 || st.Batches != 1 {
		t.Errorf("repair: %+v", st)
	}
	check(t, baseFlows(tp))
	check(t, []flow{{"C out of B's set", A.path, C.v4, "udp", 7000, false}})
	chains, sets := tableContent(t, tp)
	if len(chains) != 4 || len(sets) != 4+7 || sets[setB4] != 1 {
		t.Errorf("after repair: chains %v, sets %v", chains, sets)
	}
	adoptsUnchanged(t, tp, rs)
	_ = B
}

// A batch the kernel rejects changes nothing, and the writer learns what
// the kernel really has.
func TestFailedBatch(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w, rs := tp.openBase(t)
	// Behind the writer's back: B leaves its IPv4 set.
	c := tp.conn(t)
	if err := c.SetDeleteElements(&nftables.Set{Table: tbl, Name: setB4, KeyType: nftables.TypeIPAddr}, []nftables.SetElement{{Key: B.v4.AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{{"member deleted behind the writer's back", B.path, A.v4, "tcp", 7001, false}})

	// The next ruleset removes B (ENOENT: the batch fails) and C from
	// their sets: neither may happen.
	rs2 := without(without(rs, setB4), setC4)
	if _, err := w.Apply(rs2); err == nil {
		t.Fatal("apply deleting a missing element succeeded")
	} else {
		t.Logf("expected failure: %v", err)
	}
	check(t, []flow{{"failed batch left C allowed", C.path, A.v4, "tcp", 7000, true}})

	// Re-read: the same ruleset now applies, and the original puts both back.
	if st, err := w.Apply(rs2); err != nil || st.ElementsRemoved != 1 || st.ElementsAdded != 0 {
		t.Fatalf("apply after re-read: %+v, %v", st, err)
	}
	check(t, []flow{{"C removed", C.path, A.v4, "tcp", 7000, false}})
	if st, err := w.Apply(rs); err != nil || st.ElementsAdded != 2 || st.ElementsRemoved != 0 {
		t.Fatalf("restore: %+v, %v", st, err)
	}
	check(t, baseFlows(tp))

	// A set of another type made by hand with the name of a set a new
	// profile uses: the batch making them fails, the table is read
	// again, and the next Apply replaces the set.
	cf, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
	if err := cf.AddSet(&nftables.Set{Table: tbl, Name: "pods6-00000000000a", KeyType: nftables.TypeIPAddr, ID: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := cf.Flush(); err != nil {
		t.Fatal(err)
	}
	ingA, egA, ingC := baseProfiles()
	ingC2 := profile(false, policy.Rule{Peers: "pods6-00000000000a"})
	rs3 := rs
	rs3.Pods = slices.Clone(rs.Pods)
	rs3.Pods[1].IngressChain = ingC2.Name
	rs3.Profiles = []policy.Profile{ingA, egA, ingC, ingC2}
	rs3.AddrSets = append(slices.Clone(rs.AddrSets), podsSet("pods6-00000000000a", A.v6))
	rs3 = sorted(rs3)
	if st, err := w.Apply(rs3); err == nil {
		t.Errorf("apply making a set that exists with another type succeeded: %+v", st)
	} else {
		t.Logf("expected failure: %v", err)
	}
	check(t, baseFlows(tp))
	st, err := w.Apply(rs3)
	if err != nil {
		t.Fatal(err)
	}
	if st.SetsRemoved != 1 || st.SetsAdded != 1 || st.ChainsAdded != 1 || st.Batches != 1 {
		t.Errorf("replacing a set of another type: %+v", st)
	}
	check(t, []flow{{"new profile", A.path, C.v6, "tcp", 7001, true}, {"new profile, IPv4", A.path, C.v4, "tcp", 7001, false}})
	adoptsUnchanged(t, tp, rs3)
}

// oldPods is baseRuleset in the previous layout: the same verdicts.
func oldPods(tp *topo) []policykernel.OldPod {
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	one := func(a netip.Addr) policy.AddrRange { return policy.AddrRange{From: a, To: a} }
	box := func(r policy.AddrRange, p policy.Proto, from, to uint16) policykernel.OldBox {
		return policykernel.OldBox{Peers: r, Proto: p, From: from, To: to}
	}
	all4 := policy.AddrRange{From: netip.MustParseAddr("0.0.0.0"), To: netip.MustParseAddr("255.255.255.255")}
	all6 := policy.AddrRange{From: netip.MustParseAddr("::"), To: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
	net4 := cidrSet("x", netip.MustParsePrefix("10.99.0.0/24"), B.v4).Ranges
	net6 := cidrSet("x", netip.MustParsePrefix("fd99::/64"), B.v6).Ranges
	return []policykernel.OldPod{
		{ID: idA, IPs: []netip.Addr{A.v4, A.v6},
			Ingress: &policykernel.OldChain{
				Any4: []policy.AddrRange{one(B.v4)}, Any6: []policy.AddrRange{one(B.v6)},
				Ports4: []policykernel.OldBox{box(one(C.v4), policy.TCP, 7000, 7000), box(one(C.v4), policy.UDP, 7000, 7000), box(all4, policy.TCP, 8000, 8010)},
				Ports6: []policykernel.OldBox{box(one(C.v6), policy.TCP, 7000, 7000), box(one(C.v6), policy.UDP, 7000, 7000), box(all6, policy.TCP, 8000, 8010)},
			},
			Egress: &policykernel.OldChain{
				Ports4: []policykernel.OldBox{box(one(B.v4), policy.TCP, 7000, 7000), box(one(B.v4), policy.UDP, 7000, 7000), box(one(C.v4), policy.TCP, 7001, 7001)},
				Ports6: []policykernel.OldBox{box(one(B.v6), policy.TCP, 7000, 7000), box(one(C.v6), policy.TCP, 7001, 7001)},
			}},
		{ID: idC, IPs: []netip.Addr{C.v4, C.v6},
			Ingress: &policykernel.OldChain{
				Ports4: []policykernel.OldBox{box(net4[0], policy.TCP, 7001, 7001), box(net4[1], policy.TCP, 7001, 7001), box(all4, policy.UDP, 0, 65535)},
				Ports6: []policykernel.OldBox{box(net6[0], policy.TCP, 7001, 7001), box(net6[1], policy.TCP, 7001, 7001), box(all6, policy.UDP, 0, 65535)},
			}},
	}
}

// A table in the previous layout (per-pod chains, eight shared sets) is
// converted by the first Apply: a batch that makes the sets and profile
// chains, then one that switches the map elements to them and deletes
// the old chains and sets. No packet sees a pod unfiltered, nor an
// allowed peer dropped, and nothing old is left.
func TestMigrateOldLayout(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	rs := baseRuleset(tp)
	// Neighbours resolved first (over TCP, which retries a lost SYN): a
	// burst of first UDP packets while they are not sometimes loses one.
	var warm []flow
	for i, p := range tp.pods {
		warm = append(warm, flow{"warm-up", tp.node, p.v4, "tcp", 7000, true}, flow{"warm-up", tp.node, p.v6, "tcp", 7000, true})
		for j, q := range tp.pods {
			if i != j {
				warm = append(warm, flow{"warm-up", p.path, q.v4, "tcp", 7000, true}, flow{"warm-up", p.path, q.v6, "tcp", 7000, true})
			}
		}
	}
	check(t, warm)
	if err := policykernel.WriteOldLayout(tp.nodeFd, oldPods(tp)); err != nil {
		t.Fatal(err)
	}
	check(t, baseFlows(tp))
	oldChains, old := tableContent(t, tp)
	if len(old) != 4+8 || len(oldChains) != 4 {
		t.Fatalf("old layout: chains %v, sets %v", oldChains, old)
	}

	stops := []func() (int, []error){
		background(flow{"denied during migration", C.path, A.v4, "tcp", 7001, false}),
		background(flow{"allowed during migration", C.path, A.v4, "tcp", 7000, true}),
		background(flow{"denied v6 during migration", C.path, A.v6, "tcp", 7001, false}),
		background(flow{"allowed egress during migration", A.path, B.v4, "udp", 7000, true}),
		background(flow{"cidr hole during migration", B.path, C.v4, "tcp", 7001, false}),
		background(flow{"cidr during migration", A.path, C.v6, "tcp", 7001, true}),
	}
	w := tp.open(t)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// Three profiles and seven sets made, three pod chains and eight
	// shared sets deleted, six map elements switched.
	if st.Batches != 2 || st.ChainsAdded != 3 || st.SetsAdded != 7 || st.ChainsRemoved != 3 || st.SetsRemoved != 8 ||
		st.ElementsAdded != 10+6 || st.ElementsRemoved != 6 {
		t.Errorf("migration: %+v", st)
	}
	stopProbers(t, stops)
	check(t, baseFlows(tp))
	chains, sets := tableContent(t, tp)
	if len(chains) != 4 || len(sets) != 4+7 {
		t.Errorf("after migration: chains %v, sets %v", chains, sets)
	}
	for _, n := range chains {
		if strings.HasPrefix(n, "in-") || strings.HasPrefix(n, "eg-") {
			t.Errorf("old chain %s left", n)
		}
	}
	for n := range sets {
		if strings.HasPrefix(n, "in-") || strings.HasPrefix(n, "eg-") {
			t.Errorf("old set %s left", n)
		}
	}
	adoptsUnchanged(t, tp, rs)
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("after migration: %+v, %v", st, err)
	}
}

// A set of another type than its name says (a hand edit) is made again in
// the batch that rewrites the chains using it.
func TestAdoptionRemakesSet(t *testing.T) {
	tp := newTopo(t)
	w, rs := tp.openBase(t)
	w.Close()
	_, _, ingC := baseProfiles()
	c := tp.conn(t)
	// C's profile lets go of the cidr set, which comes back as an
	// IPv6 hash set under its IPv4 interval set's name; C's profile
	// gets a rule using it again (IPv6 now, as written by hand).
	c.FlushChain(&nftables.Chain{Table: tbl, Name: ingC.Name})
	c.DelSet(&nftables.Set{Table: tbl, Name: setNet4})
	if err := c.AddSet(&nftables.Set{Table: tbl, Name: setNet4, KeyType: nftables.TypeIP6Addr, ID: 1}, nil); err != nil {
		t.Fatal(err)
	}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Table: tbl, Name: ingC.Name}, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Lookup{SourceRegister: 1, SetName: setNet4, SetID: 1},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{{"C's profile emptied", tp.pods[1].path, tp.pods[2].v4, "tcp", 7001, true}})
	w2 := tp.open(t)
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.SetsRemoved != 1 || st.SetsAdded != 1 || st.ElementsAdded != 2 || st.RulesAdded != len(ingC.Rules)+1 || st.ElementsRemoved+st.ChainsAdded+st.ChainsRemoved != 0 || st.Batches != 1 {
		t.Errorf("remaking %s: %+v", setNet4, st)
	}
	check(t, baseFlows(tp))
	adoptsUnchanged(t, tp, rs)
}
