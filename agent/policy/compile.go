package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Compile computes the Ruleset of node from m, with the semantics of
// networking.k8s.io/v1 NetworkPolicy:
//
//   - A policy selects the pods of its namespace its podSelector matches;
//     pods with hostNetwork or without addresses are never selected, and
//     only the selected pods whose Node is node get PodRules.
//   - policyTypes empty means Ingress, plus Egress when the policy has
//     egress rules. A pod is isolated in a direction when a policy of that
//     type selects it; it then allows the union of the rules of all those
//     policies, and nothing else.
//   - A rule without peers allows every address (both families); without
//     ports, every protocol and port. Peers are ipBlocks (cidr minus
//     except, of its family only) or the pods (not hostNetwork, with
//     addresses, on any node) matched by podSelector and/or
//     namespaceSelector. A port is TCP unless told; missing, it is every
//     port of its protocol; endPort makes a range. Named ports resolve
//     against the isolated pod (ingress) or each peer pod the rule's
//     selectors match (egress: an ipBlock peer gets none; a rule without
//     peers covers every pod having that port), so one egress rule can
//     allow different ports to different peers.
//
// Each distinct peer becomes one set, each distinct list of exact ports
// one set, and pods isolated by the same resolved rules share one profile
// (the layout is in the package comment), so the output grows with the
// pods plus the policies' peers and ports, not their product.
//
// Input the API server would reject fails closed and is listed in
// Ruleset.Problems. The output is deterministic: it does not depend on
// the order of m.Pods or m.Policies.
func Compile(m Model, node string) Ruleset { return NewCompiler().Compile(m, node) }

// compiler holds the indexes of one compile. Pod numbers index pods, which
// holds only the pods that can be selected or be peers (not hostNetwork,
// with addresses), sorted by namespace and name.
type compiler struct {
	m         Model
	node      string
	pods      []*Pod
	byNs      map[string][]int // namespace -> pods
	byLabel   map[string][]int // key "\x00" value -> pods
	byPort    map[string][]int // named port -> pods having it
	local     map[string][]int // namespace -> pods on node
	nsNames   []string         // namespaces having pods, sorted
	nsCache   map[string][]string
	groups    map[string]*group   // peer key -> the pods it matches
	cidrs     map[string]*group   // ranges key -> ipBlock sets
	states    []*podState         // by pod number; nil: not isolated
	blocks    map[string]*block   // ingress blocks with named ports, by resolution
	x         *Compiler           // what outlives the compile
	rec       *nsRecord           // the namespace being compiled, for its memo
	profiles  map[string]*Profile // profile key -> profile
	allSets   map[string]*AddrSet // every peer set made, by name
	sets      map[string]*AddrSet // the ones a profile uses
	ports     map[string]*PortSet
	portNames map[string]string   // port set key -> name
	subjects  map[string][]int    // cluster policy subject selectors -> pods on node
	cnps      map[string]*cnpMemo // cluster policies resolved in this compile
	problems  []string
}

// group is one peer: the pods a (podSelector, namespaceSelector) pair
// matches, or an ipBlock's ranges; its sets are made when a rule uses it.
type group struct {
	key    string
	pods   []int
	ranges []AddrRange // ipBlock
	cidr   bool
	sets   []string // names of its non-empty sets, made on first use
	made   bool
}

// block is the kernel rules one policy gives a pod in one direction;
// pods with the same blocks share a profile.
type block struct {
	id     int
	policy string
	rules  []Rule
}

// podState is what a pod on the node is given, per direction: the blocks
// of the NetworkPolicies isolating it (nil: none), and of the
// ClusterNetworkPolicies of each tier selecting it, in evaluation order.
type podState struct{ in, eg, admIn, admEg, blIn, blEg []*block }

