package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// Small random models over a small universe (few labels, addresses,
// ports), so that random packets often hit pods, selectors and ports.

var (
	genNamespaces = []string{"x", "y", "z"}
	genNodes      = []string{"n1", "n2", ""}
	genPortNames  = []string{"p1", "p2"}
	genPorts      = []uint16{80, 81, 82}
)

func genAddr4(r *rand.Rand) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(16))}) }

func genAddr6(r *rand.Rand) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 14: 0, 15: byte(r.IntN(16))})
}

func genLabels(r *rand.Rand) map[string]string {
	ls := map[string]string{}
	for _, k := range []string{"a", "b"} {
		if r.IntN(3) > 0 {
			ls[k] = fmt.Sprint(1 + r.IntN(2))
		}
	}
	return ls
}

func genSelector(r *rand.Rand) metav1.LabelSelector {
	var s metav1.LabelSelector
	for range r.IntN(3) {
		k := []string{"a", "b"}[r.IntN(2)]
		v := fmt.Sprint(1 + r.IntN(2))
		switch r.IntN(5) {
		case 0:
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[k] = v
		case 1:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{v}})
		case 2:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{v}})
		case 3:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpExists})
		case 4:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpDoesNotExist})
		}
	}
	return s
}

func genPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(4) == 0 {
		return netip.PrefixFrom(genAddr6(r), 124+r.IntN(5)).Masked()
	}
	return netip.PrefixFrom(genAddr4(r), 28+r.IntN(5)).Masked()
}

func genPeer(r *rand.Rand) networkingv1.NetworkPolicyPeer {
	switch r.IntN(4) {
	case 0:
		p := genPrefix(r)
		b := &networkingv1.IPBlock{CIDR: p.String()}
		for range r.IntN(2) {
			e := genPrefix(r)
			b.Except = append(b.Except, e.String())
		}
		return networkingv1.NetworkPolicyPeer{IPBlock: b}
	case 1:
		s := genSelector(r)
		return networkingv1.NetworkPolicyPeer{PodSelector: &s}
	case 2:
		s := genSelector(r)
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: &s}
	default:
		s, n := genSelector(r), genSelector(r)
		return networkingv1.NetworkPolicyPeer{PodSelector: &s, NamespaceSelector: &n}
	}
}

func genPort(r *rand.Rand) networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	if r.IntN(2) == 0 {
		proto := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}[r.IntN(3)]
		p.Protocol = &proto
	}
	switch r.IntN(4) {
	case 0:
	case 1:
		v := intstr.FromInt32(int32(genPorts[r.IntN(len(genPorts))]))
		p.Port = &v
	case 2:
		v := intstr.FromInt32(int32(genPorts[r.IntN(len(genPorts))]))
		e := v.IntVal + int32(r.IntN(3))
		p.Port, p.EndPort = &v, &e
	case 3:
		v := intstr.FromString(genPortNames[r.IntN(len(genPortNames))])
		p.Port = &v
	}
	return p
}

// genRule returns a rule's peers and ports; nil and empty both occur.
func genRule(r *rand.Rand) ([]networkingv1.NetworkPolicyPeer, []networkingv1.NetworkPolicyPort) {
	var peers []networkingv1.NetworkPolicyPeer
	var ports []networkingv1.NetworkPolicyPort
	if r.IntN(4) == 0 {
		peers = []networkingv1.NetworkPolicyPeer{}
	}
	for range r.IntN(3) {
		peers = append(peers, genPeer(r))
	}
	for range r.IntN(3) {
		ports = append(ports, genPort(r))
	}
	return peers, ports
}

// genModel builds a random model through ModelFromObjects. Every address
// belongs to at most one pod; hostNetwork pods use 192.168.0.0/24.
func genModel(r *rand.Rand) Model {
	var nss []*corev1.Namespace
	for _, ns := range genNamespaces[:2] { // z is undeclared: no labels
		nss = append(nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: genLabels(r)}})
	}
	var pods []*corev1.Pod
	used := map[netip.Addr]bool{}
	for i := range 4 + r.IntN(8) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Namespace: genNamespaces[r.IntN(3)], Name: fmt.Sprint("p", i), Labels: genLabels(r)}}
		p.Spec.NodeName = genNodes[r.IntN(3)]
		p.Spec.HostNetwork = r.IntN(8) == 0
		var c corev1.Container
		for _, name := range genPortNames {
			if r.IntN(2) == 0 {
				proto := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, ""}[r.IntN(3)]
				c.Ports = append(c.Ports, corev1.ContainerPort{Name: name, Protocol: proto, ContainerPort: int32(genPorts[r.IntN(3)])})
			}
		}
		p.Spec.Containers = []corev1.Container{c}
		if r.IntN(8) > 0 {
			var cands []netip.Addr
			if p.Spec.HostNetwork {
				cands = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 0, byte(i)})}
			} else {
				switch r.IntN(3) {
				case 0:
					cands = []netip.Addr{genAddr4(r)}
				case 1:
					cands = []netip.Addr{genAddr6(r)}
				default:
					cands = []netip.Addr{genAddr4(r), genAddr6(r)}
				}
			}
			for _, a := range cands {
				if !used[a] {
					used[a] = true
					p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: a.String()})
				}
			}
		}
		pods = append(pods, p)
	}
	var pols []*networkingv1.NetworkPolicy
	for i := range 1 + r.IntN(4) {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{
			Namespace: genNamespaces[r.IntN(3)], Name: fmt.Sprint("np", i)}}
		np.Spec.PodSelector = genSelector(r)
		switch r.IntN(4) {
		case 1:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		case 2:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		case 3:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		if r.IntN(3) == 0 {
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		}
		for range r.IntN(3) {
			from, ports := genRule(r)
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: from, Ports: ports})
		}
		for range r.IntN(3) {
			to, ports := genRule(r)
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports})
		}
		pols = append(pols, np)
	}
	m := ModelFromObjects(nss, pods, pols)
	m.ClusterPolicies = genClusterPolicies(r)
	return m
}

