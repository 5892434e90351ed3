package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podnet/podnet/agent/datastore"
	"github.com/podnet/podnet/agent/policy"
)

// The bench's objects are valid, its simulated addresses avoid the nodes'
// subnets, and compiled as the agents compile them they allow the
// measured ports (and the marker, written last) and deny others.
func TestPolicyBenchObjects(t *testing.T) {
	cidr := netip.MustParsePrefix("10.86.0.0/16")
	avoid := []netip.Prefix{netip.MustParsePrefix("10.86.128.0/24"), netip.MustParsePrefix("10.86.185.0/24")}
	o := genBenchObjects(cidr, avoid, []string{"n1", "n2"}, 300, 100)
	if len(o.Pods) != 300 || len(o.Policies) != 100 {
		t.Fatalf("%d pods, %d policies", len(o.Pods), len(o.Policies))
	}
	if last := o.Policies[len(o.Policies)-1]; last.Name != "pbm-marker" {
		t.Fatalf("last policy %s, want the marker", last.Name)
	}
	for _, p := range o.Pods {
		if err := datastore.ValidatePod(p); err != nil {
			t.Fatal(err)
		}
		a := netip.MustParseAddr(p.Status.PodIP)
		for _, s := range avoid {
			if s.Contains(a) || !cidr.Contains(a) {
				t.Fatalf("pod %s address %s: in %s or outside %s", p.Name, a, s, cidr)
			}
		}
	}
	pols := append(o.Policies, flipPolicy(benchPortFlipA))
	for _, np := range pols {
		if err := datastore.ValidatePolicy(np); err != nil {
			t.Fatal(err)
		}
	}
	client, server := netip.MustParseAddr("10.86.0.2"), netip.MustParseAddr("10.86.185.2")
	pods := append(o.Pods,
		benchTestPod("client", "n1", client), benchTestPod("server", "n2", server))
	m := policy.ModelFromObjects(o.Namespaces, pods, pols)
	cnps := genBenchClusterPolicies(cidr, 100)
	for _, p := range cnps {
		if err := datastore.ValidateClusterPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, withCluster := range []bool{false, true} {
		if withCluster {
			m.ClusterPolicies = cnps
		}
		for port, want := range map[int]string{benchPortRR: "allow", benchPortIperf: "allow", benchPortMarker: "allow",
			benchPortFlipA: "allow", benchPortFlipB: "deny", benchPortMarker + 1: "deny"} {
			e := policy.ExplainModel(m, policy.Packet{Src: client, Dst: server, Proto: policy.TCP, Port: uint16(port)})
			if e.Verdict != want {
				t.Errorf("cluster policies %t: port %d: %s, want %s", withCluster, port, e, want)
			}
			// The measured traffic crosses the Admin tier: passed on to
			// the NetworkPolicies in both directions.
			if withCluster && port == benchPortRR && (len(e.Ingress.Passed) == 0 || len(e.Egress.Passed) == 0) {
				t.Errorf("port %d: not passed by the Admin tier: %s", port, e)
			}
		}
	}
}

func benchTestPod(role, node string, a netip.Addr) *corev1.Pod {
	p := genBenchObjects(netip.MustParsePrefix("10.86.0.0/16"), nil, []string{node}, 1, 0).Pods[0]
	p.Namespace, p.Name = benchNS, role
	p.Labels = map[string]string{"role": role, "tier": "t0"}
	p.Status.PodIP, p.Status.PodIPs = a.String(), []corev1.PodIP{{IP: a.String()}}
	return p
}

// BenchmarkPolicyBenchCompile compiles the bench's full-size load (1,000
// simulated pods, 5,000 policies) for one node, as the agent does on
// every change: the floor of `lab bench-policy`'s programming latency.
func BenchmarkPolicyBenchCompile(b *testing.B) { benchPolicyCompile(b, 1000) }

// BenchmarkPolicyBenchCompile10k is the cold-start size: 10,000 pods.
func BenchmarkPolicyBenchCompile10k(b *testing.B) { benchPolicyCompile(b, 10000) }

func benchPolicyCompile(b *testing.B, nPods int) {
	cidr := netip.MustParsePrefix("10.86.0.0/16")
	o := genBenchObjects(cidr, nil, []string{"n1", "n2"}, nPods, 5000)
	pods := append(o.Pods, benchTestPod("client", "n1", netip.MustParseAddr("10.86.0.2")), benchTestPod("server", "n2", netip.MustParseAddr("10.86.1.2")))
	pols := append(o.Policies, flipPolicy(benchPortFlipA))
	b.ReportAllocs()
	for b.Loop() {
		rs := policy.Compile(policy.ModelFromObjects(o.Namespaces, pods, pols), "n2")
		b.ReportMetric(float64(len(rs.Pods)), "pods")
		b.ReportMetric(float64(len(rs.Profiles)), "profiles")
		b.ReportMetric(float64(rs.RuleCount()), "rules")
		b.ReportMetric(float64(rs.Elements()), "elements")
	}
}

// BenchmarkPolicyBenchRecompile is what the agent does per change at the
// bench's size: the flip policy alternates its port and one Compiler,
// reused, recompiles.
func BenchmarkPolicyBenchRecompile(b *testing.B) {
	for _, n := range []int{0, 500} {
		b.Run(fmt.Sprint(n, "cnp"), func(b *testing.B) { benchRecompile(b, n) })
	}
}

func benchRecompile(b *testing.B, nCluster int) {
	cidr := netip.MustParsePrefix("10.86.0.0/16")
	o := genBenchObjects(cidr, nil, []string{"n1", "n2"}, 1000, 5000)
	pods := append(o.Pods, benchTestPod("client", "n1", netip.MustParseAddr("10.86.0.2")), benchTestPod("server", "n2", netip.MustParseAddr("10.86.1.2")))
	flips := []*networkingv1.NetworkPolicy{flipPolicy(benchPortFlipA), flipPolicy(benchPortFlipB)}
	cnps := genBenchClusterPolicies(cidr, nCluster)
	x := policy.NewCompiler()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		pols := append(slices.Clip(o.Policies), flips[i%2])
		i++
		m := policy.ModelFromObjects(o.Namespaces, pods, pols)
		m.ClusterPolicies = cnps
		x.Compile(m, "n2")
	}
	reused, redone := x.Reused()
	b.ReportMetric(float64(reused), "ns-reused")
	b.ReportMetric(float64(redone), "ns-redone")
}
