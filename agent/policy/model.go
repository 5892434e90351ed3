package policy

import (
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// Model is everything the compiler reads: the cluster's namespaces, pods
// and NetworkPolicies. It is a plain value; the agent builds it from its
// sources (Kubernetes informers, etcd, the CNI plugin's registrations).
type Model struct {
	// Namespaces maps a namespace name to its labels. A namespace that
	// pods or policies name but that is missing here has no labels: only
	// namespaceSelectors that match an empty label set ({}, or only
	// NotIn/DoesNotExist requirements) match it. ModelFromObjects adds
	// the kubernetes.io/metadata.name label the API server guarantees.
	Namespaces map[string]map[string]string
	Pods       []Pod
	Policies   []*networkingv1.NetworkPolicy
	// ClusterPolicies are the cluster's ClusterNetworkPolicies
	// (policy.networking.k8s.io/v1beta1, tiers Admin and Baseline).
	ClusterPolicies []*cnp.ClusterNetworkPolicy
}

// Pod is one pod as far as policy is concerned.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// Node is the node the pod runs on ("" when unknown: such a pod is
	// a peer on every node, but isolated on none).
	Node string
	// HostNetwork pods are never selected and are not matched by pod
	// selectors (their address is the node's).
	HostNetwork bool
	// IPs are the pod's addresses (IPv4 and/or IPv6). A pod without
	// addresses is neither isolated nor a peer.
	IPs []netip.Addr
	// Ports are the pod's named container ports (for named-port rules).
	Ports []NamedPort
}

// Key is "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// NamedPort is one named container port.
type NamedPort struct {
	Name     string
	Protocol Proto
	Port     uint16
}

// Proto is an IP protocol number (TCP 6, UDP 17, SCTP 132).
type Proto uint8

// The protocols NetworkPolicy ports name.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)
