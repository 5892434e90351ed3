package policykernel

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/agent/policy"
	"github.com/podnet/podnet/internal/roottest"
)

// scaleNS opens a Writer on a fresh namespace.
func scaleNS(tb testing.TB) (*Writer, int) {
	tb.Helper()
	_, p := roottest.NewNS(tb, "pks")
	h, err := vnetns.GetFromPath(p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	w, err := Open(int(h), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	return w, int(h)
}

func pod4(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}) }
func pod6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0xc8, 14: byte(i >> 8), 15: byte(i)})
}

// scaleRuleset is pods isolated pods (both directions, an IPv4 and an
// IPv6 address each) over profiles profiles (half ingress, half egress)
// of 20 rules each, naming sets pods sets of 10 members (two thirds IPv4),
// four cidr sets and ten ports sets.
func scaleRuleset(pods, profiles, sets int) policy.Ruleset {
	rs := policy.Ruleset{Node: "scale"}
	for j := range sets {
		s := policy.AddrSet{Name: fmt.Sprintf("pods4-%012x", j)}
		if j%3 == 2 {
			s.Name, s.V6 = fmt.Sprintf("pods6-%012x", j), true
		}
		for k := range 10 {
			i := (j*7 + k*131) % pods
			if s.V6 {
				s.Addrs = append(s.Addrs, pod6(i))
			} else {
				s.Addrs = append(s.Addrs, pod4(i))
			}
		}
		slices.SortFunc(s.Addrs, netip.Addr.Compare)
		s.Addrs = slices.Compact(s.Addrs)
		rs.AddrSets = append(rs.AddrSets, s)
	}
	for j := range 2 {
		rs.AddrSets = append(rs.AddrSets,
			policy.AddrSet{Name: fmt.Sprintf("cidr4-%012x", j), Interval: true, Ranges: []policy.AddrRange{
				{From: netip.AddrFrom4([4]byte{10, 100 + byte(j), 0, 0}), To: netip.AddrFrom4([4]byte{10, 100 + byte(j), 7, 255})},
				{From: netip.AddrFrom4([4]byte{10, 100 + byte(j), 9, 0}), To: netip.AddrFrom4([4]byte{10, 100 + byte(j), 255, 255})}}},
			policy.AddrSet{Name: fmt.Sprintf("cidr6-%012x", j), V6: true, Interval: true, Ranges: []policy.AddrRange{
				{From: netip.AddrFrom16([16]byte{0xfd, 0x64, 2: byte(j)}), To: netip.AddrFrom16([16]byte{0xfd, 0x64, 2: byte(j), 3: 0xff, 4: 0xff})}}})
	}
	for j := range 10 {
		ps := policy.PortSet{Name: fmt.Sprintf("ports-%012x", j)}
		for k := range 3 + j%3 {
			ps.Ports = append(ps.Ports, policy.ProtoPort{Proto: policy.TCP, Port: uint16(8000 + 10*j + k)})
		}
		ps.Ports = append(ps.Ports, policy.ProtoPort{Proto: policy.UDP, Port: uint16(5000 + j)})
		rs.PortSets = append(rs.PortSets, ps)
	}
	for p := range profiles {
		prof := policy.Profile{Name: fmt.Sprintf("ingress-%012x", p), Egress: p%2 == 1, Policies: []string{"ns/p"}}
		if prof.Egress {
			prof.Name = fmt.Sprintf("egress-%012x", p)
		}
		for r := range 20 {
			set := rs.AddrSets[(p*3+r*17)%sets].Name
			rule := policy.Rule{Policy: "ns/p", Index: r}
			switch r % 5 {
			case 0:
				rule.Peers, rule.Ports = set, rs.PortSets[(p+r)%10].Name
			case 1:
				rule.Peers, rule.Proto, rule.Range = set, policy.TCP, policy.PortRange{From: 443, To: 443}
			case 2:
				rule.Peers, rule.Proto, rule.Range = fmt.Sprintf("cidr%d-%012x", 4+2*(r%2), p%2), policy.TCP, policy.PortRange{From: 30000, To: 32767}
			case 3:
				rule.Peers = set
			case 4:
				rule.Proto, rule.Range = policy.UDP, policy.PortRange{From: 53, To: 53}
			}
			prof.Rules = append(prof.Rules, rule)
		}
		rs.Profiles = append(rs.Profiles, prof)
	}
	for i := range pods {
		rs.Pods = append(rs.Pods, policy.PodRules{
			ID: fmt.Sprintf("%012x", 0xabc000000+i), Namespace: fmt.Sprintf("ns%d", i%20), Name: fmt.Sprintf("pod%d", i),
			IPs:          []netip.Addr{pod4(i), pod6(i)},
			IngressChain: rs.Profiles[2*(i%(profiles/2))].Name,
			EgressChain:  rs.Profiles[2*(i%(profiles/2))+1].Name,
		})
	}
	slices.SortFunc(rs.Profiles, func(a, b policy.Profile) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.AddrSets, func(a, b policy.AddrSet) int { return strings.Compare(a.Name, b.Name) })
	return rs
}

