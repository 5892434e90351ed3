package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// rule is one ingress or egress rule with its peers resolved, before named
// ports are.
type rule struct {
	policy   string
	index    int
	broken   bool
	allPeers bool
	peers    []AddrRange // merged
	peerPods []int       // the selector peers, sorted
	allPorts bool
	numeric  []ProtoPorts // merged
	named    []namedRef
}

type namedRef struct {
	name  string
	proto Proto
}

// resolveRule resolves the peers and ports of rule i of policy key.
func (c *compiler) resolveRule(key, ns, dir string, i int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) *rule {
	r := &rule{policy: key, index: i}
	fail := func(format string, args ...any) *rule {
		c.problem("%s: %s[%d]: %s: the rule allows nothing", key, dir, i, fmt.Sprintf(format, args...))
		r.broken = true
		return r
	}
	r.allPeers = len(peers) == 0
	var podSets [][]int
	for j, p := range peers {
		switch {
		case p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil):
			return fail("peer %d: ipBlock with a selector", j)
		case p.IPBlock != nil:
			rs, err := ipBlockRanges(p.IPBlock)
			if err != nil {
				return fail("peer %d: %v", j, err)
			}
			r.peers = append(r.peers, rs...)
		case p.PodSelector != nil || p.NamespaceSelector != nil:
			pp, err := c.selectPeers(ns, p.PodSelector, p.NamespaceSelector)
			if err != nil {
				return fail("peer %d: %v", j, err)
			}
			r.peers = append(r.peers, pp.ranges...)
			podSets = append(podSets, pp.pods)
		default:
			return fail("peer %d: empty", j)
		}
	}
	r.peers = mergeRanges(r.peers)
	switch len(podSets) {
	case 0:
	case 1:
		r.peerPods = podSets[0]
	default:
		r.peerPods = slices.Concat(podSets...)
		slices.Sort(r.peerPods)
		r.peerPods = slices.Compact(r.peerPods)
	}
	r.allPorts = len(ports) == 0
	for j, p := range ports {
		proto := TCP
		if p.Protocol != nil {
			var ok bool
			if proto, ok = protoFromAPI(*p.Protocol); !ok {
				return fail("port %d: unknown protocol %q", j, *p.Protocol)
			}
		}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				return fail("port %d: endPort without port", j)
			}
			r.numeric = append(r.numeric, ProtoPorts{proto, PortRange{0, 65535}})
		case p.Port.Type == intstr.String:
			if p.EndPort != nil {
				return fail("port %d: endPort with named port %q", j, p.Port.StrVal)
			}
			r.named = append(r.named, namedRef{p.Port.StrVal, proto})
		default:
			from, to := p.Port.IntVal, p.Port.IntVal
			if p.EndPort != nil {
				to = *p.EndPort
			}
			if from < 1 || from > 65535 || to < from || to > 65535 {
				return fail("port %d: invalid port range %d-%d", j, from, to)
			}
			r.numeric = append(r.numeric, ProtoPorts{proto, PortRange{uint16(from), uint16(to)}})
		}
	}
	r.numeric = mergePorts(r.numeric)
	return r
}

// resolveNamed resolves the named ports of r against a pod's ports.
func (r *rule) resolveNamed(ports []ProtoPorts, p *Pod) []ProtoPorts {
	for _, n := range r.named {
		for _, np := range p.Ports {
			if np.Name == n.name && np.Protocol == n.proto {
				ports = append(ports, ProtoPorts{n.proto, PortRange{np.Port, np.Port}})
			}
		}
	}
	return mergePorts(ports)
}

// ingressAllows is what r allows into the isolated pod p.
func (r *rule) ingressAllows(p *Pod) []Allow {
	if r.broken || (!r.allPeers && len(r.peers) == 0) {
		return nil
	}
	var peers []AddrRange
	if !r.allPeers {
		peers = r.peers
	}
	if r.allPorts {
		return []Allow{{Policy: r.policy, Rule: r.index, Peers: peers}}
	}
	ports := r.numeric
	if len(r.named) > 0 {
		ports = r.resolveNamed(slices.Clone(r.numeric), p)
	}
	if len(ports) == 0 {
		return nil
	}
	return []Allow{{Policy: r.policy, Rule: r.index, Peers: peers, Ports: ports}}
}

