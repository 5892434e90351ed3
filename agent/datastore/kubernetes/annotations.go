package kubernetes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/podnet/podnet/agent/datastore"
)

// Node annotations podnet writes (like Flannel's flannel.alpha.coreos.com/*).
const (
	// AnnotationUnderlayIPs: the node's underlay (VTEP) addresses,
	// comma-separated, e.g. "100.64.0.1" or "100.64.0.1,fd00:64::1".
	AnnotationUnderlayIPs = "podnet.io/underlay-ips"
	// AnnotationVtepMAC: the MAC of the node's podnet.<VNI> device; absent
	// for host-gw.
	AnnotationVtepMAC = "podnet.io/vtep-mac"
	// AnnotationBackend: vxlan, host-gw or auto.
	AnnotationBackend = "podnet.io/backend"
)

// Condition written to the node's status once podnet is up.
const (
	ConditionReason  = "PodnetIsUp"
	ConditionMessage = "podnet agent has set up the pod network on this node"
)

// ourAnnotations are every annotation key podnet owns.
var ourAnnotations = []string{AnnotationUnderlayIPs, AnnotationVtepMAC, AnnotationBackend}

// Annotations encodes what info publishes about itself as node annotations;
// an empty field has no annotation. Subnets are not annotated: they are the
// node's spec.podCIDRs.
func Annotations(info datastore.NodeInfo) map[string]string {
	ips := make([]string, len(info.UnderlayIPs))
	for i, a := range info.UnderlayIPs {
		ips[i] = a.String()
	}
	out := map[string]string{}
	for k, v := range map[string]string{
		AnnotationUnderlayIPs: strings.Join(ips, ","),
		AnnotationVtepMAC:     info.VtepMAC,
		AnnotationBackend:     info.Backend,
	} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// annotationPatch is the JSON merge patch that makes a node's podnet
// annotations exactly want (keys of ours missing from want are removed).
func annotationPatch(want map[string]string) ([]byte, error) {
	ann := map[string]*string{}
	for _, k := range ourAnnotations {
		if v, ok := want[k]; ok {
			ann[k] = &v
		} else {
			ann[k] = nil
		}
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
}

// errNotPublished: the node is not (yet) part of the podnet network.
var errNotPublished = errors.New("not published")

// PodCIDRs returns node's spec.podCIDRs (or the legacy spec.podCIDR).
func PodCIDRs(node *corev1.Node) ([]netip.Prefix, error) {
	raw := node.Spec.PodCIDRs
	if len(raw) == 0 && node.Spec.PodCIDR != "" {
		raw = []string{node.Spec.PodCIDR}
	}
	out := make([]netip.Prefix, 0, len(raw))
	for _, s := range raw {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("node %s: spec.podCIDRs: %q: %w", node.Name, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// NodeInfoFrom decodes a Node into the NodeInfo the other nodes route to.
// It returns an error wrapping errNotPublished when the node has no pod CIDR
// or no podnet annotations yet, and a descriptive error when the
// annotations are malformed.
func NodeInfoFrom(node *corev1.Node) (datastore.NodeInfo, error) {
	info := datastore.NodeInfo{Name: node.Name}
	subnets, err := PodCIDRs(node)
	if err != nil {
		return info, err
	}
	if len(subnets) == 0 {
		return info, fmt.Errorf("node %s: no spec.podCIDRs: %w", node.Name, errNotPublished)
	}
	info.Subnets = subnets
	a := node.Annotations
	ips, ok := a[AnnotationUnderlayIPs]
	if !ok {
		return info, fmt.Errorf("node %s: no %s annotation: %w", node.Name, AnnotationUnderlayIPs, errNotPublished)
	}
	for _, s := range strings.Split(ips, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return info, fmt.Errorf("node %s: annotation %s=%q: %q is not an IP address", node.Name, AnnotationUnderlayIPs, ips, s)
		}
		info.UnderlayIPs = append(info.UnderlayIPs, ip.Unmap())
	}
	if len(info.UnderlayIPs) == 0 {
		return info, fmt.Errorf("node %s: annotation %s is empty", node.Name, AnnotationUnderlayIPs)
	}
	if mac := a[AnnotationVtepMAC]; mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return info, fmt.Errorf("node %s: annotation %s=%q is not a 6-byte MAC address", node.Name, AnnotationVtepMAC, mac)
		}
		info.VtepMAC = hw.String()
	}
	info.Backend = a[AnnotationBackend]
	return info, nil
}

// nodeInfoEqual compares two decoded records.
func nodeInfoEqual(a, b datastore.NodeInfo) bool {
	return a.Name == b.Name && a.VtepMAC == b.VtepMAC && a.Backend == b.Backend &&
		slices.Equal(a.UnderlayIPs, b.UnderlayIPs) && slices.Equal(a.Subnets, b.Subnets)
}

// annotationsMatch says whether node already carries want.
func annotationsMatch(node *corev1.Node, want map[string]string) bool {
	for _, k := range ourAnnotations {
		got, has := node.Annotations[k]
		v, wanted := want[k]
		if has != wanted || got != v {
			return false
		}
	}
	return true
}

// networkReady says whether node's NetworkUnavailable condition is already
// False with our reason.
func networkReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse && c.Reason == ConditionReason
		}
	}
	return false
}
