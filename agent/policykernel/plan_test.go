package policykernel

import (
	"log/slog"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/nftables"

	"github.com/podnet/podnet/agent/policy"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func rng(a, b string) policy.AddrRange { return policy.AddrRange{From: ip(a), To: ip(b)} }

func TestElemRoundTrip(t *testing.T) {
	cases := []struct {
		k int
		e elem
	}{
		{kindA4, elem{Pod: ip("10.1.0.1"), Addrs: rng("10.0.0.0", "10.0.0.255")}},
		{kindA4, elem{Pod: ip("10.1.0.1"), Addrs: rng("0.0.0.0", "255.255.255.255")}},
		{kindA6, elem{Pod: ip("fd01::1"), Addrs: rng("fd00::1", "fd00::1")}},
		{kindA6, elem{Pod: ip("fd01::1"), Addrs: rng("fd00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}},
		{kindP4, elem{Pod: ip("10.1.0.1"), Addrs: rng("10.0.0.1", "10.0.0.9"), Proto: policy.TCP, Ports: policy.PortRange{From: 80, To: 8080}}},
		{kindP6, elem{Pod: ip("fd01::1"), Addrs: rng("fd00::1", "fd00::2"), Proto: policy.SCTP, Ports: policy.PortRange{From: 1, To: 65535}}},
	}
	for _, c := range cases {
		got, err := decodeElem(c.k, c.e.encode(c.k))
		if err != nil {
			t.Fatalf("%+v: %v", c.e, err)
		}
		if got != c.e {
			t.Errorf("round trip of %+v in a set of kind %d: got %+v", c.e, c.k, got)
		}
	}
	// Concatenation layout: pod address, peer address, protocol padded
	// to 4, port padded to 4.
	e := elem{Pod: ip("10.1.0.1"), Addrs: rng("10.0.0.1", "10.0.0.1"), Proto: policy.UDP, Ports: policy.PortRange{From: 0x1f90, To: 0x1f90}}
	k := e.encode(kindP4).Key
	if want := []byte{10, 1, 0, 1, 10, 0, 0, 1, 17, 0, 0, 0, 0x1f, 0x90, 0, 0}; !reflect.DeepEqual(k, want) {
		t.Errorf("key %x, want %x", k, want)
	}
	// Elements this writer does not make.
	for _, bad := range []nftables.SetElement{
		{Key: []byte{10, 1, 0, 1, 10, 0, 0, 1}, KeyEnd: []byte{10, 1, 0, 2, 10, 0, 0, 1}},
		{Key: []byte{10, 1, 0, 1, 10, 0, 0}},
	} {
		if e, err := decodeElem(kindA4, bad); err == nil {
			t.Errorf("decoded %x-%x as %+v", bad.Key, bad.KeyEnd, e)
		}
	}
}

func TestDesiredRejects(t *testing.T) {
	good := policy.PodRules{ID: "0123456789ab", IPs: []netip.Addr{ip("10.1.0.1")}, Ingress: &policy.Chain{}}
	bad := []policy.Ruleset{
		{Pods: []policy.PodRules{{ID: "", Ingress: &policy.Chain{}}}},
		{Pods: []policy.PodRules{{ID: "a b", Ingress: &policy.Chain{}}}},
		{Pods: []policy.PodRules{good, good}},
		{Pods: []policy.PodRules{good, {ID: "other", IPs: good.IPs, Ingress: &policy.Chain{}}}},
		{Pods: []policy.PodRules{{ID: "x", Ingress: &policy.Chain{Any4: []policy.AddrRange{rng("fd00::", "fd00::1")}}}}},
		{Pods: []policy.PodRules{{ID: "x", Ingress: &policy.Chain{Any4: []policy.AddrRange{rng("10.0.0.5", "10.0.0.1")}}}}},
		{Pods: []policy.PodRules{{ID: "x", Egress: &policy.Chain{Any4: []policy.AddrRange{rng("10.0.0.1", "10.0.0.5"), rng("10.0.0.5", "10.0.0.9")}}}}},
		{Pods: []policy.PodRules{{ID: "x", Egress: &policy.Chain{Ports6: []policy.PortBox{{Addrs: rng("fd00::", "fd00::1"), Proto: 0}}}}}},
	}
	for i, rs := range bad {
		if _, _, err := desired(rs, nil, nil); err == nil {
			t.Errorf("case %d: accepted %+v", i, rs)
		}
	}
	if _, _, err := desired(policy.Ruleset{Pods: []policy.PodRules{good}}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// planStats plans have -> want without a kernel (the batch is never sent).
// With pods (what have was built from) unchanged pods share have's chains.
func planStats(t *testing.T, have *state, rs policy.Ruleset, pods map[string]policy.PodRules) (Stats, *state, map[string]policy.PodRules) {
	t.Helper()
	want, pods, err := desired(rs, have, pods)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	b := &batch{c: c, log: slog.New(slog.DiscardHandler), logGroup: -1}
	b.plan(have, want)
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.st, want, pods
}

func TestPlanScalesWithDifference(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		rs := bigRuleset(1000)
		st, applied, pods := planStats(t, newState(), rs, nil)
		if st.ChainsAdded != 2001 || st.SetsAdded != 4+8 {
			t.Errorf("first plan: %+v", st)
		}
		if !reuse {
			pods = nil
		}
		if st, _, _ := planStats(t, applied, rs, pods); st.Changed() {
			t.Errorf("same ruleset again: %+v", st)
		}
		// One pod loses one peer range and gains one ports box.
		rs2 := bigRuleset(1000)
		p := &rs2.Pods[500]
		p.Ingress.Any4 = p.Ingress.Any4[1:]
		p.Ingress.Ports4 = append(p.Ingress.Ports4, policy.PortBox{Addrs: rng("192.0.2.1", "192.0.2.1"), Proto: policy.UDP, Ports: policy.PortRange{From: 53, To: 53}})
		st, _, _ = planStats(t, applied, rs2, pods)
		if st.ElementsAdded != 1 || st.ElementsRemoved != 1 || st.Messages != 2 || st.ChainsAdded+st.ChainsRemoved+st.SetsAdded+st.SetsRemoved != 0 {
			t.Errorf("reuse %t: one-pod change: %+v", reuse, st)
		}
		// A pod goes: its map elements, two chains, its elements.
		rs3 := bigRuleset(1000)
		rs3.Pods = append(rs3.Pods[:10], rs3.Pods[11:]...)
		st, _, _ = planStats(t, applied, rs3, pods)
		if st.ChainsRemoved != 2 || st.SetsRemoved != 0 || st.ElementsRemoved != 4+2*23 || st.ChainsAdded != 0 || st.Messages > 20 {
			t.Errorf("reuse %t: one pod removed: %+v", reuse, st)
		}
		// Every pod goes: the shared sets are made again rather than
		// emptied element by element.
		st, _, _ = planStats(t, applied, policy.Ruleset{}, pods)
		if st.ChainsRemoved != 2000 || st.SetsRemoved != 8 || st.SetsAdded != 8 || st.ElementsRemoved != 4000+46000 || st.Messages > 16+4000+16 {
			t.Errorf("reuse %t: every pod removed: %+v", reuse, st)
		}
		// A pod's addresses change (it loses its IPv6 one): its map
		// elements and its elements in the sets (every one is keyed by
		// the pod's address), 23 per direction, 15 of them IPv4.
		rs4 := bigRuleset(1000)
		rs4.Pods[7].IPs = []netip.Addr{ip("10.201.0.7")}
		st, _, _ = planStats(t, applied, rs4, pods)
		if st.ElementsRemoved != 4+2*23 || st.ElementsAdded != 2+2*15 || st.ChainsAdded+st.SetsAdded+st.RulesAdded != 0 {
			t.Errorf("reuse %t: one pod's addresses changed: %+v", reuse, st)
		}
	}
}

// The applied state must not change when the caller changes the Ruleset
// it passed.
func TestAppliedPodsArePrivate(t *testing.T) {
	rs := bigRuleset(3)
	_, applied, pods := planStats(t, newState(), rs, nil)
	rs.Pods[1].Ingress.Any4[0].To = rs.Pods[1].Ingress.Any4[0].From
	st, _, _ := planStats(t, applied, rs, pods)
	if st.ElementsAdded != 1 || st.ElementsRemoved != 1 {
		t.Errorf("change made in place after apply: %+v", st)
	}
}

// Each element is keyed by the pod's own address: a pod with several
// addresses of a family has its peers once per address. An orphan element
// (no map entry led to it when the table was read) that a pod claims
// again stays where it is.
func TestPlanSharedElements(t *testing.T) {
	rs := policy.Ruleset{Pods: []policy.PodRules{{ID: "0123456789ab", IPs: []netip.Addr{ip("10.1.0.1"), ip("10.1.0.2"), ip("fd00::1")},
		Ingress: &policy.Chain{
			Any4:   []policy.AddrRange{rng("10.2.0.0", "10.2.0.255"), rng("10.3.0.0", "10.3.0.255")},
			Any6:   []policy.AddrRange{rng("fd02::", "fd02::ff")},
			Ports4: []policy.PortBox{{Addrs: rng("10.4.0.1", "10.4.0.1"), Proto: policy.TCP, Ports: policy.PortRange{From: 80, To: 80}}},
		}}}}
	st, applied, _ := planStats(t, newState(), rs, nil)
	if st.ElementsAdded != 3+2*2+2*1+1 || st.ChainsAdded != 2 || st.SetsAdded != 4+8 {
		t.Errorf("first plan: %+v", st)
	}
	cs := applied.chains["in-0123456789ab"]
	for _, pod := range []string{"10.1.0.1", "10.1.0.2"} {
		if _, ok := cs.sets[kindA4][elem{Pod: ip(pod), Addrs: rng("10.3.0.0", "10.3.0.255")}]; !ok {
			t.Errorf("no element for pod address %s: %v", pod, cs.sets[kindA4])
		}
	}

	// The table as read when the map entries were gone: the chain
	// exists, its elements are orphans.
	have := newState()
	have.table, have.base, have.baseOK = true, true, true
	for i := range numMaps {
		have.maps[i] = map[netip.Addr]string{}
	}
	for i := range numSets {
		have.sets[i] = true
	}
	have.chains["in-0123456789ab"] = &chainState{exists: true, rulesOK: true}
	for k, els := range cs.sets {
		have.orphans[setIndex(true, k)] = els
	}
	have.orphans[setIndex(true, kindA6)] = map[elem]struct{}{{Pod: ip("fd00::9"), Addrs: rng("fd02::", "fd02::ff")}: {}}
	st, _, _ = planStats(t, have, rs, nil)
	if st.ElementsAdded != 3+1 || st.ElementsRemoved != 1 || st.RulesAdded+st.ChainsAdded != 0 {
		t.Errorf("orphans claimed again: %+v", st)
	}

	// The same orphans when the chain is new and the only other pod
	// chain of the direction goes: the sets with elements to remove are
	// made again (in-a4, in-p4, in-a6), the claimed elements with them.
	delete(have.chains, "in-0123456789ab")
	have.chains["in-other"] = &chainState{exists: true, rulesOK: true, sets: [numKinds]map[elem]struct{}{kindA4: {{Pod: ip("10.9.0.1"), Addrs: rng("10.2.0.0", "10.2.0.255")}: {}}}}
	st, want, _ := planStats(t, have, rs, nil)
	n := 0
	for _, els := range want.chains["in-0123456789ab"].sets {
		n += len(els)
	}
	if st.SetsRemoved != 3 || st.SetsAdded != 3 || st.ElementsAdded != 3+n || st.ChainsAdded != 1 || st.ChainsRemoved != 1 {
		t.Errorf("orphans claimed while the set is made again: %+v", st)
	}
}