// egressAllows is what r allows out of the pods its policy isolates.
func (c *compiler) egressAllows(r *rule) []Allow {
	if r.broken {
		return nil
	}
	var peers []AddrRange
	if !r.allPeers {
		if len(r.peers) == 0 {
			return nil
		}
		peers = r.peers
	}
	if r.allPorts {
		return []Allow{{Policy: r.policy, Rule: r.index, Peers: peers}}
	}
	var out []Allow
	if len(r.numeric) > 0 {
		out = append(out, Allow{Policy: r.policy, Rule: r.index, Peers: peers, Ports: r.numeric})
	}
	if len(r.named) == 0 {
		return out
	}
	cands := r.peerPods
	if r.allPeers {
		cands = nil
		for _, n := range r.named {
			cands = append(cands, c.byPort[n.name]...)
		}
		slices.Sort(cands)
		cands = slices.Compact(cands)
	}
	first := len(out)
	group := map[string]int{}
	var sb strings.Builder
	for _, pi := range cands {
		p := c.pods[pi]
		ports := r.resolveNamed(nil, p)
		if len(ports) == 0 {
			continue
		}
		sb.Reset()
		for _, pp := range ports {
			fmt.Fprintf(&sb, "%d/%d-%d,", pp.Proto, pp.Ports.From, pp.Ports.To)
		}
		gi, ok := group[sb.String()]
		if !ok {
			gi = len(out)
			group[sb.String()] = gi
			out = append(out, Allow{Policy: r.policy, Rule: r.index, Ports: ports})
		}
		for _, a := range p.IPs {
			out[gi].Peers = append(out[gi].Peers, addrRange(a))
		}
	}
	for i := first; i < len(out); i++ {
		out[i].Peers = mergeRanges(out[i].Peers)
	}
	return out
}

// ipBlockRanges is cidr minus except, of cidr's family.
func ipBlockRanges(b *networkingv1.IPBlock) ([]AddrRange, error) {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr: %v", err)
	}
	var except []AddrRange
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except: %v", err)
		}
		if ep.Addr().Is4() == p.Addr().Is4() {
			except = append(except, prefixRange(ep))
		}
	}
	return subtractRanges([]AddrRange{prefixRange(p)}, mergeRanges(except)), nil
}

// selectPeers resolves a peer's selectors (not both nil): pods of ns
// matching podSel when nsSel is nil; else pods matching podSel (nil: all)
// in the namespaces matching nsSel.
func (c *compiler) selectPeers(ns string, podSel, nsSel *metav1.LabelSelector) (*peerPods, error) {
	ps := labels.Everything()
	if podSel != nil {
		var err error
		if ps, err = metav1.LabelSelectorAsSelector(podSel); err != nil {
			return nil, fmt.Errorf("podSelector: %v", err)
		}
	}
	var nss labels.Selector
	nsKey := "=" + ns
	if nsSel != nil {
		var err error
		if nss, err = metav1.LabelSelectorAsSelector(nsSel); err != nil {
			return nil, fmt.Errorf("namespaceSelector: %v", err)
		}
		nsKey = "~" + nss.String()
	}
	key := nsKey + "\x00" + ps.String()
	if pp, ok := c.peers[key]; ok {
		return pp, nil
	}
	namespaces := []string{ns}
	if nss != nil {
		namespaces = c.matchNamespaces(nsKey, nss)
	}
	pp := &peerPods{pods: c.matchPods(ps, namespaces)}
	for _, pi := range pp.pods {
		for _, a := range c.pods[pi].IPs {
			pp.ranges = append(pp.ranges, addrRange(a))
		}
	}
	pp.ranges = mergeRanges(pp.ranges)
	c.peers[key] = pp
	return pp, nil
}

// matchNamespaces is the namespaces having pods that sel matches (a
// namespace missing from the model has no labels).
func (c *compiler) matchNamespaces(key string, sel labels.Selector) []string {
	if nss, ok := c.nsCache[key]; ok {
		return nss
	}
	var out []string
	for _, ns := range c.nsNames {
		if sel.Matches(labels.Set(c.m.Namespaces[ns])) {
			out = append(out, ns)
		}
	}
	c.nsCache[key] = out
	return out
}

// matchPods is the pods of namespaces that sel matches, sorted. It starts
// from the label index when sel requires a label value and that is fewer
// pods than the namespaces hold.
func (c *compiler) matchPods(sel labels.Selector, namespaces []string) []int {
	total := 0
	for _, ns := range namespaces {
		total += len(c.byNs[ns])
	}
	var cands []int
	indexed := false
	if reqs, _ := sel.Requirements(); len(reqs) > 0 {
		for _, rq := range reqs {
			switch rq.Operator() {
			case selection.Equals, selection.DoubleEquals, selection.In:
			default:
				continue
			}
			var cs []int
			for _, v := range rq.ValuesUnsorted() {
				cs = append(cs, c.byLabel[rq.Key()+"\x00"+v]...)
			}
			if !indexed || len(cs) < len(cands) {
				cands, indexed = cs, true
			}
		}
	}
	var out []int
	if indexed && len(cands) < total {
		inNs := func(string) bool { return true }
		if len(namespaces) < len(c.nsNames) {
			set := make(map[string]bool, len(namespaces))
			for _, ns := range namespaces {
				set[ns] = true
			}
			inNs = func(ns string) bool { return set[ns] }
		}
		for _, pi := range cands {
			p := c.pods[pi]
			if inNs(p.Namespace) && sel.Matches(labels.Set(p.Labels)) {
				out = append(out, pi)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	for _, ns := range namespaces {
		for _, pi := range c.byNs[ns] {
			if sel.Matches(labels.Set(c.pods[pi].Labels)) {
				out = append(out, pi)
			}
		}
	}
	return out
}
