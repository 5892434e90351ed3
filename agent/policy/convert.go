package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// NamespaceNameLabel is the label the API server puts on every namespace,
// with the namespace's name as value.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// ModelFromObjects builds a Model from Kubernetes objects (nil entries are
// skipped). Each namespace gets the label kubernetes.io/metadata.name
// when it lacks it, as the API server guarantees, so selectors on it work
// for objects read from etcd too. The objects are not modified; the Model
// shares their label maps and policies.
func ModelFromObjects(namespaces []*corev1.Namespace, pods []*corev1.Pod, policies []*networkingv1.NetworkPolicy) Model {
	m := Model{Namespaces: make(map[string]map[string]string, len(namespaces))}
	for _, ns := range namespaces {
		if ns == nil {
			continue
		}
		ls := ns.Labels
		if _, ok := ls[NamespaceNameLabel]; !ok {
			ls = make(map[string]string, len(ns.Labels)+1)
			for k, v := range ns.Labels {
				ls[k] = v
			}
			ls[NamespaceNameLabel] = ns.Name
		}
		m.Namespaces[ns.Name] = ls
	}
	m.Pods = make([]Pod, 0, len(pods))
	for _, p := range pods {
		if p != nil {
			m.Pods = append(m.Pods, PodFromAPI(p))
		}
	}
	for _, np := range policies {
		if np != nil {
			m.Policies = append(m.Policies, np)
		}
	}
	return m
}

// ModelFrom is ModelFromObjects for pods already converted (as the
// agent's object sources keep them: PodFromAPI's form, a fraction of a
// core/v1 Pod's memory).
func ModelFrom(namespaces []*corev1.Namespace, pods []*Pod, policies []*networkingv1.NetworkPolicy) Model {
	m := ModelFromObjects(namespaces, nil, policies)
	m.Pods = make([]Pod, 0, len(pods))
	for _, p := range pods {
		if p != nil {
			m.Pods = append(m.Pods, *p)
		}
	}
	return m
}

// Finished reports whether p has terminated (phase Succeeded or Failed):
// policy ignores such pods, whose addresses may already be another's.
func Finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// PodFromAPI converts a core/v1 Pod: labels, spec.nodeName,
// spec.hostNetwork, status.podIPs (status.podIP when podIPs is empty;
// IPv4-mapped IPv6 addresses are unmapped, unparsable ones skipped) and the
// named ports of its containers and restartable (sidecar) init containers
// (protocol default TCP). A pod whose phase is Succeeded or Failed gets no
// IPs: its addresses may already belong to another pod.
func PodFromAPI(p *corev1.Pod) Pod {
	out := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      p.Labels,
		Node:        p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork,
	}
	if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		ips := p.Status.PodIPs
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			a = a.Unmap().WithZone("")
			if !containsAddr(out.IPs, a) {
				out.IPs = append(out.IPs, a)
			}
		}
	}
	addPorts := func(cs []corev1.Container) {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Name == "" || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
					continue
				}
				proto, ok := protoFromAPI(cp.Protocol)
				if !ok {
					continue
				}
				out.Ports = append(out.Ports, NamedPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
			}
		}
	}
	addPorts(p.Spec.Containers)
	var sidecars []corev1.Container
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars = append(sidecars, c)
		}
	}
	addPorts(sidecars)
	return out
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// protoFromAPI maps a Kubernetes protocol ("" is TCP).
func protoFromAPI(p corev1.Protocol) (Proto, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return TCP, true
	case corev1.ProtocolUDP:
		return UDP, true
	case corev1.ProtocolSCTP:
		return SCTP, true
	}
	return 0, false
}

// String is "tcp", "udp", "sctp", or the number.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// MarshalText is String.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText is ParseProto.
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	if err == nil {
		*p = v
	}
	return err
}

// ParseProto parses "tcp", "udp", "sctp" (any case) or a protocol number.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("policy: unknown protocol %q", s)
	}
	return Proto(n), nil
}
