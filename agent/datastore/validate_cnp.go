package datastore

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// Limits of the ClusterNetworkPolicy CRD's schema (standard channel).
const (
	maxCNPPriority = 1000
	maxCNPItems    = 25 // rules per direction, peers, protocols, networks
	maxCNPRuleName = 100
	maxCNPCIDR     = 43
)

// ValidateClusterPolicy checks a ClusterNetworkPolicy as the standard
// CRD's schema and CEL rules do: name, tier, priority 0-1000, exactly one
// subject, at most 25 rules a direction, rule names, actions, 1-25 peers
// with exactly one field each (namespaces, pods or, egress, networks:
// masked CIDRs), protocols with exactly one of tcp, udp, sctp, each with a
// destinationPort that is a number 1-65535 or a range start < end. The
// experimental fields (nodes, domainNames, destinationNamedPort) are
// refused: the standard CRD does not have them. Label selectors are
// checked as a built-in object's are.
func ValidateClusterPolicy(p *cnp.ClusterNetworkPolicy) error {
	var errs field.ErrorList
	fp := field.NewPath("metadata", "name")
	if p.Name == "" {
		errs = append(errs, field.Required(fp, ""))
	}
	for _, m := range validation.IsDNS1123Subdomain(p.Name) {
		if p.Name != "" {
			errs = append(errs, field.Invalid(fp, p.Name, m))
		}
	}
	if p.Namespace != "" {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "namespace"), p.Namespace, "ClusterNetworkPolicy is cluster-scoped"))
	}
	errs = append(errs, metav1validation.ValidateLabels(p.Labels, field.NewPath("metadata", "labels"))...)
	spec := field.NewPath("spec")
	switch p.Spec.Tier {
	case cnp.AdminTier, cnp.BaselineTier:
	case "":
		errs = append(errs, field.Required(spec.Child("tier"), "Admin or Baseline"))
	default:
		errs = append(errs, field.NotSupported(spec.Child("tier"), p.Spec.Tier, []string{string(cnp.AdminTier), string(cnp.BaselineTier)}))
	}
	if p.Spec.Priority < 0 || p.Spec.Priority > maxCNPPriority {
		errs = append(errs, field.Invalid(spec.Child("priority"), p.Spec.Priority, fmt.Sprintf("must be between 0 and %d", maxCNPPriority)))
	}
	sp := spec.Child("subject")
	switch s := p.Spec.Subject; {
	case s.Namespaces == nil && s.Pods == nil:
		errs = append(errs, field.Required(sp, "exactly one of namespaces or pods"))
	case s.Namespaces != nil && s.Pods != nil:
		errs = append(errs, field.Forbidden(sp, "exactly one of namespaces or pods, not both"))
	case s.Namespaces != nil:
		errs = append(errs, selector(s.Namespaces, sp.Child("namespaces"))...)
	default:
		errs = append(errs, namespacedPod(s.Pods, sp.Child("pods"))...)
	}
	if n := len(p.Spec.Ingress); n > maxCNPItems {
		errs = append(errs, field.TooMany(spec.Child("ingress"), n, maxCNPItems))
	}
	for i, r := range p.Spec.Ingress {
		rp := spec.Child("ingress").Index(i)
		errs = append(errs, cnpRule(r.Name, r.Action, r.Protocols, len(r.From), rp, "from")...)
		for j, peer := range r.From {
			errs = append(errs, cnpPeer(peer.Namespaces, peer.Pods, nil, rp.Child("from").Index(j))...)
		}
	}
	if n := len(p.Spec.Egress); n > maxCNPItems {
		errs = append(errs, field.TooMany(spec.Child("egress"), n, maxCNPItems))
	}
	for i, r := range p.Spec.Egress {
		rp := spec.Child("egress").Index(i)
		errs = append(errs, cnpRule(r.Name, r.Action, r.Protocols, len(r.To), rp, "to")...)
		for j, peer := range r.To {
			pp := rp.Child("to").Index(j)
			if peer.Nodes != nil {
				errs = append(errs, field.Forbidden(pp.Child("nodes"), "experimental (not in the standard CRD)"))
			}
			if peer.DomainNames != nil {
				errs = append(errs, field.Forbidden(pp.Child("domainNames"), "experimental (not in the standard CRD)"))
			}
			if peer.Nodes != nil || peer.DomainNames != nil {
				continue
			}
			errs = append(errs, cnpPeer(peer.Namespaces, peer.Pods, peer.Networks, pp)...)
		}
	}
	return asError("clusternetworkpolicy "+p.Name, errs)
}

func namespacedPod(p *cnp.NamespacedPod, fp *field.Path) field.ErrorList {
	errs := selector(&p.NamespaceSelector, fp.Child("namespaceSelector"))
	return append(errs, selector(&p.PodSelector, fp.Child("podSelector"))...)
}

