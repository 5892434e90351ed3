package policy

import (
	"encoding/json"
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
	var denied, isolatedAllowed, byRule int
	defer func() {
		t.Logf("%d denied, %d allowed in an isolated direction, %d by a named-port or port rule", denied, isolatedAllowed, byRule)
		if denied < models || isolatedAllowed < models || byRule < models/10 {
			t.Errorf("random models too weak")
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
				if d.Isolated && d.Allowed {
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
			for _, ch := range []*Chain{p.Ingress, p.Egress} {
				if ch == nil || p.Namespace+"/"+p.Name != d.Pod {
					continue
				}
				for _, a := range ch.Rules {
					if a.Policy == d.Policy && a.Rule == *d.Rule && a.Ports != nil {
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
