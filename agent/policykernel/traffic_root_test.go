package policykernel_test

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/podnet/podnet/agent/policy"
)

const (
	idA = "00000000000a"
	idB = "00000000000b"
	idC = "00000000000c"
)

// profile is a profile of rules named, as the compiler names them, by a
// hash of its content.
func profile(egress bool, rules ...policy.Rule) policy.Profile {
	prefix := "ingress-"
	if egress {
		prefix = "egress-"
	}
	for i := range rules {
		rules[i].Policy, rules[i].Index = "default/p", i
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%t %v", egress, rules))
	return policy.Profile{Name: fmt.Sprintf("%s%x", prefix, h[:6]), Egress: egress, Policies: []string{"default/p"}, Rules: rules}
}

func podsSet(name string, addrs ...netip.Addr) policy.AddrSet {
	return policy.AddrSet{Name: name, V6: addrs != nil && addrs[0].Is6(), Addrs: addrs}
}

// cidrSet is prefix minus the single address hole.
func cidrSet(name string, prefix netip.Prefix, hole netip.Addr) policy.AddrSet {
	first := prefix.Masked().Addr()
	b := first.AsSlice()
	for i := prefix.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	last, _ := netip.AddrFromSlice(b)
	return policy.AddrSet{Name: name, V6: first.Is6(), Interval: true,
		Ranges: []policy.AddrRange{{From: first, To: hole.Prev()}, {From: hole.Next(), To: last}}}
}

func tcp(from, to uint16) policy.Rule {
	return policy.Rule{Proto: policy.TCP, Range: policy.PortRange{From: from, To: to}}
}

func peer(set string, r policy.Rule) policy.Rule { r.Peers = set; return r }

// sorted sorts rs's profiles and sets by name, as the compiler gives them.
func sorted(rs policy.Ruleset) policy.Ruleset {
	slices.SortFunc(rs.Profiles, func(a, b policy.Profile) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.AddrSets, func(a, b policy.AddrSet) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.PortSets, func(a, b policy.PortSet) int { return cmp.Compare(a.Name, b.Name) })
	return rs
}

// Set names of baseRuleset.
const (
	setB4, setB6 = "pods4-00000000000b", "pods6-00000000000b"
	setC4, setC6 = "pods4-00000000000c", "pods6-00000000000c"
	setNet4      = "cidr4-000000000099"
	setNet6      = "cidr6-000000000099"
	setPorts     = "ports-000000007000"
)

// baseProfiles are the profiles of baseRuleset: A's ingress and egress,
// C's ingress.
func baseProfiles() (ingA, egA, ingC policy.Profile) {
	ingA = profile(false,
		policy.Rule{Peers: setB4}, // B on everything
		policy.Rule{Peers: setB6},
		policy.Rule{Peers: setC4, Ports: setPorts}, // C on tcp/7000, udp/7000
		policy.Rule{Peers: setC6, Ports: setPorts},
		tcp(8000, 8010), // anyone on tcp/8000-8010
	)
	egA = profile(true,
		peer(setB4, tcp(7000, 7000)),
		peer(setB4, policy.Rule{Proto: policy.UDP, Range: policy.PortRange{From: 7000, To: 7000}}),
		peer(setB6, tcp(7000, 7000)),
		peer(setC4, tcp(7001, 7001)),
		peer(setC6, tcp(7001, 7001)),
	)
	ingC = profile(false,
		peer(setNet4, tcp(7001, 7001)), // the pods' /24 (/64) but B
		peer(setNet6, tcp(7001, 7001)),
		policy.Rule{Proto: policy.UDP, Range: policy.PortRange{From: 0, To: 65535}}, // anyone on udp
	)
	return
}

// baseRuleset (pods A, B, C = tp.pods[0..2]):
//
//	A ingress: B on everything; C on tcp/7000 and udp/7000 (ports set);
//	           anyone on tcp/8000-8010
//	A egress:  B on tcp/7000 and udp/7000 (IPv6: tcp/7000 only); C on tcp/7001
//	B:         not isolated
//	C ingress: 10.99.0.0/24 and fd99::/64 except B on tcp/7001; anyone on udp
func baseRuleset(tp *topo) policy.Ruleset {
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	ingA, egA, ingC := baseProfiles()
	return sorted(policy.Ruleset{Node: "n",
		Pods: []policy.PodRules{
			{ID: idA, Namespace: "default", Name: "a", IPs: []netip.Addr{A.v4, A.v6}, IngressChain: ingA.Name, EgressChain: egA.Name},
			{ID: idC, Namespace: "default", Name: "c", IPs: []netip.Addr{C.v4, C.v6}, IngressChain: ingC.Name},
		},
		Profiles: []policy.Profile{ingA, egA, ingC},
		AddrSets: []policy.AddrSet{
			podsSet(setB4, B.v4), podsSet(setB6, B.v6), podsSet(setC4, C.v4), podsSet(setC6, C.v6),
			cidrSet(setNet4, netip.MustParsePrefix("10.99.0.0/24"), B.v4),
			cidrSet(setNet6, netip.MustParsePrefix("fd99::/64"), B.v6),
		},
		PortSets: []policy.PortSet{{Name: setPorts, Ports: []policy.ProtoPort{{Proto: policy.TCP, Port: 7000}, {Proto: policy.UDP, Port: 7000}}}},
	})
}

// baseFlows are what baseRuleset must allow and drop.
func baseFlows(tp *topo) []flow {
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	return []flow{
		{"any-port peer (reply passes A's egress)", B.path, A.v4, "tcp", 7001, true},
		{"any-port peer udp", B.path, A.v4, "udp", 8005, true},
		{"peer+ports set", C.path, A.v4, "tcp", 7000, true},
		{"peer+ports set udp", C.path, A.v4, "udp", 7000, true},
		{"other port", C.path, A.v4, "tcp", 7001, false},
		{"other port udp", C.path, A.v4, "udp", 7001, false},
		{"any peer, port range", C.path, A.v4, "tcp", 8005, true},
		{"any peer, port range, other protocol", C.path, A.v4, "udp", 8005, false},
		{"egress allowed", A.path, B.v4, "tcp", 7000, true},
		{"egress allowed udp", A.path, B.v4, "udp", 7000, true},
		{"egress other port", A.path, B.v4, "tcp", 7001, false},
		{"egress and cidr ingress allowed", A.path, C.v4, "tcp", 7001, true},
		{"egress other port to C", A.path, C.v4, "tcp", 7000, false},
		{"cidr except hole", B.path, C.v4, "tcp", 7001, false},
		{"cidr: other port", B.path, C.v4, "tcp", 7000, false},
		{"any peer on udp", B.path, C.v4, "udp", 8005, true},
		{"unselected pod reached", C.path, B.v4, "tcp", 7001, true},
		{"unselected pod reached udp", A.path, B.v4, "udp", 7000, true},
		{"node to pod", tp.node, A.v4, "tcp", 7001, true},
		{"node to pod udp", tp.node, C.v4, "tcp", 8005, true},
		{"pod to node", A.path, A.gw4, "tcp", 7001, true},
		{"v6 any-port peer", B.path, A.v6, "tcp", 7001, true},
		{"v6 peer+ports set", C.path, A.v6, "tcp", 7000, true},
		{"v6 other port", C.path, A.v6, "tcp", 7001, false},
		{"v6 any peer, port range", C.path, A.v6, "tcp", 8005, true},
		{"v6 egress allowed", A.path, B.v6, "tcp", 7000, true},
		{"v6 egress other protocol", A.path, B.v6, "udp", 7000, false},
		{"v6 egress and cidr ingress allowed", A.path, C.v6, "tcp", 7001, true},
		{"v6 cidr except hole", B.path, C.v6, "tcp", 7001, false},
		{"v6 any peer on udp", B.path, C.v6, "udp", 7000, true},
		{"v6 unselected pod reached", C.path, B.v6, "udp", 7000, true},
		{"v6 node to pod", tp.node, A.v6, "tcp", 7001, true},
		{"v6 pod to node", A.path, A.gw6, "udp", 7001, true},
	}
}

func TestTrafficPolicy(t *testing.T) {
	tp := newTopo(t)
	A, C := tp.pods[0], tp.pods[2]
	w := tp.open(t)

	// Before any policy everything passes.
	check(t, []flow{{"no policy", C.path, A.v4, "tcp", 7001, true}, {"no policy v6", A.path, C.v6, "udp", 7000, true}})

	st, err := w.Apply(baseRuleset(tp))
	if err != nil {
		t.Fatal(err)
	}
	// The forward chain and three profiles; four maps and seven sets;
	// 4 pods members, 2*2 ranges, 2 ports; four map elements of A, two of C.
	if st.ChainsAdded != 4 || st.SetsAdded != 4+7 || st.ElementsAdded != 10+6 || st.Batches != 2 || st.ChainsRemoved+st.SetsRemoved+st.ElementsRemoved != 0 {
		t.Errorf("first apply: %+v", st)
	}
	check(t, baseFlows(tp))

	dropped, err := w.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	ingA, egA, ingC := baseProfiles()
	for _, c := range []string{ingA.Name, egA.Name, ingC.Name} {
		if dropped[c] == 0 {
			t.Errorf("chain %s dropped nothing: %v", c, dropped)
		}
	}
	if len(dropped) != 3 {
		t.Errorf("Dropped: %v", dropped)
	}
	if st, err := w.Apply(baseRuleset(tp)); err != nil || st.Changed() {
		t.Errorf("same ruleset again: %+v, %v", st, err)
	}
}

// A profile that allows everything, and one that allows nothing.
func TestAllowAllAndNothing(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	all, none := profile(false, policy.Rule{}), profile(true)
	rs := sorted(policy.Ruleset{Node: "n",
		Pods: []policy.PodRules{
			{ID: idA, IPs: []netip.Addr{A.v4, A.v6}, IngressChain: all.Name, EgressChain: none.Name},
		},
		Profiles: []policy.Profile{all, none},
	})
	if _, err := w.Apply(rs); err != nil {
		t.Fatal(err)
	}
	check(t, []flow{
		{"allow all", B.path, A.v4, "tcp", 7001, true},
		{"allow all v6", C.path, A.v6, "udp", 8005, true},
		{"egress to nothing", A.path, B.v4, "tcp", 7000, false},
		{"egress to nothing v6", A.path, C.v6, "udp", 7000, false},
		{"egress to nothing, node still reachable", A.path, A.gw4, "tcp", 7000, true},
	})
	if d, err := w.Dropped(); err != nil || d[none.Name] == 0 || d[all.Name] != 0 {
		t.Errorf("Dropped: %v, %v", d, err)
	}
}
