package datastore

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxObjectBytes bounds one encoded object record (etcd): larger records
// are skipped unread. A pod or policy is a few KiB; the apiserver's own
// limit is 1.5 MiB.
const MaxObjectBytes = 256 << 10

// NamespaceNameLabel is the label Kubernetes puts on every Namespace, its
// name; namespaceSelectors commonly match on it.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// The validators below are what a writer (the lab, tests) runs before it
// stores an object: enough to reject nonsense with an error naming the
// field, not the apiserver's full validation. Readers still treat what
// they get as claims.

// ValidateNamespace checks a Namespace's name and labels.
func ValidateNamespace(ns *corev1.Namespace) error {
	var errs field.ErrorList
	errs = append(errs, dnsLabel(ns.Name, field.NewPath("metadata", "name"))...)
	errs = append(errs, metav1validation.ValidateLabels(ns.Labels, field.NewPath("metadata", "labels"))...)
	return asError("namespace "+ns.Name, errs)
}

// ValidatePod checks a Pod's identity, labels, container ports and
// addresses.
func ValidatePod(p *corev1.Pod) error {
	var errs field.ErrorList
	errs = append(errs, objectMeta(p.Namespace, p.Name)...)
	errs = append(errs, metav1validation.ValidateLabels(p.Labels, field.NewPath("metadata", "labels"))...)
	for i, c := range p.Spec.Containers {
		for j, port := range c.Ports {
			fp := field.NewPath("spec", "containers").Index(i).Child("ports").Index(j)
			if port.Name != "" {
				for _, m := range validation.IsValidPortName(port.Name) {
					errs = append(errs, field.Invalid(fp.Child("name"), port.Name, m))
				}
			}
			for _, m := range validation.IsValidPortNum(int(port.ContainerPort)) {
				errs = append(errs, field.Invalid(fp.Child("containerPort"), port.ContainerPort, m))
			}
			errs = append(errs, protocol(port.Protocol, fp.Child("protocol"))...)
		}
	}
	if p.Status.PodIP != "" {
		if _, err := netip.ParseAddr(p.Status.PodIP); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("status", "podIP"), p.Status.PodIP, "not an IP address"))
		}
	}
	for i, a := range p.Status.PodIPs {
		if _, err := netip.ParseAddr(a.IP); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("status", "podIPs").Index(i).Child("ip"), a.IP, "not an IP address"))
		}
	}
	return asError("pod "+p.Namespace+"/"+p.Name, errs)
}

// ValidatePolicy checks a NetworkPolicy: selectors (operators, keys,
// values), policy types, ports (protocol, port number or name, endPort
// only after a numeric port) and peers (exactly one of ipBlock or
// selectors; ipBlock CIDRs and excepts inside them).
func ValidatePolicy(np *networkingv1.NetworkPolicy) error {
	var errs field.ErrorList
	errs = append(errs, objectMeta(np.Namespace, np.Name)...)
	errs = append(errs, metav1validation.ValidateLabels(np.Labels, field.NewPath("metadata", "labels"))...)
	spec := field.NewPath("spec")
	errs = append(errs, selector(&np.Spec.PodSelector, spec.Child("podSelector"))...)
	seen := map[networkingv1.PolicyType]bool{}
	for i, t := range np.Spec.PolicyTypes {
		fp := spec.Child("policyTypes").Index(i)
		switch {
		case t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress:
			errs = append(errs, field.NotSupported(fp, t, []string{"Ingress", "Egress"}))
		case seen[t]:
			errs = append(errs, field.Duplicate(fp, t))
		}
		seen[t] = true
	}
	for i, r := range np.Spec.Ingress {
		fp := spec.Child("ingress").Index(i)
		errs = append(errs, ports(r.Ports, fp.Child("ports"))...)
		for j := range r.From {
			errs = append(errs, peer(&r.From[j], fp.Child("from").Index(j))...)
		}
	}
	for i, r := range np.Spec.Egress {
		fp := spec.Child("egress").Index(i)
		errs = append(errs, ports(r.Ports, fp.Child("ports"))...)
		for j := range r.To {
			errs = append(errs, peer(&r.To[j], fp.Child("to").Index(j))...)
		}
	}
	return asError("networkpolicy "+np.Namespace+"/"+np.Name, errs)
}

