package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// bigModel is a synthetic cluster: pods spread over nodes n0.. and
// namespaces ns00.., with scattered addresses (both families) and named
// ports differing per pod. Of every 50 policies, one selects a whole
// namespace with every pod of the cluster as ingress peers (ports 80-90
// and the named port http), one egress to every pod's named port http
// plus the IPv4 world outside 10/8 on udp 53; the others select one app
// of their namespace, allow another app of it on http and 443, and egress
// to one app of a labelled namespace set.
func bigModel(pods, policies, nodes, namespaces int) Model {
	r := rand.New(rand.NewPCG(7, 8))
	var nss []*corev1.Namespace
	for i := range namespaces {
		nss = append(nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("ns%02d", i), Labels: map[string]string{"team": fmt.Sprint("t", i%5)}}})
	}
	used := map[netip.Addr]bool{}
	var ps []*corev1.Pod
	for i := range pods {
		var a netip.Addr
		for a = netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}); used[a]; {
			a = netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
		used[a] = true
		b := a.As4()
		a6 := netip.AddrFrom16([16]byte{0xfd, 0, 12: b[0], 13: b[1], 14: b[2], 15: b[3]})
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%02d", i%namespaces), Name: fmt.Sprint("pod-", i),
				Labels: map[string]string{"app": fmt.Sprint("app-", r.IntN(20)), "tier": fmt.Sprint(r.IntN(3))}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprint("n", i%nodes), Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: int32(8080 + i%3)}, {Name: "metrics", ContainerPort: 9090}}}}},
			Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: a.String()}, {IP: a6.String()}}},
		}
		ps = append(ps, p)
	}
	port := func(v intstr.IntOrString) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: &v}
	}
	udp := corev1.ProtocolUDP
	var pols []*networkingv1.NetworkPolicy
	for j := range policies {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns%02d", r.IntN(namespaces)), Name: fmt.Sprint("np-", j)}}
		switch j % 50 {
		case 7:
			end := int32(90)
			p80 := port(intstr.FromInt32(80))
			p80.EndPort = &end
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{p80, port(intstr.FromString("http"))},
			}}
		case 8:
			dns := port(intstr.FromInt32(53))
			dns.Protocol = &udp
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"))}},
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}},
					Ports: []networkingv1.NetworkPolicyPort{dns}},
			}
		default:
			np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app-", r.IntN(20)), "tier": fmt.Sprint(r.IntN(3))}}
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app-", r.IntN(20))}}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http")), port(intstr.FromInt32(443))},
			}}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint("t", r.IntN(5))}},
					PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprint("app-", r.IntN(20)), fmt.Sprint("app-", r.IntN(20))}}}},
				}},
			}}
		}
		pols = append(pols, np)
	}
	return ModelFromObjects(nss, ps, pols)
}

func benchCompile(b *testing.B, pods, policies, nodes, namespaces int) {
	m := bigModel(pods, policies, nodes, namespaces)
	b.ReportAllocs()
	b.ResetTimer()
	var rs Ruleset
	for b.Loop() {
		rs = Compile(m, "n0")
	}
	b.StopTimer()
	b.ReportMetric(float64(len(rs.Pods)), "pods")
	b.ReportMetric(float64(len(rs.Profiles)), "profiles")
	b.ReportMetric(float64(rs.RuleCount()), "rules")
	b.ReportMetric(float64(rs.Elements()), "elements")
	if errs := invariantErrors(rs); errs != nil {
		b.Fatal(errs[0])
	}
}

// BenchmarkCompile: 1,000 pods on 10 nodes in 50 namespaces, 5,000
// policies; one node's Ruleset.
func BenchmarkCompile(b *testing.B) { benchCompile(b, 1000, 5000, 10, 50) }

// BenchmarkCompile10k: 10,000 pods on 100 nodes, 5,000 policies.
func BenchmarkCompile10k(b *testing.B) { benchCompile(b, 10000, 5000, 100, 50) }

