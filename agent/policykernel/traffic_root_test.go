package policykernel_test

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/agent/policy"
)

const (
	idA = "00000000000a"
	idB = "00000000000b"
	idC = "00000000000c"
)

func one(a netip.Addr) policy.AddrRange { return policy.AddrRange{From: a, To: a} }

func box(a policy.AddrRange, p policy.Proto, from, to uint16) policy.PortBox {
	return policy.PortBox{Addrs: a, Proto: p, Ports: policy.PortRange{From: from, To: to}}
}

// baseRuleset (pods A, B, C = tp.pods[0..2]):
//
//	A ingress: B on every port; C on tcp/7000, udp/7000, tcp/8000-8010
//	A egress:  B on tcp/7000 and udp/7000 (IPv6: tcp/7000 only)
//	B:         not isolated
//	C ingress: the range A..B on tcp/7001 (A's egress still forbids it)
func baseRuleset(tp *topo) policy.Ruleset {
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	return policy.Ruleset{Node: "n", Pods: []policy.PodRules{
		{ID: idA, Namespace: "default", Name: "a", IPs: []netip.Addr{A.v4, A.v6},
			Ingress: &policy.Chain{
				Any4: []policy.AddrRange{one(B.v4)}, Any6: []policy.AddrRange{one(B.v6)},
				Ports4: []policy.PortBox{box(one(C.v4), policy.TCP, 7000, 7000), box(one(C.v4), policy.UDP, 7000, 7000), box(one(C.v4), policy.TCP, 8000, 8010)},
				Ports6: []policy.PortBox{box(one(C.v6), policy.TCP, 7000, 7000), box(one(C.v6), policy.UDP, 7000, 7000), box(one(C.v6), policy.TCP, 8000, 8010)},
			},
			Egress: &policy.Chain{
				Ports4: []policy.PortBox{box(one(B.v4), policy.TCP, 7000, 7000), box(one(B.v4), policy.UDP, 7000, 7000)},
				Ports6: []policy.PortBox{box(one(B.v6), policy.TCP, 7000, 7000)},
			}},
		{ID: idC, Namespace: "default", Name: "c", IPs: []netip.Addr{C.v4, C.v6},
			Ingress: &policy.Chain{
				Ports4: []policy.PortBox{box(policy.AddrRange{From: A.v4, To: B.v4}, policy.TCP, 7001, 7001)},
				Ports6: []policy.PortBox{box(policy.AddrRange{From: A.v6, To: B.v6}, policy.TCP, 7001, 7001)},
			}},
	}}
}

// baseFlows are what baseRuleset must allow and drop.
func baseFlows(tp *topo) []flow {
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	return []flow{
		{"any-port peer (reply passes A's egress)", B.path, A.v4, "tcp", 7001, true},
		{"any-port peer udp", B.path, A.v4, "udp", 8005, true},
		{"peer+port", C.path, A.v4, "tcp", 7000, true},
		{"peer+port udp", C.path, A.v4, "udp", 7000, true},
		{"other port", C.path, A.v4, "tcp", 7001, false},
		{"other port udp", C.path, A.v4, "udp", 7001, false},
		{"port range box", C.path, A.v4, "tcp", 8005, true},
		{"port range box, other protocol", C.path, A.v4, "udp", 8005, false},
		{"egress allowed", A.path, B.v4, "tcp", 7000, true},
		{"egress allowed udp", A.path, B.v4, "udp", 7000, true},
		{"egress other port", A.path, B.v4, "tcp", 7001, false},
		{"egress other peer", A.path, C.v4, "tcp", 7001, false},
		{"ingress peer range", B.path, C.v4, "tcp", 7001, true},
		{"ingress peer range, other port", B.path, C.v4, "tcp", 7000, false},
		{"unselected pod reached", C.path, B.v4, "tcp", 7001, true},
		{"unselected pod reached udp", A.path, B.v4, "udp", 7000, true},
		{"node to pod", tp.node, A.v4, "tcp", 7001, true},
		{"node to pod udp", tp.node, C.v4, "udp", 8005, true},
		{"pod to node", A.path, A.gw4, "tcp", 7001, true},
		{"v6 any-port peer", B.path, A.v6, "tcp", 7001, true},
		{"v6 peer+port", C.path, A.v6, "tcp", 7000, true},
		{"v6 other port", C.path, A.v6, "tcp", 7001, false},
		{"v6 port range box", C.path, A.v6, "tcp", 8005, true},
		{"v6 egress allowed", A.path, B.v6, "tcp", 7000, true},
		{"v6 egress other protocol", A.path, B.v6, "udp", 7000, false},
		{"v6 egress other peer", A.path, C.v6, "tcp", 7001, false},
		{"v6 ingress peer range", B.path, C.v6, "tcp", 7001, true},
		{"v6 ingress peer range, other port", B.path, C.v6, "tcp", 7000, false},
		{"v6 unselected pod reached", C.path, B.v6, "udp", 7000, true},
		{"v6 node to pod", tp.node, A.v6, "tcp", 7001, true},
		{"v6 pod to node", A.path, A.gw6, "udp", 7001, true},
	}
}

func TestTrafficPolicy(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)

	// Before any policy everything passes.
	check(t, []flow{{"no policy", C.path, A.v4, "tcp", 7001, true}, {"no policy v6", A.path, C.v6, "udp", 7000, true}})

	st, err := w.Apply(baseRuleset(tp))
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsAdded != 4 || st.ChainsRemoved != 0 || st.ElementsAdded == 0 {
		t.Errorf("first apply: %+v", st)
	}
	check(t, baseFlows(tp))

	dropped, err := w.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"in-" + idA, "eg-" + idA, "in-" + idC} {
		if dropped[c] == 0 {
			t.Errorf("chain %s dropped nothing: %v", c, dropped)
		}
	}
	if _, ok := dropped["eg-"+idC]; ok {
		t.Errorf("C has no egress chain, yet: %v", dropped)
	}

	// C's egress isolated to nothing; B may reach C on any port. C still
	// answers B, reaches nobody itself.
	rs := baseRuleset(tp)
	rs.Pods[1].Ingress.Any4 = []policy.AddrRange{one(B.v4)}
	rs.Pods[1].Ingress.Any6 = []policy.AddrRange{one(B.v6)}
	rs.Pods[1].Egress = &policy.Chain{}
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{
		{"reached pod with egress isolated to nothing answers", B.path, C.v4, "tcp", 7000, true},
		{"... udp", B.path, C.v4, "udp", 8005, true},
		{"... v6", B.path, C.v6, "tcp", 7000, true},
		{"egress isolated to nothing", C.path, B.v4, "tcp", 7000, false},
		{"egress isolated to nothing, allowed by A's ingress", C.path, A.v4, "tcp", 7000, false},
		{"egress isolated to nothing v6", C.path, B.v6, "udp", 7000, false},
		{"egress isolated to nothing, node still reachable", C.path, C.gw4, "tcp", 7000, true},
	})
}