func newCompiler(m Model, node string) *compiler {
	c := &compiler{
		m: m, node: node,
		byNs: map[string][]int{}, byLabel: map[string][]int{}, byPort: map[string][]int{},
		local: map[string][]int{}, nsCache: map[string][]string{},
		groups: map[string]*group{}, cidrs: map[string]*group{},
		blocks: map[string]*block{}, profiles: map[string]*Profile{}, cnps: map[string]*cnpMemo{},
		allSets: map[string]*AddrSet{}, sets: map[string]*AddrSet{}, ports: map[string]*PortSet{}, portNames: map[string]string{},
	}
	for i := range m.Pods {
		if p := &m.Pods[i]; !p.HostNetwork && len(p.IPs) > 0 {
			c.pods = append(c.pods, p)
		}
	}
	slices.SortStableFunc(c.pods, func(a, b *Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for i, p := range c.pods {
		if len(c.byNs[p.Namespace]) == 0 {
			c.nsNames = append(c.nsNames, p.Namespace)
		}
		c.byNs[p.Namespace] = append(c.byNs[p.Namespace], i)
		for k, v := range p.Labels {
			c.byLabel[k+"\x00"+v] = append(c.byLabel[k+"\x00"+v], i)
		}
		for j, np := range p.Ports {
			if !slices.ContainsFunc(p.Ports[:j], func(x NamedPort) bool { return x.Name == np.Name }) {
				c.byPort[np.Name] = append(c.byPort[np.Name], i)
			}
		}
		if node != "" && p.Node == node {
			c.local[p.Namespace] = append(c.local[p.Namespace], i)
		}
	}
	return c
}

func (c *compiler) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *compiler) newBlock(policy string, rules []Rule) *block {
	c.x.nextBlock++
	return &block{id: c.x.nextBlock, policy: policy, rules: rules}
}

func (c *compiler) addPolicy(np *networkingv1.NetworkPolicy) {
	if len(c.local[np.Namespace]) == 0 {
		return // selects nothing here
	}
	key := np.Namespace + "/" + np.Name
	sel, err := parseSelector(&np.Spec.PodSelector)
	broken := false
	if err != nil {
		c.problem("%s: podSelector: %v: selects every pod of %s and allows nothing", key, err, np.Namespace)
		sel, broken = labels.Everything(), true
	}
	var selected []int
	for _, i := range c.local[np.Namespace] {
		if sel.Matches(labels.Set(c.pods[i].Labels)) {
			selected = append(selected, i)
		}
	}
	if len(selected) == 0 {
		return
	}
	ingress, egress := len(np.Spec.PolicyTypes) == 0, len(np.Spec.PolicyTypes) == 0 && len(np.Spec.Egress) > 0
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		default:
			c.problem("%s: unknown policyType %q ignored", key, t)
		}
	}
	if ingress {
		var rules []*rule
		if !broken {
			for i, r := range np.Spec.Ingress {
				rules = append(rules, c.resolveRule(key, np.Namespace, "ingress", i, r.From, r.Ports))
			}
		}
		named := slices.ContainsFunc(rules, func(r *rule) bool { return len(r.named) > 0 })
		var shared *block
		for _, pi := range selected {
			var b *block
			switch {
			case !named && shared != nil:
				b = shared
			case !named:
				var out []Rule
				for _, r := range rules {
					out = c.ingressRules(out, r, nil)
				}
				shared = c.newBlock(key, out)
				b = shared
			default:
				b = c.namedIngressBlock(key, rules, c.pods[pi])
			}
			st := c.state(pi)
			st.in = append(st.in, b)
		}
	}
	if egress {
		var out []Rule
		if !broken {
			for i, r := range np.Spec.Egress {
				out = c.egressRules(out, c.resolveRule(key, np.Namespace, "egress", i, r.To, r.Ports))
			}
		}
		b := c.newBlock(key, out)
		for _, pi := range selected {
			st := c.state(pi)
			st.eg = append(st.eg, b)
		}
	}
}

// namedIngressBlock is the block of rules for pod p, whose named ports
// decide some of them; pods resolving them alike share it.
func (c *compiler) namedIngressBlock(key string, rules []*rule, p *Pod) *block {
	kb := []byte(key)
	for _, r := range rules {
		if len(r.named) > 0 {
			kb = append(kb, 0)
			kb = strconv.AppendInt(kb, int64(r.index), 10)
			kb = append(kb, ':')
			kb = appendPortsKey(kb, r.resolveNamed(nil, p))
		}
	}
	if b, ok := c.blocks[string(kb)]; ok {
		return b
	}
	var out []Rule
	for _, r := range rules {
		out = c.ingressRules(out, r, p)
	}
	b := c.newBlock(key, out)
	c.blocks[string(kb)] = b
	return b
}

func (c *compiler) state(pi int) *podState {
	if c.states == nil {
		c.states = make([]*podState, len(c.pods))
	}
	st := c.states[pi]
	if st == nil {
		st = &podState{}
		c.states[pi] = st
	}
	return st
}

