package policykernel_test

import (
	"net/netip"
	"testing"

	"github.com/podnet/podnet/agent/policy"
)

// Interval sets with ranges that run to the family's last address (no
// end element), start at its first, or are adjacent (merged): the
// verdicts hold and a second writer reads them back unchanged.
func TestCIDREdges(t *testing.T) {
	tp := newTopo(t)
	A, B, C := tp.pods[0], tp.pods[1], tp.pods[2]
	w := tp.open(t)
	last4, last6 := netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
	steps := []struct {
		what     string
		ranges4  []policy.AddrRange
		ranges6  []policy.AddrRange
		aIn, bIn bool
	}{
		{"B..last address", []policy.AddrRange{{From: B.v4, To: last4}}, []policy.AddrRange{{From: B.v6, To: last6}}, false, true},
		{"everything", []policy.AddrRange{{From: netip.MustParseAddr("0.0.0.0"), To: last4}}, []policy.AddrRange{{From: netip.IPv6Unspecified(), To: last6}}, true, true},
		{"first address..A", []policy.AddrRange{{From: netip.MustParseAddr("0.0.0.0"), To: A.v4}}, []policy.AddrRange{{From: netip.IPv6Unspecified(), To: A.v6}}, true, false},
		{"adjacent ..A, B..", []policy.AddrRange{{From: netip.MustParseAddr("10.0.0.0"), To: A.v4}, {From: B.v4, To: last4}},
			[]policy.AddrRange{{From: netip.MustParseAddr("fd99::"), To: A.v6}, {From: B.v6, To: netip.MustParseAddr("fd99::ffff")}}, true, true},
		{"around A", []policy.AddrRange{{From: netip.MustParseAddr("10.0.0.0"), To: A.v4.Prev()}, {From: B.v4, To: C.v4}},
			[]policy.AddrRange{{From: netip.MustParseAddr("fd99::"), To: A.v6.Prev()}, {From: B.v6, To: C.v6}}, false, true},
	}
	for k, s := range steps {
		name4, name6 := "cidr4-00000000000"+string(rune('0'+k)), "cidr6-00000000000"+string(rune('0'+k))
		ing := profile(false, peer(name4, policy.Rule{}), peer(name6, policy.Rule{}))
		rs := policy.Ruleset{Node: "n",
			Pods:     []policy.PodRules{{ID: idC, IPs: []netip.Addr{C.v4, C.v6}, IngressChain: ing.Name}},
			Profiles: []policy.Profile{ing},
			AddrSets: []policy.AddrSet{
				{Name: name4, Interval: true, Ranges: s.ranges4},
				{Name: name6, V6: true, Interval: true, Ranges: s.ranges6},
			},
		}
		st, err := w.Apply(sorted(rs))
		if err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if k > 0 && (st.ChainsAdded != 1 || st.ChainsRemoved != 1 || st.SetsAdded != 2 || st.SetsRemoved != 2) {
			t.Errorf("%s: %+v", s.what, st)
		}
		check(t, []flow{
			{s.what + ": A", A.path, C.v4, "tcp", 7001, s.aIn},
			{s.what + ": A v6", A.path, C.v6, "udp", 7001, s.aIn},
			{s.what + ": B", B.path, C.v4, "udp", 7000, s.bIn},
			{s.what + ": B v6", B.path, C.v6, "tcp", 8005, s.bIn},
		})
		adoptsUnchanged(t, tp, sorted(rs))
	}
}
