package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Resolve turns "NAMESPACE/POD" or an IP address into an address: a pod's
// first address (of family, when family is 4 or 6 and the pod has one).
func (m Model) Resolve(ref string, family int) (netip.Addr, error) {
	if a, err := netip.ParseAddr(ref); err == nil {
		return a.Unmap(), nil
	}
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return netip.Addr{}, fmt.Errorf("%q: want NAMESPACE/POD or an IP address", ref)
	}
	for _, p := range m.Pods {
		if p.Namespace != ns || p.Name != name {
			continue
		}
		if len(p.IPs) == 0 {
			return netip.Addr{}, fmt.Errorf("pod %s has no address yet", ref)
		}
		for _, a := range p.IPs {
			if family == 0 || (family == 4) == a.Is4() {
				return a, nil
			}
		}
		return p.IPs[0], nil
	}
	return netip.Addr{}, fmt.Errorf("pod %s not found", ref)
}

// NodeOf is the node of the (non-hostNetwork) pod holding address a, or "".
func (m Model) NodeOf(a netip.Addr) string {
	for _, p := range m.Pods {
		if p.HostNetwork {
			continue
		}
		for _, ip := range p.IPs {
			if ip == a {
				return p.Node
			}
		}
	}
	return ""
}

// ExplainModel compiles m for the nodes of p's source and destination pods
// (an address of no pod, or of a pod on no node, has no Ruleset: it is
// not isolated) and explains p with them, as Explain does.
func ExplainModel(m Model, p Packet) Explanation {
	rulesetOf := func(a netip.Addr) *Ruleset {
		n := m.NodeOf(a)
		if n == "" {
			return nil
		}
		rs := Compile(m, n)
		return &rs
	}
	return Explain(rulesetOf(p.Src), rulesetOf(p.Dst), p)
}

// ParsePort reads "tcp/80" (also "udp/53", "sctp/9", or a bare "80" for
// TCP).
func ParsePort(s string) (Proto, uint16, error) {
	proto, port := "tcp", s
	if a, b, ok := strings.Cut(s, "/"); ok {
		proto, port = a, b
	}
	pr, err := ParseProto(proto)
	if err != nil {
		return 0, 0, fmt.Errorf("port %q: %w", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("port %q: want PROTO/NUMBER with NUMBER 1-65535, e.g. tcp/80", s)
	}
	return pr, uint16(n), nil
}