// ruleset builds the profiles of the isolated pods.
func (c *compiler) ruleset() Ruleset {
	rs := Ruleset{Node: c.node}
	for pi, st := range c.states {
		if st == nil {
			continue
		}
		p := c.pods[pi]
		pr := PodRules{ID: PodID(p.Namespace, p.Name), Namespace: p.Namespace, Name: p.Name, IPs: slices.Clone(p.IPs)}
		slices.SortFunc(pr.IPs, netip.Addr.Compare)
		pr.IngressChain = c.chain(st.admIn, st.in, st.blIn, false)
		pr.EgressChain = c.chain(st.admEg, st.eg, st.blEg, true)
		if pr.IngressChain != "" || pr.EgressChain != "" {
			rs.Pods = append(rs.Pods, pr)
		}
	}
	slices.SortFunc(rs.Pods, func(a, b PodRules) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	owner := map[netip.Addr]string{}
	for i := range rs.Pods {
		pr := &rs.Pods[i]
		pr.IPs = slices.DeleteFunc(pr.IPs, func(a netip.Addr) bool {
			if o, ok := owner[a]; ok {
				c.problem("pod %s/%s: address %s is also pod %s's: left to %s", pr.Namespace, pr.Name, a, o, o)
				return true
			}
			owner[a] = pr.Namespace + "/" + pr.Name
			return false
		})
	}
	// Different blocks can give the same profile (same name): keep one.
	byName := map[string]*Profile{}
	usedPorts := map[string]bool{}
	for _, p := range c.profiles {
		if byName[p.Name] != nil {
			continue
		}
		byName[p.Name] = p
		rs.Profiles = append(rs.Profiles, *p)
		for _, r := range p.Rules {
			if r.Peers != "" {
				c.useSet(r.Peers)
			}
			usedPorts[r.Ports] = true
		}
	}
	for _, s := range c.sets {
		rs.AddrSets = append(rs.AddrSets, *s)
	}
	for _, s := range c.ports {
		if usedPorts[s.Name] {
			rs.PortSets = append(rs.PortSets, *s)
		}
	}
	slices.SortFunc(rs.Profiles, func(a, b Profile) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.AddrSets, func(a, b AddrSet) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(rs.PortSets, func(a, b PortSet) int { return strings.Compare(a.Name, b.Name) })
	rs.Problems = c.problems
	return rs
}

// profile is the profile of a pod whose policies gave it blocks (in
// policy order) in one direction.
func (c *compiler) profile(blocks []*block, egress bool) *Profile {
	kb := make([]byte, 1, 1+4*len(blocks))
	if egress {
		kb[0] = 'e'
	}
	for _, b := range blocks {
		kb = binary.LittleEndian.AppendUint32(kb, uint32(b.id))
	}
	if p, ok := c.profiles[string(kb)]; ok {
		return p
	}
	if p, ok := c.x.profiles[string(kb)]; ok {
		c.profiles[string(kb)] = p
		return p
	}
	p := &Profile{Egress: egress}
	seen := map[Rule]bool{}
	all := false
	for _, b := range blocks {
		p.Policies = append(p.Policies, b.policy)
		for _, r := range b.rules {
			k := Rule{Peers: r.Peers, Ports: r.Ports, Proto: r.Proto, Range: r.Range}
			if all || seen[k] {
				continue // an earlier rule decides every packet this one matches
			}
			seen[k] = true
			all = k == Rule{}
			p.Rules = append(p.Rules, r)
		}
	}
	slices.Sort(p.Policies)
	p.Policies = slices.Compact(p.Policies)
	var hb strings.Builder
	hb.WriteString(strings.Join(p.Policies, ","))
	for _, r := range p.Rules {
		fmt.Fprintf(&hb, "\x00%s\x00%d\x00%s\x00%s\x00%d\x00%d-%d", r.Policy, r.Index, r.Peers, r.Ports, r.Proto, r.Range.From, r.Range.To)
	}
	prefix := "ingress-"
	if egress {
		prefix = "egress-"
	}
	p.Name = prefix + hash12(hb.String())
	c.profiles[string(kb)] = p
	return p
}

// useSet puts the named peer set in the output.
func (c *compiler) useSet(name string) {
	if s, ok := c.allSets[name]; ok {
		c.sets[name] = s
	}
}

// PodID is the ID of the pod (dumps, logs): the first 12 hex digits of
// the SHA-256 of "namespace/name".
func PodID(namespace, name string) string { return hash12(namespace + "/" + name) }

// hash12 is the first 12 hex digits of the SHA-256 of s.
func hash12(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
