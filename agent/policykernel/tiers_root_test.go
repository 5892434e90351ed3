package policykernel_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/agent/policykernel"
)

// Profiles of the tier tests, named by hand so that a chain that goes to
// another sorts before it (the order a batch would make them in by name).
const (
	tierHead  = "ingress-0000000000a1"
	tierOpen  = "ingress-0000000000b1"
	tierTail  = "ingress-0000000000f1"
	tierHead2 = "ingress-0000000000a2"
	tierOpen2 = "ingress-0000000000a3"
	tierTail2 = "ingress-0000000000f2"
	tierSet1  = "pods4-0000000000e1"
	tierSet2  = "pods4-0000000000e2"
)

func act(a policy.Action, r policy.Rule) policy.Rule {
	r.Action, r.Tier, r.Policy = a, "Admin", "cnp"
	return r
}

// tierRuleset: pods T, P1, P2 = tp.pods[0..2].
//
//	T ingress, head: Deny P1 on tcp/7000; Pass P2 on tcp/7000-7001;
//	  Allow anyone on tcp/7000-7001; then goto tail
//	tail: Allow P2 on tcp/7000 (second: P2 on everything); drop
//	P1 ingress, Open: Deny P2 (second: Deny P2 on tcp/7000, then goto
//	  the tail instead of Open)
//
// The second ruleset has other names for all three (a profile's name is
// a hash of its content, Next included).
func tierRuleset(tp *topo, second bool) policy.Ruleset {
	T, P1, P2 := tp.pods[0], tp.pods[1], tp.pods[2]
	head, open, tail := tierHead, tierOpen, tierTail
	tailRule := peer(tierSet2, tcp(7000, 7000))
	openRule := act(policy.Deny, policy.Rule{Peers: tierSet2})
	if second {
		head, open, tail = tierHead2, tierOpen2, tierTail2
		tailRule = policy.Rule{Peers: tierSet2}
		openRule = act(policy.Deny, peer(tierSet2, tcp(7000, 7000)))
	}
	openP := policy.Profile{Name: open, Rules: []policy.Rule{openRule}, Open: true}
	if second {
		openP.Open, openP.Next = false, tail
	}
	return sorted(policy.Ruleset{Node: "n",
		Pods: []policy.PodRules{
			{ID: idA, Namespace: "default", Name: "t", IPs: []netip.Addr{T.v4, T.v6}, IngressChain: head},
			{ID: idB, Namespace: "default", Name: "p1", IPs: []netip.Addr{P1.v4, P1.v6}, IngressChain: open},
		},
		Profiles: []policy.Profile{
			{Name: head, Next: tail, Rules: []policy.Rule{
				act(policy.Deny, peer(tierSet1, tcp(7000, 7000))),
				act(policy.Pass, peer(tierSet2, tcp(7000, 7001))),
				act(policy.Allow, tcp(7000, 7001)),
			}},
			{Name: tail, Policies: []string{"default/np"}, Rules: []policy.Rule{tailRule}},
			openP,
		},
		AddrSets: []policy.AddrSet{podsSet(tierSet1, P1.v4), podsSet(tierSet2, P2.v4)},
	})
}

func tierFlows(tp *topo, second bool) []flow {
	T, P1, P2 := tp.pods[0], tp.pods[1], tp.pods[2]
	return []flow{
		{"Deny before a matching Allow", P1.path, T.v4, "tcp", 7000, false},
		{"Pass, the tail allows", P2.path, T.v4, "tcp", 7000, true},
		{"Pass skips the head's Allow; the tail decides", P2.path, T.v4, "tcp", 7001, second},
		{"Allow in the head", P1.path, T.v4, "tcp", 7001, true},
		{"no rule: the tail drops", P1.path, T.v4, "tcp", 8005, false},
		{"v6: the head's Allow (v4 sets)", P2.path, T.v6, "tcp", 7001, true},
		{"v6 no rule: the tail drops", P2.path, T.v6, "tcp", 8005, false},
		{"Deny in an Open profile", P2.path, P1.v4, "tcp", 7000, false},
		{"Open: the rest", P2.path, P1.v4, "tcp", 7001, second},
		{"Open: no rule", T.path, P1.v4, "tcp", 7000, !second},
		{"Open: v6 (a v4 Deny)", P2.path, P1.v6, "udp", 7000, !second},
	}
}

