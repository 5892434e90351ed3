package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// rulesetsFor compiles m for every node and returns the Ruleset of the
// node of the pod having address a (nil when none).
func rulesetsFor(t testing.TB, m Model) func(a netip.Addr) *Ruleset {
	byNode := map[string]*Ruleset{}
	for _, n := range []string{"n1", "n2", "n3"} {
		rs := Compile(m, n)
		checkInvariants(t, rs)
		byNode[n] = &rs
	}
	return func(a netip.Addr) *Ruleset {
		if p := refPodAt(m, a); p != nil {
			return byNode[p.Node]
		}
		return nil
	}
}

func TestExplainMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	models, packets := 1500, 60
	if testing.Short() {
		models = 300
	}
	var denied, isolatedAllowed, byRule, passed int
	byTier := map[string]int{}
	defer func() {
		t.Logf("%d denied, %d allowed in an isolated direction, %d by a named-port or port rule; cluster policy decisions %v, %d passed",
			denied, isolatedAllowed, byRule, byTier, passed)
		if denied < models || isolatedAllowed < models || byRule < models/10 || passed < models/20 {
			t.Errorf("random models too weak")
		}
		for _, k := range []string{"Admin Accept", "Admin Deny", "Baseline Accept", "Baseline Deny"} {
			if byTier[k] < models/20 {
				t.Errorf("random models too weak: %d decisions by %s rules", byTier[k], k)
			}
		}
	}()
	for i := range models {
		m := genModel(r)
		rsOf := rulesetsFor(t, m)
		for range packets {
			p := genPacket(r, m)
			e := Explain(rsOf(p.Src), rsOf(p.Dst), p)
			want := refAllows(m, p)
			if (e.Verdict == "allow") != want {
				t.Fatalf("model %d: %v: Explain says %q, reference says allow=%v\n%s\nn1:\n%s\nn2:\n%s",
					i, p, e, want, dumpModel(m), Render(Compile(m, "n1")), Render(Compile(m, "n2")))
			}
			if !want {
				denied++
			}
			for _, d := range []Direction{e.Egress, e.Ingress} {
				if d.Tier != "" {
					byTier[d.Tier+" "+d.Action]++
				}
				if len(d.Passed) > 0 {
					passed++
				}
				if d.Isolated && d.Allowed && d.Rule != nil {
					isolatedAllowed++
					if p.Proto != 1 && ruleHasPorts(d, rsOf(p.Src), rsOf(p.Dst)) {
						byRule++
					}
				}
			}
			if !strings.HasPrefix(e.String(), e.Verdict+" ") {
				t.Fatalf("String %q does not start with %q", e, e.Verdict)
			}
		}
	}
}

// ruleHasPorts: the deciding rule of d restricts ports.
func ruleHasPorts(d Direction, rss ...*Ruleset) bool {
	for _, rs := range rss {
		if rs == nil {
			continue
		}
		for _, p := range rs.Pods {
			if p.Namespace+"/"+p.Name != d.Pod {
				continue
			}
			for _, chain := range []string{p.IngressChain, p.EgressChain} {
				prof := rs.FindProfile(chain)
				if prof == nil {
					continue
				}
				for _, r := range prof.Rules {
					if r.Policy == d.Policy && r.Index == *d.Rule && (r.Ports != "" || r.Proto != 0) {
						return true
					}
				}
			}
		}
	}
	return false
}

func dumpModel(m Model) string {
	b, _ := json.MarshalIndent(m, "", " ")
	return string(b)
}

