package lab

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// The objects `lab bench-policy` loads into the lab's etcd: simulated pods
// (Pod objects only, no netns) spread over the lab's nodes with addresses
// in the upper half of the cluster CIDR outside the nodes' subnets (so
// they never collide with real pods), namespaces
// labelled team=tK, and policies. Most policies select simulated pods;
// a few select the two measured pods (client and server in namespace
// benchNS) with large peer sets: namespace selectors over many namespaces
// and ipBlocks with exceptions. Every policy on the measured pods allows
// the measured ports, so the traffic measured with them is allowed.

const (
	benchNS     = "pbm"    // the measured pods' namespace (has policies)
	benchFreeNS = "pbfree" // a namespace without policies (CNI ADD baseline)
	benchTeams  = 10
	benchApps   = 25
	// benchPortRR and benchPortIperf are what the measured traffic uses;
	// benchPortFlipA/B the ports the flip policy alternates between.
	benchPortRR    = 7100
	benchPortIperf = 7101
	benchPortFlipA = 7102
	benchPortFlipB = 7103
	// benchPortMarker is allowed only by the last policy written: when it
	// connects, every policy written before is in force.
	benchPortMarker = 7104
)

// benchObjects are the namespaces, simulated pods and policies of one
// load (policies: nPolicies in total, counting the marker policy, which
// is last).
type benchObjects struct {
	Namespaces []*corev1.Namespace
	Pods       []*corev1.Pod
	Policies   []*networkingv1.NetworkPolicy
}

// simAddr is the i-th address of the upper half of cidr.
func simAddr(cidr netip.Prefix, i int) netip.Addr {
	a := cidr.Masked().Addr().As4()
	half := uint32(1) << (32 - cidr.Bits() - 1)
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += half + uint32(i) + 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// simAddrs are n addresses of the upper half of cidr outside avoid.
func simAddrs(cidr netip.Prefix, avoid []netip.Prefix, n int) []netip.Addr {
	var out []netip.Addr
	for i := 0; len(out) < n; i++ {
		a := simAddr(cidr, i)
		if !cidr.Contains(a) {
			break
		}
		if !slices.ContainsFunc(avoid, func(p netip.Prefix) bool { return p.Contains(a) }) {
			out = append(out, a)
		}
	}
	return out
}

func benchNamespaceCount(nPods int) int { return max(1, nPods/20) }

// genBenchObjects makes nPods simulated pods with addresses in cidr
// outside avoid (the nodes' subnets) on nodes, and nPolicies policies.
func genBenchObjects(cidr netip.Prefix, avoid []netip.Prefix, nodes []string, nPods, nPolicies int) benchObjects {
	var o benchObjects
	addrs := simAddrs(cidr, avoid, nPods)
	nNS := benchNamespaceCount(nPods)
	for i := range nNS {
		o.Namespaces = append(o.Namespaces, namespaceObject(fmt.Sprintf("pb-%d", i), map[string]string{"team": fmt.Sprintf("t%d", i%benchTeams), "pbench": "1"}))
	}
	o.Namespaces = append(o.Namespaces, namespaceObject(benchNS, map[string]string{"team": "t0", "pbench": "1"}))
	for i, a := range addrs {
		ip := a.String()
		o.Pods = append(o.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("pb-%d", i%nNS), Name: fmt.Sprintf("s%d", i), UID: types.UID(fmt.Sprintf("pbsim-%d", i)),
				Labels: map[string]string{"app": fmt.Sprintf("a%d", i%benchApps), "tier": fmt.Sprintf("t%d", i%3)}},
			Spec: corev1.PodSpec{NodeName: nodes[i%len(nodes)], Containers: []corev1.Container{{Name: "main", Image: "podnet-bench",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		})
	}
	if nPolicies <= 0 {
		return o
	}
	// About one policy in 250 (at least 2) selects a measured pod.
	nSel := max(2, nPolicies/250)
	for j := range nPolicies - 1 {
		if j < nSel {
			o.Policies = append(o.Policies, measuredPolicy(j, cidr, nNS))
		} else {
			o.Policies = append(o.Policies, simPolicy(j, cidr, nNS))
		}
	}
	o.Policies = append(o.Policies, markerPolicy())
	return o
}

func tcpPorts(ports ...int) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	tcp := corev1.ProtocolTCP
	for _, p := range ports {
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: new(intstr.FromInt32(int32(p)))})
	}
	return out
}

// manyNamespaces selects every team but one: most namespaces.
func manyNamespaces(j int) *metav1.LabelSelector {
	var teams []string
	for t := range benchTeams {
		if t != 1+j%(benchTeams-1) {
			teams = append(teams, fmt.Sprintf("t%d", t))
		}
	}
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: teams}}}
}

// bigBlock is the cluster CIDR (which holds the measured pods) minus a few
// /24s of the simulated pods' half.
func bigBlock(cidr netip.Prefix, j int) *networkingv1.IPBlock {
	b := &networkingv1.IPBlock{CIDR: cidr.Masked().String()}
	for k := range 4 {
		b.Except = append(b.Except, netip.PrefixFrom(simAddr(cidr, 256*(j%8+k*9)), 24).Masked().String())
	}
	return b
}

