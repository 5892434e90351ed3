package policykernel_test

import (
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
)

// adoptsUnchanged opens a second writer and checks that it sees rs
// exactly as programmed (a zero difference).
func adoptsUnchanged(t *testing.T, tp *topo, rs policy.Ruleset, opts ...policykernel.Option) {
	t.Helper()
	w, err := policykernel.Open(tp.nodeFd, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("adopting writer: %+v, %v", st, err)
	}
}

// Interval edits that keep a range's start (the kernel gets the old
// range's elements deleted and the new ones added in one batch) and
// ranges running to the family's last address (no interval end element).
func TestRangeEdits(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		what       string
		any4, any6 []policy.AddrRange
		cPasses    bool
	}{
		{"B..C, same start as B..B", []policy.AddrRange{{From: B.v4, To: C.v4}}, []policy.AddrRange{{From: B.v6, To: C.v6}}, true},
		{"B..B again", []policy.AddrRange{one(B.v4)}, []policy.AddrRange{one(B.v6)}, false},
		{"B..last address", []policy.AddrRange{{From: B.v4, To: netip.MustParseAddr("255.255.255.255")}},
			[]policy.AddrRange{{From: B.v6, To: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}}, true},
		{"everything", []policy.AddrRange{{From: netip.MustParseAddr("0.0.0.0"), To: netip.MustParseAddr("255.255.255.255")}},
			[]policy.AddrRange{{From: netip.MustParseAddr("::"), To: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}}, true},
		{"two ranges around C", []policy.AddrRange{{From: netip.MustParseAddr("10.0.0.0"), To: B.v4}, {From: C.v4.Next(), To: netip.MustParseAddr("10.255.255.255")}},
			[]policy.AddrRange{{From: netip.MustParseAddr("fd99::"), To: B.v6}, {From: C.v6.Next(), To: netip.MustParseAddr("fd99::ffff")}}, false},
	}
	for _, s := range steps {
		rs.Pods[0].Ingress.Any4, rs.Pods[0].Ingress.Any6 = s.any4, s.any6
		if _, err := w.Apply(rs); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		check(t, []flow{
			{s.what + ": B", B.path, A.v4, "tcp", 7001, true},
			{s.what + ": B v6", B.path, A.v6, "tcp", 7001, true},
			{s.what + ": C", C.path, A.v4, "tcp", 7001, s.cPasses},
			{s.what + ": C v6", C.path, A.v6, "udp", 7001, s.cPasses},
		})
		adoptsUnchanged(t, tp, rs)
	}
}

// A restarted writer repairs what it finds different from what it would
// have made: a pod chain emptied behind its back, a chain and a set it
// does not know, a map element it did not write.
func TestAdoptionRepairs(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	w.Close()

	c, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName}
	c.FlushChain(&nftables.Chain{Table: tbl, Name: "in-" + idA})
	c.AddChain(&nftables.Chain{Table: tbl, Name: "junk"})
	junk := &nftables.Set{Table: tbl, Name: "junk-set", KeyType: nftables.TypeIPAddr, ID: 1}
	if err := c.AddSet(junk, nil); err != nil {
		t.Fatal(err)
	}
	ing4 := &nftables.Set{Table: tbl, Name: "ing4", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	if err := c.SetAddElements(ing4, []nftables.SetElement{{Key: B.v4.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: "in-" + idC}}}); err != nil {
		t.Fatal(err)
	}
	// An element of B's (not isolated: no map entry leads to B.v6) in
	// a shared ingress set: an orphan.
	inA6 := &nftables.Set{Table: tbl, Name: "in-a6", Interval: true, Concatenation: true}
	orphan := append(B.v6.AsSlice(), C.v6.AsSlice()...)
	if err := c.SetAddElements(inA6, []nftables.SetElement{{Key: orphan, KeyEnd: orphan}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{
		{"A's ingress chain emptied", C.path, A.v4, "tcp", 7001, true},
		{"B isolated by a stray map element", A.path, B.v4, "tcp", 7000, false},
	})

	w2 := tp.open(t)
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.RulesAdded != 5 || st.ChainsRemoved != 1 || st.SetsRemoved != 1 || st.ElementsRemoved != 2 || st.ChainsAdded+st.SetsAdded+st.ElementsAdded != 0 {
		t.Errorf("repair: %+v", st)
	}
	check(t, baseFlows(tp))
	chains, sets := tableContent(t, tp)
	if len(chains) != 4 || len(sets) != 4+8 || sets["in-a6"] != 1 {
		t.Errorf("after repair: chains %v, sets %v", chains, sets)
	}
	adoptsUnchanged(t, tp, rs)
}

// A table left with a forward chain on another priority and a map of
// another type (an older agent, a hand edit) is made right in one batch.
func TestAdoptionRecreatesBase(t *testing.T) {
	tp := newTopo(t)
	A, _, C := tp.pods[0], tp.pods[1], tp.pods[2]
	c, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName})
	accept := nftables.ChainPolicyAccept
	c.AddChain(&nftables.Chain{Table: tbl, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(10), Policy: &accept})
	if err := c.AddSet(&nftables.Set{Table: tbl, Name: "ing4", KeyType: nftables.TypeIPAddr, ID: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	w := tp.open(t)
	rs := baseRuleset(tp)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.SetsRemoved != 1 || st.ChainsAdded != 3 {
		t.Errorf("recreating: %+v", st)
	}
	check(t, []flow{
		{"ingress", C.path, A.v4, "tcp", 7001, false},
		{"ingress allowed", C.path, A.v4, "tcp", 7000, true},
	})
	ch, err := c.ListChain(tbl, "forward")
	if err != nil || ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityFilter {
		t.Errorf("forward chain after repair: %+v, %v", ch, err)
	}
	adoptsUnchanged(t, tp, rs)
}

// A shared set of another type (a hand edit) is made again in one batch:
// every pod chain's rules let go of it first and are written again, and
// every pod's elements of it are added again.
func TestAdoptionRemakesSharedSet(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	rs := baseRuleset(tp)
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c, err := nftables.New(nftables.WithNetNSFd(tp.nodeFd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: policykernel.TableName}
	for _, ch := range []string{"in-" + idA, "in-" + idC} {
		c.FlushChain(&nftables.Chain{Table: tbl, Name: ch})
	}
	c.DelSet(&nftables.Set{Table: tbl, Name: "in-p4"})
	if err := c.AddSet(&nftables.Set{Table: tbl, Name: "in-p4", KeyType: nftables.TypeIPAddr, ID: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	w2 := tp.open(t)
	st, err := w2.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// In-A has 3 boxes, in-C 1 (IPv4).
	if st.SetsRemoved != 1 || st.SetsAdded != 1 || st.RulesAdded != 3*5 || st.ElementsAdded != 4 || st.ElementsRemoved != 0 {
		t.Errorf("remaking in-p4: %+v", st)
	}
	check(t, baseFlows(tp))
	check(t, []flow{{"ingress peer range", B.path, C.v4, "tcp", 7001, true}, {"peer+port", C.path, A.v4, "tcp", 7000, true}})
	adoptsUnchanged(t, tp, rs)
}