// cnpRule checks a rule's name, action, peer count (npeers, in field
// peers) and protocols.
func cnpRule(name string, action cnp.ClusterNetworkPolicyRuleAction, protos []cnp.ClusterNetworkPolicyProtocol, npeers int, fp *field.Path, peers string) field.ErrorList {
	var errs field.ErrorList
	if len(name) > maxCNPRuleName {
		errs = append(errs, field.TooLong(fp.Child("name"), name, maxCNPRuleName))
	}
	switch action {
	case cnp.ClusterNetworkPolicyRuleActionAccept, cnp.ClusterNetworkPolicyRuleActionDeny, cnp.ClusterNetworkPolicyRuleActionPass:
	case "":
		errs = append(errs, field.Required(fp.Child("action"), "Accept, Deny or Pass"))
	default:
		errs = append(errs, field.NotSupported(fp.Child("action"), action, []string{"Accept", "Deny", "Pass"}))
	}
	switch {
	case npeers == 0:
		errs = append(errs, field.Required(fp.Child(peers), "at least one peer"))
	case npeers > maxCNPItems:
		errs = append(errs, field.TooMany(fp.Child(peers), npeers, maxCNPItems))
	}
	if len(protos) > maxCNPItems {
		errs = append(errs, field.TooMany(fp.Child("protocols"), len(protos), maxCNPItems))
	}
	for i, pr := range protos {
		pp := fp.Child("protocols").Index(i)
		if pr.DestinationNamedPort != "" {
			errs = append(errs, field.Forbidden(pp.Child("destinationNamedPort"), "experimental (not in the standard CRD)"))
			continue
		}
		n := 0
		if pr.TCP != nil {
			n++
			errs = append(errs, cnpPort(pr.TCP.DestinationPort, pp.Child("tcp"))...)
		}
		if pr.UDP != nil {
			n++
			errs = append(errs, cnpPort(pr.UDP.DestinationPort, pp.Child("udp"))...)
		}
		if pr.SCTP != nil {
			n++
			errs = append(errs, cnpPort(pr.SCTP.DestinationPort, pp.Child("sctp"))...)
		}
		switch {
		case n == 0:
			errs = append(errs, field.Required(pp, "exactly one of tcp, udp or sctp"))
		case n > 1:
			errs = append(errs, field.Forbidden(pp, "exactly one of tcp, udp or sctp"))
		}
	}
	return errs
}

// cnpPort checks a protocol's destinationPort (fp is the protocol).
func cnpPort(p *cnp.Port, fp *field.Path) field.ErrorList {
	dp := fp.Child("destinationPort")
	if p == nil {
		return field.ErrorList{field.Required(dp, "a number or a range")}
	}
	var errs field.ErrorList
	portNum := func(n int32, f *field.Path) {
		for _, m := range validation.IsValidPortNum(int(n)) {
			errs = append(errs, field.Invalid(f, n, m))
		}
	}
	switch {
	case p.Number == 0 && p.Range == nil:
		errs = append(errs, field.Required(dp, "exactly one of number or range"))
	case p.Number != 0 && p.Range != nil:
		errs = append(errs, field.Forbidden(dp, "exactly one of number or range, not both"))
	case p.Range != nil:
		rp := dp.Child("range")
		portNum(p.Range.Start, rp.Child("start"))
		portNum(p.Range.End, rp.Child("end"))
		if p.Range.Start >= p.Range.End {
			errs = append(errs, field.Invalid(rp, fmt.Sprintf("%d-%d", p.Range.Start, p.Range.End), "start must be less than end"))
		}
	default:
		portNum(p.Number, dp.Child("number"))
	}
	return errs
}

// cnpPeer checks a peer: exactly one of namespaces, pods, networks.
func cnpPeer(ns *metav1.LabelSelector, pods *cnp.NamespacedPod, nets []cnp.CIDR, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if ns != nil {
		n++
		errs = append(errs, selector(ns, fp.Child("namespaces"))...)
	}
	if pods != nil {
		n++
		errs = append(errs, namespacedPod(pods, fp.Child("pods"))...)
	}
	if nets != nil {
		n++
		np := fp.Child("networks")
		switch {
		case len(nets) == 0:
			errs = append(errs, field.Required(np, "at least one CIDR"))
		case len(nets) > maxCNPItems:
			errs = append(errs, field.TooMany(np, len(nets), maxCNPItems))
		}
		seen := map[cnp.CIDR]bool{}
		for i, c := range nets {
			cp := np.Index(i)
			pfx, err := netip.ParsePrefix(string(c))
			switch {
			case len(c) > maxCNPCIDR:
				errs = append(errs, field.TooLong(cp, string(c), maxCNPCIDR))
			case err != nil:
				errs = append(errs, field.Invalid(cp, string(c), "not a CIDR (address/length)"))
			case pfx.Masked() != pfx:
				errs = append(errs, field.Invalid(cp, string(c), "must be a network address ("+pfx.Masked().String()+")"))
			case seen[c]:
				errs = append(errs, field.Duplicate(cp, string(c)))
			}
			seen[c] = true
		}
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(fp, "exactly one of namespaces, pods or networks"))
	case n > 1:
		errs = append(errs, field.Forbidden(fp, "exactly one of namespaces, pods or networks"))
	}
	return errs
}