func asError(what string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return fmt.Errorf("%s: %s", what, b.String())
}

func dnsLabel(s string, fp *field.Path) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(fp, "")}
	}
	var errs field.ErrorList
	for _, m := range validation.IsDNS1123Label(s) {
		errs = append(errs, field.Invalid(fp, s, m))
	}
	return errs
}

func objectMeta(ns, name string) field.ErrorList {
	errs := dnsLabel(ns, field.NewPath("metadata", "namespace"))
	fp := field.NewPath("metadata", "name")
	if name == "" {
		return append(errs, field.Required(fp, ""))
	}
	for _, m := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(fp, name, m))
	}
	return errs
}

func selector(s *metav1.LabelSelector, fp *field.Path) field.ErrorList {
	return metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, fp)
}

func protocol(p corev1.Protocol, fp *field.Path) field.ErrorList {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return nil
	}
	return field.ErrorList{field.NotSupported(fp, p, []string{"TCP", "UDP", "SCTP"})}
}

func ports(ps []networkingv1.NetworkPolicyPort, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, p := range ps {
		pp := fp.Index(i)
		if p.Protocol != nil {
			errs = append(errs, protocol(*p.Protocol, pp.Child("protocol"))...)
		}
		numeric := int32(0)
		if p.Port != nil {
			if p.Port.Type == intstr.Int {
				numeric = p.Port.IntVal
				for _, m := range validation.IsValidPortNum(int(numeric)) {
					errs = append(errs, field.Invalid(pp.Child("port"), numeric, m))
				}
			} else {
				for _, m := range validation.IsValidPortName(p.Port.StrVal) {
					errs = append(errs, field.Invalid(pp.Child("port"), p.Port.StrVal, m))
				}
			}
		}
		if p.EndPort != nil {
			switch {
			case numeric == 0:
				errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, "may only be set with a numeric port"))
			case *p.EndPort < numeric || *p.EndPort > 65535:
				errs = append(errs, field.Invalid(pp.Child("endPort"), *p.EndPort, fmt.Sprintf("must be between port %d and 65535", numeric)))
			}
		}
	}
	return errs
}

func peer(p *networkingv1.NetworkPolicyPeer, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p.PodSelector != nil {
		errs = append(errs, selector(p.PodSelector, fp.Child("podSelector"))...)
	}
	if p.NamespaceSelector != nil {
		errs = append(errs, selector(p.NamespaceSelector, fp.Child("namespaceSelector"))...)
	}
	switch {
	case p.IPBlock == nil && p.PodSelector == nil && p.NamespaceSelector == nil:
		errs = append(errs, field.Required(fp, "must specify a peer: ipBlock, podSelector or namespaceSelector"))
	case p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil):
		errs = append(errs, field.Forbidden(fp, "ipBlock may not be combined with podSelector or namespaceSelector"))
	case p.IPBlock != nil:
		ib := fp.Child("ipBlock")
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			return append(errs, field.Invalid(ib.Child("cidr"), p.IPBlock.CIDR, "not a CIDR (address/length)"))
		}
		for i, e := range p.IPBlock.Except {
			ep := ib.Child("except").Index(i)
			ex, err := netip.ParsePrefix(e)
			switch {
			case err != nil:
				errs = append(errs, field.Invalid(ep, e, "not a CIDR (address/length)"))
			case ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Masked().Contains(ex.Addr()):
				errs = append(errs, field.Invalid(ep, e, "must be strictly within "+p.IPBlock.CIDR))
			}
		}
	}
	return errs
}
