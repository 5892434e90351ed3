package lab

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"lab", "a1", "demo", "abcdefghijkl"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a-b", "A", "abcdefghijklm", "a/b", "a b"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Backend: "ipip", AgentBin: "/bin/true", PodnetBin: "/bin/true"}, `--backend "ipip"`},
		{Options{Nodes: 100, AgentBin: "/bin/true", PodnetBin: "/bin/true"}, "--nodes 100"},
		{Options{PodsPerNode: -1, AgentBin: "/bin/true", PodnetBin: "/bin/true"}, "--pods-per-node -1"},
		{Options{Name: "x-y"}, `lab name "x-y"`},
		{Options{IPv6: true, Backend: HostGW, AgentBin: "/bin/true", PodnetBin: "/bin/true"}, "--ipv6 with --backend host-gw"},
		{Options{}, "AgentBin"},
	} {
		err := tc.o.defaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	o := Options{AgentBin: "/bin/true", PodnetBin: "/bin/true"}
	if err := o.defaults(); err != nil || o.Name != DefaultName || o.Nodes != 2 || o.PodsPerNode != 0 || o.Backend != VXLAN {
		t.Fatalf("defaults %+v %v", o, err)
	}
}

func TestPlanDistinct(t *testing.T) {
	if plan("a") == plan("b") && plan("a") == plan("c") {
		t.Fatal("plan ignores the name")
	}
	for _, n := range []string{"lab", "demo", "x1"} {
		if b := plan(n); b < 64 || b > 127 {
			t.Fatalf("%s: base %d outside 100.64.0.0/10", n, b)
		}
	}
}

func TestClusterCIDR6(t *testing.T) {
	seen := map[netip.Prefix]string{}
	for _, n := range []string{"lab", "demo", "x1", "a", "b", "c"} {
		p := clusterCIDR6(plan(n))
		if !p.Addr().Is6() || p.Bits() != 48 || !netip.MustParsePrefix("fc00::/7").Contains(p.Addr()) || p != p.Masked() {
			t.Fatalf("%s: %s is not a ULA /48", n, p)
		}
		if o, ok := seen[p]; ok && plan(o) != plan(n) {
			t.Fatalf("%s and %s share %s", n, o, p)
		}
		seen[p] = n
	}
	if got := clusterCIDR6(118).String(); got != "fd10:0:118::/48" {
		t.Fatalf("clusterCIDR6(118) = %s", got)
	}
}

func TestStatusJSONDualStack(t *testing.T) {
	l := &Lab{Name: "x", Backend: VXLAN, Phase: "up", ClusterCIDR: netip.MustParsePrefix("10.70.0.0/16"),
		ClusterCIDR6: netip.MustParsePrefix("fd10:0:70::/48"),
		Pods:         []*Pod{{Name: "n1-p1", Node: "n1", IPs: []netip.Addr{netip.MustParseAddr("10.70.3.2"), netip.MustParseAddr("fd10:0:70:3::2")}}}}
	var b bytes.Buffer
	if err := l.Status(&b, true); err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClusterCIDR6 string `json:"clusterCIDR6"`
		Pods         []Pod  `json:"pods"`
	}
	if err := json.Unmarshal(b.Bytes(), &v); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if v.ClusterCIDR6 != "fd10:0:70::/48" || len(v.Pods) != 1 || v.Pods[0].IPv4().String() != "10.70.3.2" || v.Pods[0].IPv6().String() != "fd10:0:70:3::2" {
		t.Fatalf("%+v\n%s", v, b.String())
	}
	b.Reset()
	if err := l.Status(&b, false); err != nil || !strings.Contains(b.String(), "10.70.0.0/16,fd10:0:70::/48") || !strings.Contains(b.String(), "10.70.3.2,fd10:0:70:3::2") {
		t.Fatalf("%v\n%s", err, b.String())
	}
	// An IPv4-only lab records no clusterCIDR6, and its pods no IPv6.
	l.ClusterCIDR6, l.Pods[0].IPs = netip.Prefix{}, l.Pods[0].IPs[:1]
	b.Reset()
	if err := l.Status(&b, true); err != nil || strings.Contains(b.String(), "clusterCIDR6") || l.Pods[0].IPv6().IsValid() {
		t.Fatalf("%v\n%s", err, b.String())
	}
}

