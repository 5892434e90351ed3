package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
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
	peers    []*group // pod groups and ipBlocks, in the rule's order
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
	for j, p := range peers {
		switch {
		case p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil):
			return fail("peer %d: ipBlock with a selector", j)
		case p.IPBlock != nil:
			rs, err := ipBlockRanges(p.IPBlock)
			if err != nil {
				return fail("peer %d: %v", j, err)
			}
			g := c.cidrGroup(rs)
			c.record(groupSpec{key: "cidr\x00" + g.key, ranges: rs})
			r.peers = append(r.peers, g)
		case p.PodSelector != nil || p.NamespaceSelector != nil:
			g, err := c.selectPeers(ns, p.PodSelector, p.NamespaceSelector)
			if err != nil {
				return fail("peer %d: %v", j, err)
			}
			c.record(groupSpec{key: g.key, ns: ns, podSel: p.PodSelector, nsSel: p.NamespaceSelector})
			r.peers = append(r.peers, g)
		default:
			return fail("peer %d: empty", j)
		}
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

// peerSets are the set names a rule's peers match on ("" for every
// address).
func (c *compiler) peerSets(r *rule) []string {
	if r.allPeers {
		return []string{""}
	}
	var out []string
	for _, g := range r.peers {
		out = append(out, c.groupSets(g)...)
	}
	return out
}

// ingressRules appends what r allows into the isolated pod p (nil when r
// has no named ports).
func (c *compiler) ingressRules(out []Rule, r *rule, p *Pod) []Rule {
	if r.broken {
		return out
	}
	var ports []Rule
	switch {
	case r.allPorts:
		ports = []Rule{{}}
	case len(r.named) > 0 && p != nil:
		ports = c.portRules(r.resolveNamed(slices.Clone(r.numeric), p))
	default:
		ports = c.portRules(r.numeric)
	}
	return appendRules(out, r, c.peerSets(r), ports)
}

// egressRules appends what r allows out of the pods its policy isolates.
func (c *compiler) egressRules(out []Rule, r *rule) []Rule {
	if r.broken {
		return out
	}
	if r.allPorts {
		return appendRules(out, r, c.peerSets(r), []Rule{{}})
	}
	if len(r.numeric) > 0 {
		out = appendRules(out, r, c.peerSets(r), c.portRules(r.numeric))
	}
	if len(r.named) == 0 {
		return out
	}
	if c.rec != nil {
		c.rec.noMemo = true // the rules depend on the peers' ports
	}
	var names strings.Builder
	for _, n := range r.named {
		fmt.Fprintf(&names, "%s/%d,", n.name, n.proto)
	}
	peers := r.peers
	if r.allPeers {
		var cands []int
		for _, n := range r.named {
			cands = append(cands, c.byPort[n.name]...)
		}
		slices.Sort(cands)
		peers = []*group{{key: "all", pods: slices.Compact(cands)}}
	}
	for _, g := range peers {
		if g.cidr {
			continue // an ipBlock peer has no named ports
		}
		// The peer's pods, by how they resolve the rule's named ports.
		var order []string
		split := map[string][]int{}
		resolved := map[string][]ProtoPorts{}
		var kb []byte
		for _, pi := range g.pods {
			ports := r.resolveNamed(nil, c.pods[pi])
			if len(ports) == 0 {
				continue
			}
			kb = appendPortsKey(kb[:0], ports)
			k := string(kb)
			if _, ok := split[k]; !ok {
				order = append(order, k)
				resolved[k] = ports
			}
			split[k] = append(split[k], pi)
		}
		for _, k := range order {
			sub := c.subGroup(g.key+"\x00named "+names.String()+"\x00"+k, split[k])
			out = appendRules(out, r, c.groupSets(sub), c.portRules(resolved[k]))
		}
	}
	return out
}

// appendPortsKey appends a text of ports (a map key).
func appendPortsKey(b []byte, ports []ProtoPorts) []byte {
	for _, pp := range ports {
		b = strconv.AppendUint(b, uint64(pp.Proto), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(pp.Ports.From), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(pp.Ports.To), 10)
		b = append(b, ',')
	}
	return b
}

// appendRules appends one Rule of r per peer set and port match.
func appendRules(out []Rule, r *rule, peers []string, ports []Rule) []Rule {
	for _, s := range peers {
		for _, pm := range ports {
			pm.Policy, pm.Index, pm.Peers = r.policy, r.index, s
			out = append(out, pm)
		}
	}
	return out
}

// portRules are the port matches of merged ports: a port set for two or
// more exact ports, one match per range or single port otherwise.
func (c *compiler) portRules(ports []ProtoPorts) []Rule {
	var out []Rule
	var exact []ProtoPort
	for _, pp := range ports {
		if pp.Ports.From == pp.Ports.To {
			exact = append(exact, ProtoPort{pp.Proto, pp.Ports.From})
		}
	}
	if len(exact) >= 2 {
		out = append(out, Rule{Ports: c.portSet(exact)})
	}
	for _, pp := range ports {
		if pp.Ports.From != pp.Ports.To || len(exact) < 2 {
			out = append(out, Rule{Proto: pp.Proto, Range: pp.Ports})
		}
	}
	return out
}

