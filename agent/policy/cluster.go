package policy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// ClusterNetworkPolicy (policy.networking.k8s.io/v1beta1) in the same
// compiler and table as NetworkPolicy. Per pod and direction the
// evaluation is: the Admin tier's rules (policies by priority, then name;
// rules in order; first match decides: Accept allows, Deny drops, Pass
// skips the rest of the tier), then NetworkPolicy (final for a pod it
// isolates: a rule allows, else drop), then the Baseline tier (same
// actions; Pass skips to the default), then the default: allow.
//
// In the kernel that is at most two profile chains: the Admin tier's
// rules with Next naming the tail (Pass and no match: goto tail), and the
// tail, which is the pod's NetworkPolicy profile when one isolates it,
// else the Baseline tier's rules as an Open profile (no match: allow).
// A pod no tier selects keeps no chain (allowed, as before).

// Tiers.
const (
	TierAdmin    = string(cnp.AdminTier)
	TierBaseline = string(cnp.BaselineTier)
)

// clusterPolicies adds the blocks of the cluster policies that select pods
// on the node to their states, each tier in evaluation order.
func (c *compiler) clusterPolicies() {
	if len(c.m.ClusterPolicies) == 0 || len(c.local) == 0 {
		return
	}
	pols := slices.Clone(c.m.ClusterPolicies)
	pols = slices.DeleteFunc(pols, func(p *cnp.ClusterNetworkPolicy) bool { return p == nil })
	slices.SortStableFunc(pols, func(a, b *cnp.ClusterNetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Spec.Priority, b.Spec.Priority), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range pols {
		c.addClusterPolicy(p)
	}
}

func (c *compiler) addClusterPolicy(p *cnp.ClusterNetworkPolicy) {
	key := p.Name
	tier := string(p.Spec.Tier)
	if tier != TierAdmin && tier != TierBaseline {
		c.problem("ClusterNetworkPolicy %s: tier %q: must be Admin or Baseline: ignored", key, tier)
		return
	}
	if p.Spec.Priority < 0 || p.Spec.Priority > 1000 {
		c.problem("ClusterNetworkPolicy %s: priority %d: must be 0..1000: ignored", key, p.Spec.Priority)
		return
	}
	subjects, err := c.subjectPods(p.Spec.Subject)
	if err != nil {
		// A subject the compiler cannot read: the policy can select any
		// pod; Deny and Pass rules then deny, Accept rules allow nothing
		// (failing closed as the API prescribes for unknown fields).
		c.problem("ClusterNetworkPolicy %s: subject: %v: applied to every pod on the node", key, err)
		for _, pis := range c.local {
			subjects = append(subjects, pis...)
		}
		slices.Sort(subjects)
	}
	if len(subjects) == 0 {
		return
	}
	inB, egB, named := c.clusterBlocks(p)
	for _, pi := range subjects {
		st := c.state(pi)
		if len(p.Spec.Ingress) > 0 {
			b := inB
			if named != nil { // ingress named ports resolve against each subject pod
				sp := c.pods[pi]
				b = c.newBlock(p.Name, stampRules(p, named, func(r clusterRule) []Rule { return r.rules(c, sp, false) }))
			}
			if tier == TierAdmin {
				st.admIn = append(st.admIn, b)
			} else {
				st.blIn = append(st.blIn, b)
			}
		}
		if egB != nil {
			if tier == TierAdmin {
				st.admEg = append(st.admEg, egB)
			} else {
				st.blEg = append(st.blEg, egB)
			}
		}
	}
}

// clusterBlocks is the blocks p gives every subject pod: ingress (nil
// without ingress rules) and egress (nil without egress rules); when its
// ingress rules name ports, which resolve against each subject pod, named
// is those rules instead of an ingress block. The blocks are taken from
// the Compiler's memo when p is the same object and its peers still have
// the same sets, and remembered otherwise.
func (c *compiler) clusterBlocks(p *cnp.ClusterNetworkPolicy) (in, eg *block, named []clusterRule) {
	if m := c.x.cnps[p.Name]; m != nil && m.pol == p && c.replayCluster(m) {
		c.cnps[p.Name] = m
		c.x.cnpReused++
		return m.in, m.eg, nil
	}
	c.rec = &nsRecord{seen: map[string]bool{}}
	defer func() { c.rec = nil }()
	p0 := len(c.problems)
	ins, egs := c.clusterRules(p)
	if slices.ContainsFunc(ins, func(r clusterRule) bool { return r.r != nil && len(r.r.named) > 0 }) {
		named = ins
	} else if len(ins) > 0 {
		in = c.newBlock(p.Name, stampRules(p, ins, func(r clusterRule) []Rule { return r.rules(c, nil, false) }))
	}
	if len(egs) > 0 {
		eg = c.newBlock(p.Name, stampRules(p, egs, func(r clusterRule) []Rule { return r.rules(c, nil, true) }))
	}
	if named != nil || c.rec.noMemo {
		return in, eg, named
	}
	shape, ok := c.shape(c.rec.specs)
	if !ok {
		return in, eg, nil
	}
	m := &cnpMemo{pol: p, specs: c.rec.specs, shape: shape, problems: slices.Clone(c.problems[p0:]), in: in, eg: eg}
	for _, name := range c.rec.ports {
		m.ports = append(m.ports, c.ports[name])
	}
	c.cnps[p.Name] = m
	return in, eg, nil
}

// clusterRules resolves p's ingress and egress rules.
func (c *compiler) clusterRules(p *cnp.ClusterNetworkPolicy) (in, eg []clusterRule) {
	in = make([]clusterRule, len(p.Spec.Ingress))
	for i, r := range p.Spec.Ingress {
		peers, unknown := ingressPeers(r.From)
		in[i] = c.clusterRule(p.Name, "ingress", i, r.Action, peers, unknown, r.Protocols)
	}
	eg = make([]clusterRule, len(p.Spec.Egress))
	for i, r := range p.Spec.Egress {
		peers, unknown := egressPeers(r.To)
		eg[i] = c.clusterRule(p.Name, "egress", i, r.Action, peers, unknown, r.Protocols)
	}
	return in, eg
}

// stampRules is the kernel rules of rs in order, each marked with p's tier
// and priority and its rule's action.
func stampRules(p *cnp.ClusterNetworkPolicy, rs []clusterRule, rules func(clusterRule) []Rule) []Rule {
	var out []Rule
	for _, r := range rs {
		for _, k := range rules(r) {
			k.Tier, k.Priority, k.Action = string(p.Spec.Tier), p.Spec.Priority, r.action
			out = append(out, k)
		}
	}
	return out
}

// cnpMemo is what one ClusterNetworkPolicy's rules resolved to.
type cnpMemo struct {
	pol      *cnp.ClusterNetworkPolicy // the object: a change is a new one
	specs    []groupSpec               // the peers its rules name, distinct
	shape    string                    // the peers' set names when made
	problems []string
	ports    []*PortSet
	in, eg   *block
}

// replayCluster makes m's sets and port sets again and gives its
// problems, when its peers still have the same set names.
func (c *compiler) replayCluster(m *cnpMemo) bool {
	if shape, ok := c.shape(m.specs); !ok || shape != m.shape {
		return false
	}
	c.problems = append(c.problems, m.problems...)
	for _, ps := range m.ports {
		c.ports[ps.Name] = ps
	}
	return true
}

// clusterRule is one rule of a ClusterNetworkPolicy, resolved.
type clusterRule struct {
	policy string
	index  int
	action Action
	r      *rule // nil: matches every packet (a broken Deny or Pass rule), or nothing (a broken Accept)
	all    bool
}

// rules are the kernel rules of r for subject pod p (ingress named ports
// resolve against it).
func (r clusterRule) rules(c *compiler, p *Pod, egress bool) []Rule {
	switch {
	case r.all:
		return []Rule{{Policy: r.policy, Index: r.index}}
	case r.r == nil:
		return nil
	case egress:
		return c.egressRules(nil, r.r)
	default:
		return c.ingressRules(nil, r.r, p)
	}
}

// clusterRule resolves one rule. Input the compiler cannot read fails
// closed: an Accept rule then matches nothing, a Deny or Pass rule every
// packet (the API's rule for peers of fields it does not know).
func (c *compiler) clusterRule(key, dir string, i int, action cnp.ClusterNetworkPolicyRuleAction, peers []networkingv1.NetworkPolicyPeer, unknown string, protocols []cnp.ClusterNetworkPolicyProtocol) clusterRule {
	cr := clusterRule{policy: key, index: i}
	switch action {
	case cnp.ClusterNetworkPolicyRuleActionAccept:
		cr.action = Allow
	case cnp.ClusterNetworkPolicyRuleActionDeny:
		cr.action = Deny
	case cnp.ClusterNetworkPolicyRuleActionPass:
		cr.action = Pass
	default:
		c.problem("ClusterNetworkPolicy %s: %s[%d]: action %q: denies everything", key, dir, i, action)
		return clusterRule{policy: key, index: i, action: Deny, all: true}
	}
	fail := func(why string) clusterRule {
		if cr.action == Allow {
			c.problem("ClusterNetworkPolicy %s: %s[%d]: %s: the rule accepts nothing", key, dir, i, why)
			return cr
		}
		c.problem("ClusterNetworkPolicy %s: %s[%d]: %s: the rule applies to every packet", key, dir, i, why)
		cr.all = true
		return cr
	}
	if unknown != "" {
		return fail(unknown)
	}
	ports, err := protocolPorts(protocols)
	if err != nil {
		return fail(err.Error())
	}
	n := len(c.problems)
	r := c.resolveRule(key, "", dir, i, peers, ports)
	if r.broken {
		c.problems = c.problems[:n] // reworded below
		return fail("peers or ports invalid")
	}
	cr.r = r
	return cr
}

// ingressPeers converts a rule's peers to NetworkPolicy peers (whose
// resolution the compiler shares); unknown says why one cannot be.
func ingressPeers(from []cnp.ClusterNetworkPolicyIngressPeer) ([]networkingv1.NetworkPolicyPeer, string) {
	var out []networkingv1.NetworkPolicyPeer
	for j, p := range from {
		switch {
		case p.Namespaces != nil:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: p.Namespaces})
		case p.Pods != nil:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: &p.Pods.NamespaceSelector, PodSelector: &p.Pods.PodSelector})
		default:
			return nil, fmt.Sprintf("from[%d]: no peer this implementation knows", j)
		}
	}
	if len(out) == 0 {
		return nil, "no peers"
	}
	return out, ""
}