func TestStatusJSON(t *testing.T) {
	l := &Lab{Name: "x", Backend: VXLAN, Phase: "up", ClusterCIDR: netip.MustParsePrefix("10.70.0.0/16"),
		Nodes: []*Node{{Name: "n1", Netns: "pl-x-n1", IP: netip.MustParseAddr("100.70.0.11")}},
		Pods:  []*Pod{{Name: "n1-p1", Node: "n1", Netns: "pl-x-n1-p1", IPs: []netip.Addr{netip.MustParseAddr("10.70.3.2")}}}}
	var b bytes.Buffer
	if err := l.Status(&b, true); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Nodes []struct {
			Name         string `json:"name"`
			AgentRunning bool   `json:"agentRunning"`
		} `json:"nodes"`
		Pods []Pod `json:"pods"`
	}
	if err := json.Unmarshal(b.Bytes(), &v); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(v.Nodes) != 1 || v.Nodes[0].Name != "n1" || v.Nodes[0].AgentRunning || len(v.Pods) != 1 || v.Pods[0].IPv4().String() != "10.70.3.2" {
		t.Fatalf("%+v", v)
	}
	b.Reset()
	if err := l.Status(&b, false); err != nil || !strings.Contains(b.String(), "n1-p1") || !strings.Contains(b.String(), "NOT RUNNING") {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if _, err := l.NetnsOf("nope"); err == nil || !strings.Contains(err.Error(), "n1-p1") {
		t.Fatalf("NetnsOf: %v", err)
	}
}

// TestBenchPairs checks what lab bench measures for each backend: every pod
// path is compared with the underlay between the same two nodes, and every
// VXLAN path also gets the node-to-node VXLAN row without pods.
func TestBenchPairs(t *testing.T) {
	mk := func(backend string) *Lab {
		l := &Lab{Backend: backend}
		for i, seg := range []int{0, 1, 0} {
			name := string(rune('a' + i))
			l.Nodes = append(l.Nodes, &Node{Name: name, Netns: "ns-" + name, Segment: seg,
				IP:      netip.AddrFrom4([4]byte{100, 64, byte(seg), byte(10 + i)}),
				Subnets: []netip.Prefix{netip.MustParsePrefix("fd00::/64"), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)}})
			for j := 1; j <= 2; j++ {
				l.Pods = append(l.Pods, &Pod{Name: name + "-p" + string(rune('0'+j)), Node: name, Netns: "ns-" + name + "-p",
					IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i), byte(1 + j)})}})
			}
		}
		return l
	}
	rows := func(l *Lab) []string {
		var s []string
		for _, p := range l.benchPairs() {
			s = append(s, p.what+" "+p.from+">"+p.to+" vs "+p.underlay)
		}
		return s
	}
	want := map[string][]string{
		VXLAN: {
			"node->node underlay, one segment a>c vs ",
			"pod->pod same node a-p1>a-p2 vs node->node underlay, one segment",
			"node->node over vxlan (no pods) a>c:vxlan vs node->node underlay, one segment",
			"pod->pod cross node, vxlan a-p1>c-p1 vs node->node underlay, one segment",
			"node->node underlay, routed a>b vs ",
			"node->node over vxlan, routed underlay (no pods) a>b:vxlan vs node->node underlay, routed",
			"pod->pod cross node, vxlan, routed underlay a-p1>b-p1 vs node->node underlay, routed",
		},
		Auto: {
			"node->node underlay, one segment a>c vs ",
			"pod->pod same node a-p1>a-p2 vs node->node underlay, one segment",
			"pod->pod cross node, host-gw a-p1>c-p1 vs node->node underlay, one segment",
			"node->node underlay, routed a>b vs ",
			"node->node over vxlan (no pods) a>b:vxlan vs node->node underlay, routed",
			"pod->pod cross node, vxlan a-p1>b-p1 vs node->node underlay, routed",
		},
		HostGW: {
			"node->node underlay, one segment a>c vs ",
			"pod->pod same node a-p1>a-p2 vs node->node underlay, one segment",
			"pod->pod cross node, host-gw a-p1>c-p1 vs node->node underlay, one segment",
		},
	}
	for backend, w := range want {
		if got := rows(mk(backend)); strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", backend, got, w)
		}
	}
	l := mk(VXLAN)
	for name, want := range map[string]string{"b:vxlan": "ns-b 10.0.1.0", "b": "ns-b 100.64.1.11", "c-p2": "ns-c-p 10.0.2.3"} {
		ns, ip, err := l.endpoint(name)
		if err != nil || ns+" "+ip != want {
			t.Errorf("endpoint(%q) = %s %s, %v; want %s", name, ns, ip, err, want)
		}
	}
	for _, bad := range []string{"zz:vxlan", "zz"} {
		if _, _, err := l.endpoint(bad); err == nil {
			t.Errorf("endpoint(%q) resolved", bad)
		}
	}
	l.Nodes[1].Subnets = nil
	if _, _, err := l.endpoint("b:vxlan"); err == nil || !strings.Contains(err.Error(), "no IPv4 subnet") {
		t.Errorf("node without subnet: %v", err)
	}
}