// portSet is the name of the port set holding exact (sorted, distinct).
func (c *compiler) portSet(exact []ProtoPort) string {
	var kb []byte
	for _, p := range exact {
		kb = strconv.AppendUint(kb, uint64(p.Proto), 10)
		kb = append(kb, '/')
		kb = strconv.AppendUint(kb, uint64(p.Port), 10)
		kb = append(kb, ',')
	}
	if name, ok := c.portNames[string(kb)]; ok {
		c.recordPorts(name)
		return name
	}
	name := "ports-" + hash12(string(kb))
	c.portNames[string(kb)] = name
	c.ports[name] = &PortSet{Name: name, Ports: exact}
	c.recordPorts(name)
	return name
}

// subGroup is the group of some of a peer's pods (those resolving named
// ports alike), made once per key.
func (c *compiler) subGroup(key string, pods []int) *group {
	if g, ok := c.groups[key]; ok {
		return g
	}
	g := &group{key: key, pods: pods}
	c.groups[key] = g
	return g
}

// cidrGroup is the group of an ipBlock's ranges (one family).
func (c *compiler) cidrGroup(rs []AddrRange) *group {
	var kb strings.Builder
	for _, r := range rs {
		kb.WriteString(r.From.String() + "-" + r.To.String() + ",")
	}
	if g, ok := c.cidrs[kb.String()]; ok {
		return g
	}
	g := &group{key: kb.String(), ranges: rs, cidr: true}
	c.cidrs[kb.String()] = g
	return g
}

// groupSets makes g's sets (once) and names its non-empty ones.
func (c *compiler) groupSets(g *group) []string {
	if g.made {
		return g.sets
	}
	g.made = true
	h := hash12(g.key)
	if g.cidr {
		if len(g.ranges) > 0 {
			v6 := g.ranges[0].From.Is6()
			s := &AddrSet{Name: fmt.Sprintf("cidr%d-%s", map[bool]int{false: 4, true: 6}[v6], h), V6: v6, Interval: true, Ranges: g.ranges}
			c.allSets[s.Name] = s
			g.sets = []string{s.Name}
		}
		return g.sets
	}
	var v4, v6 []netip.Addr
	for _, pi := range g.pods {
		for _, a := range c.pods[pi].IPs {
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
	}
	for i, addrs := range [][]netip.Addr{v4, v6} {
		if len(addrs) == 0 {
			continue
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		s := &AddrSet{Name: fmt.Sprintf("pods%d-%s", 4+2*i, h), V6: i == 1, Addrs: slices.Compact(addrs)}
		c.allSets[s.Name] = s
		g.sets = append(g.sets, s.Name)
	}
	return g.sets
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
func (c *compiler) selectPeers(ns string, podSel, nsSel *metav1.LabelSelector) (*group, error) {
	ps, psText := labels.Everything(), ""
	if podSel != nil {
		p := parseSelectorString(podSel)
		if p.err != nil {
			return nil, fmt.Errorf("podSelector: %v", p.err)
		}
		ps, psText = p.sel, p.str
	}
	var nss labels.Selector
	nsKey := "=" + ns
	if nsSel != nil {
		p := parseSelectorString(nsSel)
		if p.err != nil {
			return nil, fmt.Errorf("namespaceSelector: %v", p.err)
		}
		nss, nsKey = p.sel, "~"+p.str
	}
	key := nsKey + "\x00" + psText
	if g, ok := c.groups[key]; ok {
		return g, nil
	}
	namespaces := []string{ns}
	if nss != nil {
		namespaces = c.matchNamespaces(nsKey, nss)
	}
	g := &group{key: key, pods: c.matchPods(ps, namespaces)}
	c.groups[key] = g
	return g, nil
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
	// The requirement whose index lists the fewest pods, counted before
	// anything is copied.
	var best []string // its index keys
	n, indexed := 0, false
	if reqs, _ := sel.Requirements(); len(reqs) > 0 {
		for _, rq := range reqs {
			switch rq.Operator() {
			case selection.Equals, selection.DoubleEquals, selection.In:
			default:
				continue
			}
			var keys []string
			count := 0
			for _, v := range rq.ValuesUnsorted() {
				k := rq.Key() + "\x00" + v
				keys = append(keys, k)
				count += len(c.byLabel[k])
			}
			if !indexed || count < n {
				best, n, indexed = keys, count, true
			}
		}
	}
	var cands []int
	if indexed && n < total {
		if len(best) == 1 {
			cands = c.byLabel[best[0]] // read only
		} else {
			cands = make([]int, 0, n)
			for _, k := range best {
				cands = append(cands, c.byLabel[k]...)
			}
		}
	}
	var out []int
	if indexed && n < total {
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