func egressPeers(to []cnp.ClusterNetworkPolicyEgressPeer) ([]networkingv1.NetworkPolicyPeer, string) {
	var out []networkingv1.NetworkPolicyPeer
	for j, p := range to {
		switch {
		case p.Namespaces != nil:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: p.Namespaces})
		case p.Pods != nil:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: &p.Pods.NamespaceSelector, PodSelector: &p.Pods.PodSelector})
		case len(p.Networks) > 0:
			for _, n := range p.Networks {
				out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: string(n)}})
			}
		case p.Nodes != nil:
			return nil, fmt.Sprintf("to[%d]: nodes peers (experimental) are not supported", j)
		case len(p.DomainNames) > 0:
			return nil, fmt.Sprintf("to[%d]: domainNames peers (experimental) are not supported", j)
		default:
			return nil, fmt.Sprintf("to[%d]: no peer this implementation knows", j)
		}
	}
	if len(out) == 0 {
		return nil, "no peers"
	}
	return out, ""
}

// protocolPorts converts a rule's protocols to NetworkPolicy ports.
func protocolPorts(protocols []cnp.ClusterNetworkPolicyProtocol) ([]networkingv1.NetworkPolicyPort, error) {
	var out []networkingv1.NetworkPolicyPort
	for j, p := range protocols {
		var proto corev1.Protocol
		var dp *cnp.Port
		switch {
		case p.TCP != nil:
			proto, dp = corev1.ProtocolTCP, p.TCP.DestinationPort
		case p.UDP != nil:
			proto, dp = corev1.ProtocolUDP, p.UDP.DestinationPort
		case p.SCTP != nil:
			proto, dp = corev1.ProtocolSCTP, p.SCTP.DestinationPort
		case p.DestinationNamedPort != "":
			// A named port names its protocol with the container port:
			// match it for every protocol the pods give it.
			for _, pr := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
				port := intstr.FromString(p.DestinationNamedPort)
				out = append(out, networkingv1.NetworkPolicyPort{Protocol: &pr, Port: &port})
			}
			continue
		default:
			return nil, fmt.Errorf("protocols[%d]: no protocol this implementation knows", j)
		}
		np := networkingv1.NetworkPolicyPort{Protocol: &proto}
		switch {
		case dp == nil:
		case dp.Range != nil:
			if dp.Range.Start >= dp.Range.End {
				return nil, fmt.Errorf("protocols[%d]: range %d-%d: start must be below end", j, dp.Range.Start, dp.Range.End)
			}
			port, end := intstr.FromInt32(dp.Range.Start), dp.Range.End
			np.Port, np.EndPort = &port, &end
		default:
			port := intstr.FromInt32(dp.Number)
			np.Port = &port
		}
		out = append(out, np)
	}
	return out, nil
}

