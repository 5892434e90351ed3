package policy

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// A direct evaluation of NetworkPolicy semantics on a Model, written
// independently of the compiler (no ranges, no indexes, own selector
// matching), for valid policies only. It is slow and obvious on purpose.

func refSelects(s *metav1.LabelSelector, ls map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := ls[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := ls[e.Key]
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case metav1.LabelSelectorOpNotIn:
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case metav1.LabelSelectorOpExists:
			if !ok {
				return false
			}
		case metav1.LabelSelectorOpDoesNotExist:
			if ok {
				return false
			}
		}
	}
	return true
}

// refPodAt is the pod (not hostNetwork) having address a.
func refPodAt(m Model, a netip.Addr) *Pod {
	for i := range m.Pods {
		if p := &m.Pods[i]; !p.HostNetwork && slices.Contains(p.IPs, a) {
			return p
		}
	}
	return nil
}

func refTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress),
		slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
}

func refInCIDR(a netip.Addr, b *networkingv1.IPBlock) bool {
	if !netip.MustParsePrefix(b.CIDR).Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if netip.MustParsePrefix(e).Contains(a) {
			return false
		}
	}
	return true
}

// refPeerMatches: address a matches peer of a policy in namespace ns;
// viaSelector tells whether it did through a selector (not an ipBlock).
func refPeerMatches(m Model, ns string, peer networkingv1.NetworkPolicyPeer, a netip.Addr) (match, viaSelector bool) {
	if peer.IPBlock != nil {
		return refInCIDR(a, peer.IPBlock), false
	}
	p := refPodAt(m, a)
	if p == nil {
		return false, false
	}
	if peer.NamespaceSelector == nil {
		if p.Namespace != ns {
			return false, false
		}
	} else if !refSelects(peer.NamespaceSelector, m.Namespaces[p.Namespace]) {
		return false, false
	}
	if peer.PodSelector != nil && !refSelects(peer.PodSelector, p.Labels) {
		return false, false
	}
	return true, true
}

// refPortMatches: (proto, port) matches pp, a named port resolving
// against named (nil: it matches nothing).
func refPortMatches(pp networkingv1.NetworkPolicyPort, proto Proto, port uint16, named *Pod) bool {
	want := corev1.ProtocolTCP
	if pp.Protocol != nil {
		want = *pp.Protocol
	}
	if p, _ := protoFromAPI(want); p != proto {
		return false
	}
	switch {
	case pp.Port == nil:
		return true
	case pp.Port.Type == intstr.Int:
		end := pp.Port.IntVal
		if pp.EndPort != nil {
			end = *pp.EndPort
		}
		return int32(port) >= pp.Port.IntVal && int32(port) <= end
	}
	if named == nil {
		return false
	}
	for _, np := range named.Ports {
		if np.Name == pp.Port.StrVal && np.Protocol == proto && np.Port == port {
			return true
		}
	}
	return false
}

// refRuleAllows: one rule allows the packet. self is the isolated pod,
// peer the other address.
func refRuleAllows(m Model, ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort,
	self *Pod, peer netip.Addr, proto Proto, port uint16, ingress bool) bool {
	matched, viaSelector := len(peers) == 0, len(peers) == 0
	for _, p := range peers {
		mt, vs := refPeerMatches(m, ns, p, peer)
		matched = matched || mt
		viaSelector = viaSelector || vs
	}
	if !matched {
		return false
	}
	if len(ports) == 0 {
		return true
	}
	named := self
	if !ingress {
		named = nil
		if viaSelector {
			named = refPodAt(m, peer)
		}
	}
	for _, pp := range ports {
		if refPortMatches(pp, proto, port, named) {
			return true
		}
	}
	return false
}

// refDirection: the packet passes the direction of pod self (nil: not a
// pod, or not one a policy can isolate here).
func refDirection(m Model, self *Pod, peer netip.Addr, proto Proto, port uint16, ingress bool) bool {
	if self == nil || self.Node == "" || len(self.IPs) == 0 {
		return true
	}
	switch refTier(m, TierAdmin, self, peer, proto, port, ingress) {
	case cnp.ClusterNetworkPolicyRuleActionAccept:
		return true
	case cnp.ClusterNetworkPolicyRuleActionDeny:
		return false
	}
	if isolated, allowed := refNetworkPolicy(m, self, peer, proto, port, ingress); isolated {
		return allowed
	}
	return refTier(m, TierBaseline, self, peer, proto, port, ingress) != cnp.ClusterNetworkPolicyRuleActionDeny
}

// refNetworkPolicy: whether NetworkPolicies isolate self in the direction,
// and if so whether one allows the packet.
func refNetworkPolicy(m Model, self *Pod, peer netip.Addr, proto Proto, port uint16, ingress bool) (isolated, allowed bool) {
	for _, np := range m.Policies {
		if np.Namespace != self.Namespace || !refSelects(&np.Spec.PodSelector, self.Labels) {
			continue
		}
		in, eg := refTypes(np)
		if ingress && in {
			isolated = true
			for _, r := range np.Spec.Ingress {
				if refRuleAllows(m, np.Namespace, r.From, r.Ports, self, peer, proto, port, true) {
					return true, true
				}
			}
		}
		if !ingress && eg {
			isolated = true
			for _, r := range np.Spec.Egress {
				if refRuleAllows(m, np.Namespace, r.To, r.Ports, self, peer, proto, port, false) {
					return true, true
				}
			}
		}
	}
	return isolated, false
}