// onePodChange returns rs with pod i moved to another ingress profile
// and its IPv4 address added to an IPv4 pods set: a label change.
func onePodChange(rs policy.Ruleset, i int) policy.Ruleset {
	out := rs
	out.Pods = slices.Clone(rs.Pods)
	p := &out.Pods[i]
	for _, prof := range rs.Profiles {
		if !prof.Egress && prof.Name != p.IngressChain {
			p.IngressChain = prof.Name
			break
		}
	}
	out.AddrSets = slices.Clone(rs.AddrSets)
	j := slices.IndexFunc(out.AddrSets, func(s policy.AddrSet) bool { return strings.HasPrefix(s.Name, "pods4-") })
	s := &out.AddrSets[j]
	if !slices.Contains(s.Addrs, pod4(i)) {
		s.Addrs = append(slices.Clone(s.Addrs), pod4(i))
		slices.SortFunc(s.Addrs, netip.Addr.Compare)
	}
	return out
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// TestScale programs 10,000 isolated pods over 500 profiles of 20 rules,
// 1,500 pods sets of 10 members, four cidr sets and ten ports sets;
// checks that one-pod changes are small batches and that a second writer
// adopts it all without a change. Times are logged, not asserted.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: programs 10,000 pods")
	}
	roottest.Require(t)
	const pods, profiles, sets = 10000, 500, 1500
	rs := scaleRuleset(pods, profiles, sets)
	w, fd := scaleNS(t)
	load0 := loadavg()
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	full := st
	if st.ChainsAdded != profiles+1 || st.SetsAdded != 4+sets+4+10 || st.RulesAdded != 5+profiles*21 {
		t.Errorf("full apply: %+v", st)
	}
	load1 := loadavg()
	var change []time.Duration
	for round := range 20 {
		r := rs
		if round%2 == 0 {
			r = onePodChange(rs, (round*1237)%pods)
		}
		st, err := w.Apply(r)
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages > 5 || st.Batches != 1 || st.ChainsAdded+st.ChainsRemoved+st.SetsAdded+st.SetsRemoved+st.RulesAdded != 0 || st.ElementsAdded+st.ElementsRemoved < 4 || st.ElementsAdded+st.ElementsRemoved > 5 {
			t.Errorf("one-pod change %d: %+v", round, st)
		}
		change = append(change, st.Duration)
	}
	// A member added to (and removed from) a pods set, no map change.
	var member []time.Duration
	for round := range 20 {
		r := rs
		if round%2 == 0 {
			r = onePodChange(rs, (round*1237+1)%pods)
			r.Pods = rs.Pods
		}
		st, err := w.Apply(r)
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 1 || st.ElementsAdded+st.ElementsRemoved != 1 {
			t.Errorf("one member %d: %+v", round, st)
		}
		member = append(member, st.Duration)
	}
	load2 := loadavg()
	start := time.Now()
	w2, err := Open(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	open := time.Since(start)
	st, err = w2.Apply(rs)
	adopt := time.Since(start)
	w2.Close()
	if err != nil || st.Changed() {
		t.Fatalf("adopting: %+v, %v", st, err)
	}
	load3 := loadavg()
	d, err := w.Dropped()
	if err != nil || len(d) != profiles {
		t.Errorf("Dropped: %d chains, %v", len(d), err)
	}
	st, err = w.Apply(policy.Ruleset{})
	if err != nil {
		t.Fatalf("removing everything: %v", err)
	}
	t.Logf("%d pods, %d profiles x 20 rules, %d pods sets x 10: create from empty %v (%d batches, %d messages; load average before %s, after %s)",
		pods, profiles, sets, full.Duration, full.Batches, full.Messages, load0, load1)
	t.Logf("one-pod change (a pod moved to another profile, a member added): median %v, max %v over %d; one member only: median %v, max %v over %d (load average after %s)",
		median(change), slices.Max(change), len(change), median(member), slices.Max(member), len(member), load2)
	t.Logf("adoption: Open %v, Open + no-op Apply %v (load average after %s); removing everything %v (%d messages)",
		open, adopt, load3, st.Duration, st.Messages)
}