// genPacket picks addresses of the model's pods or the universe.
func genPacket(r *rand.Rand, m Model) Packet {
	pick := func(v4 bool) netip.Addr {
		if r.IntN(3) > 0 && len(m.Pods) > 0 {
			p := m.Pods[r.IntN(len(m.Pods))]
			for _, a := range p.IPs {
				if a.Is4() == v4 {
					return a
				}
			}
		}
		if v4 {
			return genAddr4(r)
		}
		return genAddr6(r)
	}
	v4 := r.IntN(3) > 0
	p := Packet{Src: pick(v4), Dst: pick(v4)}
	p.Proto = []Proto{TCP, UDP, SCTP, 1}[r.IntN(4)]
	p.Port = []uint16{0, 79, 80, 81, 82, 83}[r.IntN(6)]
	return p
}

// genClusterPolicies makes 0-3 valid ClusterNetworkPolicies (few
// priorities, so ties broken by name occur).
func genClusterPolicies(r *rand.Rand) []*cnp.ClusterNetworkPolicy {
	actions := []cnp.ClusterNetworkPolicyRuleAction{cnp.ClusterNetworkPolicyRuleActionAccept, cnp.ClusterNetworkPolicyRuleActionDeny, cnp.ClusterNetworkPolicyRuleActionPass}
	nsPods := func() (*metav1.LabelSelector, *cnp.NamespacedPod) {
		ns := genSelector(r)
		if r.IntN(2) == 0 {
			return &ns, nil
		}
		return nil, &cnp.NamespacedPod{NamespaceSelector: ns, PodSelector: genSelector(r)}
	}
	protocols := func() []cnp.ClusterNetworkPolicyProtocol {
		var out []cnp.ClusterNetworkPolicyProtocol
		for range r.IntN(3) {
			var port *cnp.Port
			switch r.IntN(3) {
			case 1:
				port = &cnp.Port{Number: int32(genPorts[r.IntN(len(genPorts))])}
			case 2:
				s := int32(genPorts[r.IntN(len(genPorts))])
				port = &cnp.Port{Range: &cnp.PortRange{Start: s, End: s + 1 + int32(r.IntN(2))}}
			}
			if port == nil && r.IntN(3) == 0 {
				out = append(out, cnp.ClusterNetworkPolicyProtocol{DestinationNamedPort: genPortNames[r.IntN(len(genPortNames))]})
				continue
			}
			if port == nil {
				port = &cnp.Port{Range: &cnp.PortRange{Start: 1, End: 65535}}
			}
			switch r.IntN(3) {
			case 0:
				out = append(out, cnp.ClusterNetworkPolicyProtocol{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: port}})
			case 1:
				out = append(out, cnp.ClusterNetworkPolicyProtocol{UDP: &cnp.ClusterNetworkPolicyProtocolUDP{DestinationPort: port}})
			default:
				out = append(out, cnp.ClusterNetworkPolicyProtocol{SCTP: &cnp.ClusterNetworkPolicyProtocolSCTP{DestinationPort: port}})
			}
		}
		return out
	}
	var out []*cnp.ClusterNetworkPolicy
	for i := range r.IntN(4) {
		p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("cnp", i)}}
		p.Spec.Tier = []cnp.Tier{cnp.AdminTier, cnp.BaselineTier}[r.IntN(2)]
		p.Spec.Priority = int32(r.IntN(3))
		p.Spec.Subject.Namespaces, p.Spec.Subject.Pods = nsPods()
		for range r.IntN(3) {
			rule := cnp.ClusterNetworkPolicyIngressRule{Action: actions[r.IntN(3)], Protocols: protocols()}
			for range 1 + r.IntN(2) {
				var pe cnp.ClusterNetworkPolicyIngressPeer
				pe.Namespaces, pe.Pods = nsPods()
				rule.From = append(rule.From, pe)
			}
			p.Spec.Ingress = append(p.Spec.Ingress, rule)
		}
		for range r.IntN(3) {
			rule := cnp.ClusterNetworkPolicyEgressRule{Action: actions[r.IntN(3)], Protocols: protocols()}
			for range 1 + r.IntN(2) {
				var pe cnp.ClusterNetworkPolicyEgressPeer
				if r.IntN(3) == 0 {
					pe.Networks = []cnp.CIDR{cnp.CIDR(genPrefix(r).String())}
				} else {
					pe.Namespaces, pe.Pods = nsPods()
				}
				rule.To = append(rule.To, pe)
			}
			p.Spec.Egress = append(p.Spec.Egress, rule)
		}
		out = append(out, p)
	}
	return out
}