func TestExplain(t *testing.T) {
	m := loadModel(t, "ports")
	n1, n2 := Compile(m, "n1"), Compile(m, "n2")
	ip := netip.MustParseAddr
	client, web1, web2, api := ip("10.4.0.10"), ip("10.4.0.1"), ip("10.4.0.2"), ip("10.4.0.3")
	zero, one := 0, 1
	for _, tc := range []struct {
		name     string
		src, dst *Ruleset
		p        Packet
		verdict  string
		egress   Direction
		ingress  Direction
		str      string
	}{{
		name: "named port per pod, egress and ingress",
		src:  &n1, dst: &n1, p: Packet{client, web1, TCP, 8080}, verdict: "allow",
		egress: Direction{Pod: "app/client", Isolated: true, Allowed: true, Policy: "app/client-egress", Rule: &zero,
			Policies: []string{"app/client-egress"}, Reason: "allowed by app/client-egress egress[0]"},
		ingress: Direction{Pod: "app/web-1", Isolated: true, Allowed: true, Policy: "app/web-ingress", Rule: &zero,
			Policies: []string{"app/web-ingress", "app/web-overlap"}, Reason: "allowed by app/web-ingress ingress[0]"},
		str: "allow tcp 10.4.0.10 -> 10.4.0.1:8080: egress: allowed by app/client-egress egress[0] (pod app/client); ingress: allowed by app/web-ingress ingress[0] (pod app/web-1)",
	}, {
		name: "http is 80 on web-2, not 8080",
		src:  &n1, dst: &n2, p: Packet{client, web2, TCP, 8080}, verdict: "deny",
		egress: Direction{Pod: "app/client", Isolated: true, Policies: []string{"app/client-egress"},
			Reason: "default deny: selected by app/client-egress"},
		ingress: Direction{Pod: "app/web-2", Isolated: true, Policies: []string{"app/web-ingress", "app/web-overlap"},
			Reason: "default deny: selected by app/web-ingress, app/web-overlap"},
		str: "deny tcp 10.4.0.10 -> 10.4.0.2:8080: egress: default deny: selected by app/client-egress (pod app/client); ingress: default deny: selected by app/web-ingress, app/web-overlap (pod app/web-2)",
	}, {
		name: "overlap: first rule in policy order",
		src:  nil, dst: &n1, p: Packet{ip("10.4.0.99"), web1, TCP, 7060}, verdict: "allow",
		egress: Direction{Allowed: true, Reason: "no policy selects 10.4.0.99 for egress"},
		ingress: Direction{Pod: "app/web-1", Isolated: true, Allowed: true, Policy: "app/web-overlap", Rule: &zero,
			Policies: []string{"app/web-ingress", "app/web-overlap"}, Reason: "allowed by app/web-overlap ingress[0]"},
	}, {
		name: "sctp to the sidecar's named port, rule 1",
		src:  &n1, dst: &n1, p: Packet{client, api, SCTP, 3868}, verdict: "allow",
		egress: Direction{Pod: "app/client", Isolated: true, Allowed: true, Policy: "app/client-egress", Rule: &one,
			Policies: []string{"app/client-egress"}, Reason: "allowed by app/client-egress egress[1]"},
		ingress: Direction{Pod: "app/api", Isolated: true, Allowed: true, Policy: "app/api-sctp", Rule: &zero,
			Policies: []string{"app/api-sctp"}, Reason: "allowed by app/api-sctp ingress[0]"},
	}, {
		name: "not a pod on a node: nothing isolates",
		src:  nil, dst: nil, p: Packet{ip("192.0.2.1"), ip("192.0.2.2"), UDP, 53}, verdict: "allow",
		egress:  Direction{Allowed: true, Reason: "no policy selects 192.0.2.1 for egress"},
		ingress: Direction{Allowed: true, Reason: "no policy selects 192.0.2.2 for ingress"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := Explain(tc.src, tc.dst, tc.p)
			if e.Verdict != tc.verdict {
				t.Errorf("verdict %s, want %s", e.Verdict, tc.verdict)
			}
			for _, d := range []struct {
				got, want Direction
				name      string
			}{{e.Egress, tc.egress, "egress"}, {e.Ingress, tc.ingress, "ingress"}} {
				g, _ := json.Marshal(d.got)
				w, _ := json.Marshal(d.want)
				if string(g) != string(w) {
					t.Errorf("%s:\n got %s\nwant %s", d.name, g, w)
				}
			}
			if tc.str != "" && e.String() != tc.str {
				t.Errorf("String:\n got %s\nwant %s", e, tc.str)
			}
		})
	}

	e := Explain(&n1, &n1, Packet{client, web1, TCP, 8080})
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `{"verdict":"allow","packet":{"src":"10.4.0.10","dst":"10.4.0.1","proto":"tcp","port":8080}`) {
		t.Errorf("JSON: %s", b)
	}
	var back Explanation
	if err := json.Unmarshal(b, &back); err != nil || back.String() != e.String() {
		t.Errorf("JSON round trip: %v, %s", err, back)
	}
}