// subjectPods is the pods on the node a subject selects, sorted; policies
// with the same subject selectors share one evaluation per compile.
func (c *compiler) subjectPods(s cnp.ClusterNetworkPolicySubject) ([]int, error) {
	var nsSel, podSel *metav1.LabelSelector
	switch {
	case s.Namespaces != nil:
		nsSel = s.Namespaces
	case s.Pods != nil:
		nsSel, podSel = &s.Pods.NamespaceSelector, &s.Pods.PodSelector
	default:
		return nil, fmt.Errorf("no namespaces or pods")
	}
	ns := parseSelectorString(nsSel)
	if ns.err != nil {
		return nil, fmt.Errorf("namespaceSelector: %v", ns.err)
	}
	ps := parsedSelector{sel: labels.Everything()}
	if podSel != nil {
		if ps = parseSelectorString(podSel); ps.err != nil {
			return nil, fmt.Errorf("podSelector: %v", ps.err)
		}
	}
	key := ns.str + "\x00" + ps.str
	if podSel == nil {
		key = ns.str + "\x01"
	}
	if out, ok := c.subjects[key]; ok {
		return out, nil
	}
	var out []int
	for name, pis := range c.local {
		if !ns.sel.Matches(labels.Set(c.m.Namespaces[name])) {
			continue
		}
		for _, pi := range pis {
			if ps.sel.Matches(labels.Set(c.pods[pi].Labels)) {
				out = append(out, pi)
			}
		}
	}
	slices.Sort(out)
	if c.subjects == nil {
		c.subjects = map[string][]int{}
	}
	c.subjects[key] = out
	return out, nil
}