func TestTiers(t *testing.T) {
	tp := newTopo(t)
	w := tp.open(t)
	rs1, rs2 := tierRuleset(tp, false), tierRuleset(tp, true)
	st, err := w.Apply(rs1)
	if err != nil {
		t.Fatal(err)
	}
	// Three profile chains and the forward chain, made in the first
	// batch: the head's rules go to the tail made in the same batch.
	if st.ChainsAdded != 4 || st.Batches != 2 || st.RulesAdded != 5+4+2+1 {
		t.Errorf("first apply: %+v", st)
	}
	check(t, tierFlows(tp, false))
	d, err := w.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	// The head drops only by its Deny rule, the Open profile only by its
	// Deny rule: their counters are counted.
	for _, c := range []string{tierHead, tierTail, tierOpen} {
		if d[c] == 0 {
			t.Errorf("chain %s dropped nothing: %v", c, d)
		}
	}
	adoptsUnchanged(t, tp, rs1)

	// Every chain replaced: the new ones go to a new tail made in the
	// same preparatory batch; the old head and Open chains go with the
	// tail they went to.
	st, err = w.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsAdded != 3 || st.ChainsRemoved != 3 || st.Batches != 2 {
		t.Errorf("second ruleset: %+v", st)
	}
	check(t, tierFlows(tp, true))
	if chains, _ := tableContent(t, tp); len(chains) != 4 {
		t.Errorf("chains after the second ruleset: %v", chains)
	}
	adoptsUnchanged(t, tp, rs2)

	// A tail emptied behind the writer's back is drift: a restarted
	// writer rewrites it (its Allow and its drop), nothing else.
	c := tp.conn(t)
	c.FlushChain(&nftables.Chain{Table: tbl, Name: tierTail2})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	w2 := tp.open(t)
	st, err = w2.Apply(rs2)
	if err != nil || st.RulesAdded != 2 || st.Batches != 1 || st.ChainsAdded+st.ChainsRemoved+st.ElementsAdded+st.ElementsRemoved != 0 {
		t.Errorf("repairing the tail: %+v, %v", st, err)
	}
	check(t, tierFlows(tp, true))

	// And back: the tail two chains go to goes with them.
	st, err = w2.Apply(rs1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsAdded != 3 || st.ChainsRemoved != 3 {
		t.Errorf("back to the first ruleset: %+v", st)
	}
	check(t, tierFlows(tp, false))
	adoptsUnchanged(t, tp, rs1)
}

// A Next that is not a profile of the same direction, or a loop, is
// refused before anything is sent.
func TestTiersRefused(t *testing.T) {
	tp := newTopo(t)
	w := tp.open(t)
	rs := tierRuleset(tp, false)
	for _, f := range []func(p *policy.Profile){
		func(p *policy.Profile) { p.Next = "ingress-00000000ffff" },
		func(p *policy.Profile) { p.Next = p.Name },
		func(p *policy.Profile) { p.Next = tierHead },
	} {
		bad := tierRuleset(tp, false)
		bad.Profiles = append([]policy.Profile(nil), rs.Profiles...)
		for i := range bad.Profiles {
			if bad.Profiles[i].Name == tierTail {
				f(&bad.Profiles[i])
			}
		}
		if st, err := w.Apply(bad); err == nil || st.Changed() {
			t.Errorf("bad Next applied: %+v, %v", st, err)
		}
	}
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
}

// With NFLOG, a Deny rule's drops are logged too, under the chain's name.
func TestTiersNFLOG(t *testing.T) {
	tp := newTopo(t)
	T, P1, P2 := tp.pods[0], tp.pods[1], tp.pods[2]
	const group = 18
	w, err := policykernel.Open(tp.nodeFd, nil, policykernel.WithNFLOG(group))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rs := tierRuleset(tp, false)
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	// Base 5; head: Deny (log, drop), Pass, Allow, goto; tail: Allow,
	// log, drop; Open: Deny (log, drop).
	if st.RulesAdded != 5+5+3+2 {
		t.Errorf("rules with NFLOG: %+v", st)
	}
	next := nflogListen(t, tp.nodeFd, group)
	check(t, []flow{{"Deny", P1.path, T.v4, "tcp", 7000, false}})
	if seen := next(tierHead, 3*time.Second); !lastIs(seen, tierHead, P1.v4, T.v4, unix.IPPROTO_TCP, 7000) {
		t.Errorf("Deny in the head: %+v", seen)
	}
	check(t, []flow{{"tail", P1.path, T.v4, "tcp", 8005, false}})
	if seen := next(tierTail, 3*time.Second); !lastIs(seen, tierTail, P1.v4, T.v4, unix.IPPROTO_TCP, 8005) {
		t.Errorf("drop in the tail: %+v", seen)
	}
	check(t, []flow{{"Open's Deny", P2.path, P1.v4, "tcp", 7001, false}})
	if seen := next(tierOpen, 3*time.Second); !lastIs(seen, tierOpen, P2.v4, P1.v4, unix.IPPROTO_TCP, 7001) {
		t.Errorf("Deny in the Open profile: %+v", seen)
	}
	check(t, tierFlows(tp, false))
	adoptsUnchanged(t, tp, rs, policykernel.WithNFLOG(group))
}