// measuredPolicy selects the server (even j: ingress) or the client (odd
// j: egress) with large peer sets that allow the measured ports.
func measuredPolicy(j int, cidr netip.Prefix, nNS int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: fmt.Sprintf("pbm-%d", j)}}
	peers := []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: manyNamespaces(j)},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pbench": "1"}}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", j%3)}}},
		{IPBlock: bigBlock(cidr, j)},
	}
	ports := append(tcpPorts(benchPortRR, benchPortIperf, 80+j%50, 8080), tcpPorts(30000)...)
	ports[len(ports)-1].EndPort = new(int32(32767))
	if j%2 == 0 {
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}}
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}
	} else {
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: ports}}
	}
	return np
}

// simPolicy selects simulated pods of one namespace by app label.
func simPolicy(j int, cidr netip.Prefix, nNS int) *networkingv1.NetworkPolicy {
	ns := fmt.Sprintf("pb-%d", j%nNS)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", j)}}
	np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%benchApps)}}
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", j%3)}}},
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", j%benchTeams)}}},
		},
		Ports: tcpPorts(80+j%100, 8080),
	}}
	if j%4 == 0 {
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: bigBlock(cidr, j)}}, Ports: tcpPorts(443, 53)}}
	}
	return np
}

// markerPolicy allows benchPortMarker from client to server (both
// directions' isolation): the last policy written.
func markerPolicy() *networkingv1.NetworkPolicy {
	return twoWayPolicy("pbm-marker", benchPortMarker)
}

// flipPolicy allows port from client to server.
func flipPolicy(port int) *networkingv1.NetworkPolicy {
	return twoWayPolicy("pbm-flip", port)
}

func twoWayPolicy(name string, port int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: name}}
	np.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"client", "server"}}}}
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}, Ports: tcpPorts(port)}}
	np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}}}}, Ports: tcpPorts(port)}}
	return np
}

// genBenchClusterPolicies makes n ClusterNetworkPolicies, both tiers: most
// select simulated namespaces by team or simulated pods by app, with
// Accept, Deny and Pass rules from teams and to networks; about one in 50
// selects the measured pods, in the Admin tier, passing the measured
// ports on to their NetworkPolicies (Pass) and denying others, so the
// measured traffic crosses an Admin chain, a Pass and a NetworkPolicy
// profile.
func genBenchClusterPolicies(cidr netip.Prefix, n int) []*cnp.ClusterNetworkPolicy {
	var out []*cnp.ClusterNetworkPolicy
	team := func(k int) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", k%benchTeams)}}
	}
	tcp := func(ports ...int32) []cnp.ClusterNetworkPolicyProtocol {
		var ps []cnp.ClusterNetworkPolicyProtocol
		for _, p := range ports {
			ps = append(ps, cnp.ClusterNetworkPolicyProtocol{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Number: p}}})
		}
		return ps
	}
	for j := range n {
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pbc-%d", j)}}
		p.Spec.Priority = int32(j % 1000)
		if j%50 == 0 {
			p.Spec.Tier = cnp.AdminTier
			p.Spec.Subject.Pods = &cnp.NamespacedPod{
				NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": benchNS}},
				PodSelector:       metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"client", "server"}}}},
			}
			p.Spec.Ingress = []cnp.ClusterNetworkPolicyIngressRule{
				{Action: cnp.ClusterNetworkPolicyRuleActionPass, From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}},
					Protocols: tcp(benchPortRR, benchPortIperf, benchPortFlipA, benchPortFlipB, benchPortMarker)},
				{Action: cnp.ClusterNetworkPolicyRuleActionDeny, From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: team(j + 3)}},
					Protocols: []cnp.ClusterNetworkPolicyProtocol{{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Range: &cnp.PortRange{Start: 9000, End: 9100}}}}}},
			}
			p.Spec.Egress = []cnp.ClusterNetworkPolicyEgressRule{
				{Action: cnp.ClusterNetworkPolicyRuleActionPass, To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{cnp.CIDR(cidr.Masked().String())}}},
					Protocols: tcp(benchPortRR, benchPortIperf, benchPortFlipA, benchPortFlipB, benchPortMarker)},
				{Action: cnp.ClusterNetworkPolicyRuleActionDeny, To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{cnp.CIDR(fmt.Sprintf("192.0.2.%d/32", j%256))}}}},
			}
			out = append(out, p)
			continue
		}
		p.Spec.Tier = []cnp.Tier{cnp.AdminTier, cnp.BaselineTier}[j%2]
		if j%3 == 0 {
			p.Spec.Subject.Namespaces = team(j)
		} else {
			p.Spec.Subject.Pods = &cnp.NamespacedPod{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pbench": "1"}},
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%benchApps)}}}
		}
		actions := []cnp.ClusterNetworkPolicyRuleAction{cnp.ClusterNetworkPolicyRuleActionAccept, cnp.ClusterNetworkPolicyRuleActionDeny, cnp.ClusterNetworkPolicyRuleActionPass}
		p.Spec.Ingress = []cnp.ClusterNetworkPolicyIngressRule{{Action: actions[j%3], From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: team(j + 1)}}, Protocols: tcp(int32(80+j%100), 8080)}}
		p.Spec.Egress = []cnp.ClusterNetworkPolicyEgressRule{{Action: actions[(j+1)%3], To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{cnp.CIDR(fmt.Sprintf("198.51.100.%d/32", j%256))}}}}}
		out = append(out, p)
	}
	return out
}
