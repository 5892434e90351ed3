package datastore

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

func TestValidateClusterPolicy(t *testing.T) {
	valid := func() *cnp.ClusterNetworkPolicy {
		return &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 0,
				Subject: cnp.ClusterNetworkPolicySubject{Pods: &cnp.NamespacedPod{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
				Ingress: []cnp.ClusterNetworkPolicyIngressRule{{Name: "from-ns", Action: cnp.ClusterNetworkPolicyRuleActionPass,
					From: []cnp.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}},
					Protocols: []cnp.ClusterNetworkPolicyProtocol{
						{TCP: &cnp.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnp.Port{Number: 80}}},
						{SCTP: &cnp.ClusterNetworkPolicyProtocolSCTP{DestinationPort: &cnp.Port{Range: &cnp.PortRange{Start: 1, End: 65535}}}}}}},
				Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionAccept,
					To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"10.0.0.0/8", "fd00::/8"}}, {Pods: &cnp.NamespacedPod{}}}}}}}
	}
	if err := ValidateClusterPolicy(valid()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mut  func(p *cnp.ClusterNetworkPolicy)
		want string
	}{
		{func(p *cnp.ClusterNetworkPolicy) { p.Name = "" }, "metadata.name"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Name = "A_b" }, "metadata.name"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Namespace = "default" }, "metadata.namespace"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Tier = "" }, "spec.tier"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Tier = "admin" }, "spec.tier"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Priority = -1 }, "spec.priority"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Priority = 1001 }, "spec.priority"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Subject.Pods = nil }, "spec.subject"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Subject.Namespaces = &metav1.LabelSelector{} }, "spec.subject"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Subject.Pods.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Is"}}
		}, "spec.subject.pods.podSelector.matchExpressions[0].operator"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Ingress = make([]cnp.ClusterNetworkPolicyIngressRule, 26)
		}, "spec.ingress: Too many"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Name = strings.Repeat("x", 101) }, "spec.ingress[0].name"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Action = "Allow" }, "spec.ingress[0].action"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].From = nil }, "spec.ingress[0].from"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].From[0] = cnp.ClusterNetworkPolicyIngressPeer{} }, "spec.ingress[0].from[0]"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].From[0].Pods = &cnp.NamespacedPod{} }, "spec.ingress[0].from[0]: Forbidden"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Protocols[0] = cnp.ClusterNetworkPolicyProtocol{} }, "spec.ingress[0].protocols[0]"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Ingress[0].Protocols[0].UDP = &cnp.ClusterNetworkPolicyProtocolUDP{DestinationPort: &cnp.Port{Number: 53}}
		}, "spec.ingress[0].protocols[0]: Forbidden"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Protocols[0].TCP.DestinationPort = nil }, "spec.ingress[0].protocols[0].tcp.destinationPort"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Protocols[0].TCP.DestinationPort.Number = 65536 }, "spec.ingress[0].protocols[0].tcp.destinationPort.number"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Ingress[0].Protocols[0].TCP.DestinationPort.Range = &cnp.PortRange{Start: 1, End: 2}
		}, "spec.ingress[0].protocols[0].tcp.destinationPort"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Ingress[0].Protocols[1].SCTP.DestinationPort.Range.Start = 65535
		}, "spec.ingress[0].protocols[1].sctp.destinationPort.range"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Protocols[1].SCTP.DestinationPort.Range.Start = 0 }, "spec.ingress[0].protocols[1].sctp.destinationPort.range.start"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Ingress[0].Protocols[0].DestinationNamedPort = "http" }, "spec.ingress[0].protocols[0].destinationNamedPort"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[0].Networks[0] = "10.0.0.1/8" }, "spec.egress[0].to[0].networks[0]"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[0].Networks[1] = "fd00::/200" }, "spec.egress[0].to[0].networks[1]"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[0].Networks[1] = "10.0.0.0/8" }, "spec.egress[0].to[0].networks[1]: Duplicate"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[0].Networks = []cnp.CIDR{} }, "spec.egress[0].to[0].networks"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To[1].Namespaces = &metav1.LabelSelector{} }, "spec.egress[0].to[1]"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].To[1] = cnp.ClusterNetworkPolicyEgressPeer{Nodes: &metav1.LabelSelector{}}
		}, "spec.egress[0].to[1].nodes"},
		{func(p *cnp.ClusterNetworkPolicy) {
			p.Spec.Egress[0].To[1] = cnp.ClusterNetworkPolicyEgressPeer{DomainNames: []cnp.DomainName{"example.com"}}
		}, "spec.egress[0].to[1].domainNames"},
		{func(p *cnp.ClusterNetworkPolicy) { p.Spec.Egress[0].To = nil }, "spec.egress[0].to"},
	} {
		p := valid()
		tc.mut(p)
		err := ValidateClusterPolicy(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %q, got %v", tc.want, err)
		}
	}
}