// A batch whose acks do not fit the socket is in the kernel all the same:
// Apply finds that out by reading the table and reports success.
func TestAcksLost(t *testing.T) {
	roottest.Require(t)
	_, fd := scaleNS(t)
	var logs bytes.Buffer
	w, err := Open(fd, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	orig := bufferSizes
	bufferSizes = func(messages, bytes int) (int, int) { s, _ := orig(messages, bytes); return s, 4096 }
	defer func() { bufferSizes = orig }()
	rs := scaleRuleset(100, 20, 30)
	st, err := w.Apply(rs)
	if err != nil || st.ChainsAdded != 21 {
		t.Fatalf("apply with a tiny receive buffer: %+v, %v", st, err)
	}
	if !strings.Contains(logs.String(), "no buffer space") {
		t.Errorf("acks were not lost; log: %s", logs.String())
	}
	bufferSizes = orig
	if st, err := w.Apply(rs); err != nil || st.Changed() {
		t.Errorf("after lost acks: %+v, %v", st, err)
	}
}

// TestScaleMigration converts a table of the previous layout (per-pod
// chains, eight shared sets) with 2,000 pods to the profile layout and
// logs the time; the old objects must all go and a second writer must
// see no difference.
func TestScaleMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: programs 2,000 pods")
	}
	roottest.Require(t)
	const pods = 2000
	_, fd := scaleNS(t)
	var old []OldPod
	for i := range pods {
		c := &OldChain{
			Any4:   []policy.AddrRange{{From: netip.AddrFrom4([4]byte{10, 100, byte(i % 5), 0}), To: netip.AddrFrom4([4]byte{10, 100, byte(i % 5), 255})}},
			Ports4: []OldBox{{Peers: policy.AddrRange{From: pod4(i + 1), To: pod4(i + 1)}, Proto: policy.TCP, From: 8080, To: 8080}},
		}
		old = append(old, OldPod{ID: fmt.Sprintf("%012x", 0xabc000000+i), IPs: []netip.Addr{pod4(i), pod6(i)}, Ingress: c, Egress: c})
	}
	if err := WriteOldLayout(fd, old); err != nil {
		t.Fatal(err)
	}
	rs := scaleRuleset(pods, 100, 300)
	w, err := Open(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if st.Batches != 2 || st.ChainsRemoved != 2*pods || st.SetsRemoved != 8 || st.ElementsRemoved != 4*pods || st.ChainsAdded != 100 {
		t.Errorf("migration: %+v", st)
	}
	for n := range w.applied.chains {
		if !isProfileChain(n) {
			t.Errorf("chain %s left", n)
		}
	}
	w2, err := Open(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	for n := range w2.applied.sets {
		if kindOf(n) == kindOther {
			t.Errorf("set %s left", n)
		}
	}
	if st, err := w2.Apply(rs); err != nil || st.Changed() {
		t.Errorf("after migration: %+v, %v", st, err)
	}
	t.Logf("migrating %d pods (%d old chains) to %d profiles: %v, %d messages in %d batches (load average %s)",
		pods, 2*pods, len(rs.Profiles), st.Duration, st.Messages, st.Batches, loadavg())
}
