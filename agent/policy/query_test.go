package policy

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestQuery(t *testing.T) {
	a4, a6 := netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("fd00::2")
	b4 := netip.MustParseAddr("10.0.2.3")
	m := Model{
		Namespaces: map[string]map[string]string{"x": {NamespaceNameLabel: "x"}},
		Pods: []Pod{
			{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}, Node: "n1", IPs: []netip.Addr{a4, a6}},
			{Namespace: "x", Name: "b", Labels: map[string]string{"pod": "b"}, Node: "n2", IPs: []netip.Addr{b4}},
		},
		Policies: []*networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny-a"},
			Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}},
		}},
	}
	if got, err := m.Resolve("x/a", 6); err != nil || got != a6 {
		t.Errorf("Resolve x/a v6: %v %v", got, err)
	}
	if got, err := m.Resolve("x/a", 4); err != nil || got != a4 {
		t.Errorf("Resolve x/a v4: %v %v", got, err)
	}
	if _, err := m.Resolve("x/zz", 0); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Resolve missing: %v", err)
	}
	if m.NodeOf(b4) != "n2" || m.NodeOf(netip.MustParseAddr("192.0.2.1")) != "" {
		t.Error("NodeOf")
	}
	e := ExplainModel(m, Packet{Src: b4, Dst: a4, Proto: TCP, Port: 80})
	if e.Verdict != "deny" || !strings.HasPrefix(e.String(), "deny") {
		t.Errorf("b -> a: %s", e)
	}
	e = ExplainModel(m, Packet{Src: a4, Dst: b4, Proto: TCP, Port: 80})
	if e.Verdict != "allow" {
		t.Errorf("a -> b: %s", e)
	}
	for s, want := range map[string]string{"tcp/80": "tcp 80", "UDP/53": "udp 53", "443": "tcp 443"} {
		p, n, err := ParsePort(s)
		if err != nil || p.String()+" "+strconv.Itoa(int(n)) != want {
			t.Errorf("ParsePort(%q) = %v %d %v", s, p, n, err)
		}
	}
	for _, bad := range []string{"tcp/0", "icmp/1", "tcp/x", "tcp/70000"} {
		if _, _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
}