// chain is the profile chain of a pod in one direction from its Admin
// blocks, NetworkPolicy blocks (nil: not isolated) and Baseline blocks;
// "" when nothing applies (allowed).
func (c *compiler) chain(adm, np, bl []*block, egress bool) string {
	tail := ""
	switch {
	case np != nil:
		tail = c.profile(np, egress).Name
	case bl != nil:
		tail = c.tierProfile(bl, egress, "").Name
	}
	if adm == nil {
		return tail
	}
	return c.tierProfile(adm, egress, tail).Name
}

// tierProfile is the profile of one tier's blocks (in evaluation order)
// continuing in next ("" : Open, allow).
func (c *compiler) tierProfile(blocks []*block, egress bool, next string) *Profile {
	kb := make([]byte, 0, 2+4*len(blocks)+len(next))
	kb = append(kb, 't', 'i')
	if egress {
		kb[1] = 'e'
	}
	for _, b := range blocks {
		kb = binary.LittleEndian.AppendUint32(kb, uint32(b.id))
	}
	kb = append(append(kb, 0), next...)
	if p, ok := c.profiles[string(kb)]; ok {
		return p
	}
	if p, ok := c.x.profiles[string(kb)]; ok {
		c.profiles[string(kb)] = p
		return p
	}
	p := &Profile{Egress: egress, Next: next, Open: next == ""}
	seen := map[Rule]bool{}
	for _, b := range blocks {
		p.Policies = append(p.Policies, b.policy)
		for _, r := range b.rules {
			k := Rule{Peers: r.Peers, Ports: r.Ports, Proto: r.Proto, Range: r.Range}
			if seen[k] {
				continue // an earlier rule of the tier decides every packet it matches
			}
			seen[k] = true
			p.Rules = append(p.Rules, r)
		}
	}
	slices.Sort(p.Policies)
	p.Policies = slices.Compact(p.Policies)
	var hb strings.Builder
	fmt.Fprintf(&hb, "tier\x00%s\x00%t\x00%s", next, p.Open, strings.Join(p.Policies, ","))
	for _, r := range p.Rules {
		fmt.Fprintf(&hb, "\x00%s\x00%d\x00%s\x00%s\x00%d\x00%d-%d\x00%s\x00%d\x00%d", r.Policy, r.Index, r.Peers, r.Ports,
			r.Proto, r.Range.From, r.Range.To, r.Tier, r.Priority, r.Action)
	}
	prefix := "ingress-"
	if egress {
		prefix = "egress-"
	}
	p.Name = prefix + hash12(hb.String())
	c.profiles[string(kb)] = p
	return p
}