// handRuleset is a node's Ruleset built by hand in the profile layout (no
// Compile): app/web and app/web-2 share an ingress profile of five rules
// (a port set, a cidr with a hole and a TCP range, an IPv6 pods set, an
// IPv6 cidr with a hole and UDP only, a pods set with every port); app/db
// has an ingress profile without rules and an egress one (UDP 53 to
// anywhere, anything to the cidr).
func handRuleset() Ruleset {
	a := netip.MustParseAddr
	return Ruleset{
		Node: "n1",
		Pods: []PodRules{
			{ID: "0000000000db", Namespace: "app", Name: "db", IPs: []netip.Addr{a("10.0.0.2")},
				IngressChain: "ingress-bbbbbbbbbbbb", EgressChain: "egress-cccccccccccc"},
			{ID: "00000000web1", Namespace: "app", Name: "web", IPs: []netip.Addr{a("10.0.0.1"), a("fd00::1")},
				IngressChain: "ingress-aaaaaaaaaaaa"},
			{ID: "00000000web2", Namespace: "app", Name: "web-2", IPs: []netip.Addr{a("10.0.0.3")},
				IngressChain: "ingress-aaaaaaaaaaaa"},
		},
		Profiles: []Profile{
			{Name: "egress-cccccccccccc", Egress: true, Policies: []string{"app/db-egress"}, Rules: []Rule{
				{Policy: "app/db-egress", Index: 0, Proto: UDP, Range: PortRange{53, 53}},
				{Policy: "app/db-egress", Index: 1, Peers: "cidr4-c1c1c1c1c1c1"},
			}},
			{Name: "ingress-aaaaaaaaaaaa", Policies: []string{"app/a", "app/b"}, Rules: []Rule{
				{Policy: "app/a", Index: 0, Peers: "pods4-p1p1p1p1p1p1", Ports: "ports-xxxxxxxxxxxx"},
				{Policy: "app/a", Index: 1, Peers: "cidr4-c1c1c1c1c1c1", Proto: TCP, Range: PortRange{30000, 32767}},
				{Policy: "app/b", Index: 0, Peers: "pods6-p2p2p2p2p2p2"},
				{Policy: "app/b", Index: 2, Peers: "cidr6-c2c2c2c2c2c2", Proto: UDP, Range: PortRange{0, 65535}},
				{Policy: "app/b", Index: 1, Peers: "pods4-p3p3p3p3p3p3"},
			}},
			{Name: "ingress-bbbbbbbbbbbb", Policies: []string{"app/deny-all"}},
		},
		AddrSets: []AddrSet{
			// 10.1.0.0/16 except 10.1.2.0/24
			{Name: "cidr4-c1c1c1c1c1c1", Interval: true, Ranges: []AddrRange{
				{a("10.1.0.0"), a("10.1.1.255")}, {a("10.1.3.0"), a("10.1.255.255")}}},
			// fd00:1::/64 except fd00:1::8/125
			{Name: "cidr6-c2c2c2c2c2c2", V6: true, Interval: true, Ranges: []AddrRange{
				{a("fd00:1::"), a("fd00:1::7")}, {a("fd00:1::10"), a("fd00:1::ffff:ffff:ffff:ffff")}}},
			{Name: "pods4-p1p1p1p1p1p1", Addrs: []netip.Addr{a("10.0.1.1"), a("10.0.1.2")}},
			{Name: "pods4-p3p3p3p3p3p3", Addrs: []netip.Addr{a("10.0.1.1")}},
			{Name: "pods6-p2p2p2p2p2p2", V6: true, Addrs: []netip.Addr{a("fd00::10")}},
		},
		PortSets: []PortSet{
			{Name: "ports-xxxxxxxxxxxx", Ports: []ProtoPort{{TCP, 80}, {TCP, 443}, {UDP, 53}}},
		},
	}
}