// bigClusterPolicies are n ClusterNetworkPolicies over bigModel's
// namespaces and labels, alternating tiers: subjects by namespace team or
// pod app, ingress from namespaces or pods, egress to pods or networks,
// with Accept, Deny and Pass rules and TCP ports or ranges.
func bigClusterPolicies(n int) []*cnp.ClusterNetworkPolicy {
	actions := []cnp.ClusterNetworkPolicyRuleAction{cnp.ClusterNetworkPolicyRuleActionAccept, cnp.ClusterNetworkPolicyRuleActionDeny, cnp.ClusterNetworkPolicyRuleActionPass}
	var out []*cnp.ClusterNetworkPolicy
	for i := range n {
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("cnp-", i)}}
		p.Spec.Tier = []cnp.Tier{cnp.AdminTier, cnp.BaselineTier}[i%2]
		p.Spec.Priority = int32(i % 1000)
		if i%3 == 0 {
			p.Spec.Subject.Namespaces = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint("t", i%5)}}
		} else {
			p.Spec.Subject.Pods = &cnp.NamespacedPod{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app-", i%20)}}}
		}
		action := actions[i%3]
		if p.Spec.Tier == cnp.BaselineTier && action == cnp.ClusterNetworkPolicyRuleActionPass {
			action = cnp.ClusterNetworkPolicyRuleActionAccept
		}
		port := &cnp.Port{Number: int32(80 + i%5)}
		if i%4 == 0 {
			port = &cnp.Port{Range: &cnp.PortRange{Start: 8000, End: 8100}}
		}
		p.Spec.Ingress = []cnp.ClusterNetworkPolicyIngressRule{{
			Action:    action,
			From:      []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint("t", (i+1)%5)}}}},
			Protocols: []cnp.ClusterNetworkPolicyProtocol{{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: port}}},
		}}
		p.Spec.Egress = []cnp.ClusterNetworkPolicyEgressRule{{
			Action: actions[(i+1)%3],
			To:     []cnp.ClusterNetworkPolicyEgressPeer{{Pods: &cnp.NamespacedPod{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprint(i % 3)}}}}},
		}, {
			Action: cnp.ClusterNetworkPolicyRuleActionDeny,
			To:     []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{cnp.CIDR(fmt.Sprintf("192.168.%d.0/24", i%256))}}},
		}}
		if p.Spec.Egress[0].Action == cnp.ClusterNetworkPolicyRuleActionPass && p.Spec.Tier == cnp.BaselineTier {
			p.Spec.Egress[0].Action = cnp.ClusterNetworkPolicyRuleActionDeny
		}
		out = append(out, p)
	}
	return out
}

// BenchmarkCompileCluster10k: BenchmarkCompile10k's model plus 500
// ClusterNetworkPolicies; the agent's incremental Compiler after one
// NetworkPolicy changed (what a change costs before the kernel).
func BenchmarkCompileCluster10k(b *testing.B) {
	for _, n := range []int{0, 500} {
		b.Run(fmt.Sprint(n, "cnp"), func(b *testing.B) { benchIncremental(b, n) })
	}
}

func benchIncremental(b *testing.B, cnps int) {
	m := bigModel(10000, 5000, 100, 50)
	m.ClusterPolicies = bigClusterPolicies(cnps)
	x := NewCompiler()
	rs := x.Compile(m, "n0")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		np := m.Policies[i%len(m.Policies)].DeepCopy()
		np.Labels = map[string]string{"v": fmt.Sprint(i)}
		m.Policies[i%len(m.Policies)] = np
		rs = x.Compile(m, "n0")
	}
	b.StopTimer()
	b.ReportMetric(float64(len(rs.Pods)), "pods")
	b.ReportMetric(float64(len(rs.Profiles)), "profiles")
	b.ReportMetric(float64(rs.RuleCount()), "rules")
	if errs := invariantErrors(rs); errs != nil {
		b.Fatal(errs[0])
	}
}
