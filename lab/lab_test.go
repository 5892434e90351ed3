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
		{Options{}, "AgentBin"},
	} {
		err := tc.o.defaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	o := Options{AgentBin: "/bin/true", PodnetBin: "/bin/true"}
	if err := o.defaults(); err != nil || o.Name != DefaultName || o.Nodes != 2 || o.PodsPerNode != 2 || o.Backend != VXLAN {
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