func TestExplainProfiles(t *testing.T) {
	rs := handRuleset()
	ip := netip.MustParseAddr
	const icmp, icmp6 Proto = 1, 58
	for _, tc := range []struct {
		name     string
		src, dst string
		proto    Proto
		port     uint16
		srcRS    bool // the source is on rs's node
		want     string
	}{
		// provenance: the first matching rule decides, whatever the policy order
		{"port set", "10.0.1.2", "10.0.0.1", TCP, 80, false,
			"allow tcp 10.0.1.2 -> 10.0.0.1:80: egress: no policy selects 10.0.1.2 for egress; ingress: allowed by app/a ingress[0] (pod app/web)"},
		{"first match of two", "10.0.1.1", "10.0.0.1", TCP, 443, false,
			"allow tcp 10.0.1.1 -> 10.0.0.1:443: egress: no policy selects 10.0.1.1 for egress; ingress: allowed by app/a ingress[0] (pod app/web)"},
		{"later rule, shared profile", "10.0.1.1", "10.0.0.3", TCP, 22, false,
			"allow tcp 10.0.1.1 -> 10.0.0.3:22: egress: no policy selects 10.0.1.1 for egress; ingress: allowed by app/b ingress[1] (pod app/web-2)"},
		{"port set: udp 53", "10.0.1.2", "10.0.0.1", UDP, 53, false,
			"allow udp 10.0.1.2 -> 10.0.0.1:53: egress: no policy selects 10.0.1.2 for egress; ingress: allowed by app/a ingress[0] (pod app/web)"},
		{"port set: udp 80 is not in it", "10.0.1.2", "10.0.0.1", UDP, 80, false,
			"deny udp 10.0.1.2 -> 10.0.0.1:80: egress: no policy selects 10.0.1.2 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		// cidr interval set with a hole, TCP range
		{"range start", "10.1.0.0", "10.0.0.1", TCP, 30000, false,
			"allow tcp 10.1.0.0 -> 10.0.0.1:30000: egress: no policy selects 10.1.0.0 for egress; ingress: allowed by app/a ingress[1] (pod app/web)"},
		{"range end, before the hole", "10.1.1.255", "10.0.0.1", TCP, 32767, false,
			"allow tcp 10.1.1.255 -> 10.0.0.1:32767: egress: no policy selects 10.1.1.255 for egress; ingress: allowed by app/a ingress[1] (pod app/web)"},
		{"past the range", "10.1.0.5", "10.0.0.1", TCP, 32768, false,
			"deny tcp 10.1.0.5 -> 10.0.0.1:32768: egress: no policy selects 10.1.0.5 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"range is tcp only", "10.1.0.5", "10.0.0.1", UDP, 30000, false,
			"deny udp 10.1.0.5 -> 10.0.0.1:30000: egress: no policy selects 10.1.0.5 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"in the hole", "10.1.2.0", "10.0.0.1", TCP, 30000, false,
			"deny tcp 10.1.2.0 -> 10.0.0.1:30000: egress: no policy selects 10.1.2.0 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"end of the hole", "10.1.2.255", "10.0.0.1", TCP, 30000, false,
			"deny tcp 10.1.2.255 -> 10.0.0.1:30000: egress: no policy selects 10.1.2.255 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"after the hole", "10.1.3.0", "10.0.0.1", TCP, 31000, false,
			"allow tcp 10.1.3.0 -> 10.0.0.1:31000: egress: no policy selects 10.1.3.0 for egress; ingress: allowed by app/a ingress[1] (pod app/web)"},
		{"past the cidr", "10.2.0.0", "10.0.0.1", TCP, 31000, false,
			"deny tcp 10.2.0.0 -> 10.0.0.1:31000: egress: no policy selects 10.2.0.0 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		// IPv6 sets
		{"v6 pods set, any port", "fd00::10", "fd00::1", SCTP, 9, false,
			"allow sctp fd00::10 -> [fd00::1]:9: egress: no policy selects fd00::10 for egress; ingress: allowed by app/b ingress[0] (pod app/web)"},
		{"v6 not in the pods set", "fd00::11", "fd00::1", TCP, 80, false,
			"deny tcp fd00::11 -> [fd00::1]:80: egress: no policy selects fd00::11 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"v6 cidr, proto only", "fd00:1::7", "fd00::1", UDP, 5353, false,
			"allow udp fd00:1::7 -> [fd00::1]:5353: egress: no policy selects fd00:1::7 for egress; ingress: allowed by app/b ingress[2] (pod app/web)"},
		{"v6 cidr, other proto", "fd00:1::7", "fd00::1", TCP, 5353, false,
			"deny tcp fd00:1::7 -> [fd00::1]:5353: egress: no policy selects fd00:1::7 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"v6 cidr hole", "fd00:1::8", "fd00::1", UDP, 5353, false,
			"deny udp fd00:1::8 -> [fd00::1]:5353: egress: no policy selects fd00:1::8 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"v6 cidr after the hole", "fd00:1::10", "fd00::1", UDP, 1, false,
			"allow udp fd00:1::10 -> [fd00::1]:1: egress: no policy selects fd00:1::10 for egress; ingress: allowed by app/b ingress[2] (pod app/web)"},
		// protocols without ports: only rules without a port match
		{"icmp, any-port rule", "10.0.1.1", "10.0.0.1", icmp, 0, false,
			"allow 1 10.0.1.1 -> 10.0.0.1:0: egress: no policy selects 10.0.1.1 for egress; ingress: allowed by app/b ingress[1] (pod app/web)"},
		{"icmp with a port is not in a port set", "10.0.1.2", "10.0.0.1", icmp, 80, false,
			"deny 1 10.0.1.2 -> 10.0.0.1:80: egress: no policy selects 10.0.1.2 for egress; ingress: default deny: selected by app/a, app/b (pod app/web)"},
		{"icmpv6, v6 any rule", "fd00::10", "fd00::1", icmp6, 0, false,
			"allow 58 fd00::10 -> [fd00::1]:0: egress: no policy selects fd00::10 for egress; ingress: allowed by app/b ingress[0] (pod app/web)"},
		// egress, default deny without rules, not isolated
		{"egress any peer udp 53", "10.0.0.2", "192.0.2.1", UDP, 53, true,
			"allow udp 10.0.0.2 -> 192.0.2.1:53: egress: allowed by app/db-egress egress[0] (pod app/db); ingress: no policy selects 192.0.2.1 for ingress"},
		{"egress tcp 53 denied", "10.0.0.2", "192.0.2.1", TCP, 53, true,
			"deny tcp 10.0.0.2 -> 192.0.2.1:53: egress: default deny: selected by app/db-egress (pod app/db); ingress: no policy selects 192.0.2.1 for ingress"},
		{"egress icmp to the cidr", "10.0.0.2", "10.1.0.1", icmp, 0, true,
			"allow 1 10.0.0.2 -> 10.1.0.1:0: egress: allowed by app/db-egress egress[1] (pod app/db); ingress: no policy selects 10.1.0.1 for ingress"},
		{"profile without rules", "10.0.1.1", "10.0.0.2", TCP, 80, false,
			"deny tcp 10.0.1.1 -> 10.0.0.2:80: egress: no policy selects 10.0.1.1 for egress; ingress: default deny: selected by app/deny-all (pod app/db)"},
		{"pod to pod on the node", "10.0.0.1", "10.0.0.2", UDP, 53, true,
			"deny udp 10.0.0.1 -> 10.0.0.2:53: egress: no policy selects 10.0.0.1 for egress; ingress: default deny: selected by app/deny-all (pod app/db)"},
		{"not isolated for ingress", "10.0.0.2", "10.0.0.9", UDP, 53, true,
			"allow udp 10.0.0.2 -> 10.0.0.9:53: egress: allowed by app/db-egress egress[0] (pod app/db); ingress: no policy selects 10.0.0.9 for ingress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var src *Ruleset
			if tc.srcRS {
				src = &rs
			}
			e := Explain(src, &rs, Packet{ip(tc.src), ip(tc.dst), tc.proto, tc.port})
			if e.String() != tc.want {
				t.Errorf("\n got %s\nwant %s", e, tc.want)
			}
			for _, d := range []Direction{e.Egress, e.Ingress} {
				checkDirection(t, d)
			}
		})
	}
}

// checkDirection checks that d's fields agree with its Reason.
func checkDirection(t *testing.T, d Direction) {
	t.Helper()
	switch {
	case !d.Isolated:
		if !d.Allowed || d.Pod != "" || d.Policy != "" || d.Rule != nil || d.Policies != nil {
			t.Errorf("not isolated: %+v", d)
		}
	case d.Allowed:
		if d.Rule == nil || !strings.HasPrefix(d.Reason, "allowed by "+d.Policy+" ") ||
			!strings.HasSuffix(d.Reason, fmt.Sprintf("[%d]", *d.Rule)) || len(d.Policies) == 0 {
			t.Errorf("allowed: %+v", d)
		}
	default:
		if d.Rule != nil || d.Policy != "" || d.Reason != "default deny: selected by "+strings.Join(d.Policies, ", ") {
			t.Errorf("denied: %+v", d)
		}
	}
}

func TestExplainProfilesJSON(t *testing.T) {
	rs := handRuleset()
	ip := netip.MustParseAddr
	zero := 0
	e := Explain(&rs, &rs, Packet{ip("10.0.0.2"), ip("10.0.0.3"), UDP, 53})
	want := Explanation{Verdict: "deny", Packet: Packet{ip("10.0.0.2"), ip("10.0.0.3"), UDP, 53},
		Egress: Direction{Pod: "app/db", Isolated: true, Allowed: true, Policy: "app/db-egress", Rule: &zero,
			Policies: []string{"app/db-egress"}, Reason: "allowed by app/db-egress egress[0]"},
		Ingress: Direction{Pod: "app/web-2", Isolated: true, Policies: []string{"app/a", "app/b"},
			Reason: "default deny: selected by app/a, app/b"},
	}
	g, _ := json.Marshal(e)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("\n got %s\nwant %s", g, w)
	}
	if !strings.HasPrefix(string(g), `{"verdict":"deny","packet":{"src":"10.0.0.2","dst":"10.0.0.3","proto":"udp","port":53}`) {
		t.Errorf("JSON: %s", g)
	}
	var back Explanation
	if err := json.Unmarshal(g, &back); err != nil || back.String() != e.String() {
		t.Errorf("JSON round trip: %v, %s", err, back)
	}
}

func TestExplainProfilesInconsistent(t *testing.T) {
	rs := handRuleset()
	rs.Pods[1].IngressChain = "ingress-000000000000"
	e := Explain(nil, &rs, Packet{netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.0.1"), TCP, 80})
	if e.Verdict != "deny" || !e.Ingress.Isolated || e.Ingress.Pod != "app/web" ||
		e.Ingress.Reason != "default deny: chain ingress-000000000000 missing (inconsistent Ruleset)" {
		t.Errorf("%+v", e.Ingress)
	}
}