func refAllows(m Model, p Packet) bool {
	return refDirection(m, refPodAt(m, p.Src), p.Dst, p.Proto, p.Port, false) &&
		refDirection(m, refPodAt(m, p.Dst), p.Src, p.Proto, p.Port, true)
}

// ClusterNetworkPolicy, evaluated directly: Admin tier, then
// NetworkPolicy, then Baseline, then allow.

// refSubject: the policy's subject selects pod self.
func refSubject(m Model, s cnp.ClusterNetworkPolicySubject, self *Pod) bool {
	switch {
	case s.Namespaces != nil:
		return refSelects(s.Namespaces, m.Namespaces[self.Namespace])
	case s.Pods != nil:
		return refSelects(&s.Pods.NamespaceSelector, m.Namespaces[self.Namespace]) && refSelects(&s.Pods.PodSelector, self.Labels)
	}
	return false
}

// refCNPPeer: address a matches a peer (pods by namespace and pod labels,
// networks by prefix); viaPod tells whether a pod matched.
func refCNPPeer(m Model, ns, pods *metav1.LabelSelector, nets []cnp.CIDR, a netip.Addr) (match, viaPod bool) {
	for _, n := range nets {
		if netip.MustParsePrefix(string(n)).Contains(a) {
			return true, false
		}
	}
	if ns == nil {
		return false, false
	}
	p := refPodAt(m, a)
	if p == nil || !refSelects(ns, m.Namespaces[p.Namespace]) || (pods != nil && !refSelects(pods, p.Labels)) {
		return false, false
	}
	return true, true
}

func refCNPProtocols(protocols []cnp.ClusterNetworkPolicyProtocol, proto Proto, port uint16, named *Pod) bool {
	if len(protocols) == 0 {
		return true
	}
	for _, pr := range protocols {
		var want Proto
		var dp *cnp.Port
		switch {
		case pr.TCP != nil:
			want, dp = TCP, pr.TCP.DestinationPort
		case pr.UDP != nil:
			want, dp = UDP, pr.UDP.DestinationPort
		case pr.SCTP != nil:
			want, dp = SCTP, pr.SCTP.DestinationPort
		case pr.DestinationNamedPort != "":
			if named != nil {
				for _, np := range named.Ports {
					if np.Name == pr.DestinationNamedPort && np.Protocol == proto && np.Port == port {
						return true
					}
				}
			}
			continue
		}
		if want != proto {
			continue
		}
		switch {
		case dp == nil:
			return true
		case dp.Range != nil:
			if int32(port) >= dp.Range.Start && int32(port) <= dp.Range.End {
				return true
			}
		case int32(port) == dp.Number:
			return true
		}
	}
	return false
}

// refTier is the action of the first rule of tier's policies (priority,
// then name) selecting self that matches, "" when none.
func refTier(m Model, tier string, self *Pod, peer netip.Addr, proto Proto, port uint16, ingress bool) cnp.ClusterNetworkPolicyRuleAction {
	var pols []*cnp.ClusterNetworkPolicy
	for _, p := range m.ClusterPolicies {
		if string(p.Spec.Tier) == tier && refSubject(m, p.Spec.Subject, self) {
			pols = append(pols, p)
		}
	}
	slices.SortStableFunc(pols, func(a, b *cnp.ClusterNetworkPolicy) int {
		if a.Spec.Priority != b.Spec.Priority {
			return int(a.Spec.Priority - b.Spec.Priority)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, p := range pols {
		if ingress {
			for _, r := range p.Spec.Ingress {
				for _, pe := range r.From {
					ns, pods := pe.Namespaces, (*metav1.LabelSelector)(nil)
					if pe.Pods != nil {
						ns, pods = &pe.Pods.NamespaceSelector, &pe.Pods.PodSelector
					}
					if ok, _ := refCNPPeer(m, ns, pods, nil, peer); ok && refCNPProtocols(r.Protocols, proto, port, self) {
						return r.Action
					}
				}
			}
			continue
		}
		for _, r := range p.Spec.Egress {
			for _, pe := range r.To {
				ns, pods := pe.Namespaces, (*metav1.LabelSelector)(nil)
				if pe.Pods != nil {
					ns, pods = &pe.Pods.NamespaceSelector, &pe.Pods.PodSelector
				}
				ok, viaPod := refCNPPeer(m, ns, pods, pe.Networks, peer)
				var named *Pod
				if viaPod {
					named = refPodAt(m, peer)
				}
				if ok && refCNPProtocols(r.Protocols, proto, port, named) {
					return r.Action
				}
			}
		}
	}
	return ""
}
