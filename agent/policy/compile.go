package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// Input the API server would reject fails closed and is listed in
// Ruleset.Problems. The output is deterministic: it does not depend on
// the order of m.Pods or m.Policies.
func Compile(m Model, node string) Ruleset {
	c := newCompiler(m, node)
	pols := make([]*networkingv1.NetworkPolicy, 0, len(m.Policies))
	for _, np := range m.Policies {
		if np != nil {
			pols = append(pols, np)
		}
	}
	slices.SortStableFunc(pols, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, np := range pols {
		c.addPolicy(np)
	}
	return c.ruleset()
}

// compiler holds the indexes of one compile. Pod numbers index pods, which
// holds only the pods that can be selected or be peers (not hostNetwork,
// with addresses), sorted by namespace and name.
type compiler struct {
	m        Model
	node     string
	pods     []*Pod
	byNs     map[string][]int // namespace -> pods
	byLabel  map[string][]int // key "\x00" value -> pods
	byPort   map[string][]int // named port -> pods having it
	local    map[string][]int // namespace -> pods on node
	nsNames  []string         // namespaces having pods, sorted
	nsCache  map[string][]string
	peers    map[string]*peerPods
	states   map[int]*podState
	flat     map[string]*Chain // flatten's memo
	runs     map[runKey][2][]ubox
	problems []string
}

// peerPods are the pods a (podSelector, namespaceSelector) pair matches.
type peerPods struct {
	pods   []int
	ranges []AddrRange
}

type podState struct{ in, eg *Chain }

func newCompiler(m Model, node string) *compiler {
	c := &compiler{
		m: m, node: node,
		byNs: map[string][]int{}, byLabel: map[string][]int{}, byPort: map[string][]int{},
		local: map[string][]int{}, nsCache: map[string][]string{},
		peers: map[string]*peerPods{}, states: map[int]*podState{}, flat: map[string]*Chain{}, runs: map[runKey][2][]ubox{},
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

func (c *compiler) addPolicy(np *networkingv1.NetworkPolicy) {
	if len(c.local[np.Namespace]) == 0 {
		return // selects nothing here
	}
	key := np.Namespace + "/" + np.Name
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
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
		for _, pi := range selected {
			ch := c.chain(pi, true)
			ch.Policies = append(ch.Policies, key)
			for _, r := range rules {
				ch.Rules = append(ch.Rules, r.ingressAllows(c.pods[pi])...)
			}
		}
	}
	if egress {
		var allows []Allow
		if !broken {
			for i, r := range np.Spec.Egress {
				allows = append(allows, c.egressAllows(c.resolveRule(key, np.Namespace, "egress", i, r.To, r.Ports))...)
			}
		}
		for _, pi := range selected {
			ch := c.chain(pi, false)
			ch.Policies = append(ch.Policies, key)
			ch.Rules = append(ch.Rules, allows...)
		}
	}
}

func (c *compiler) chain(pi int, ingress bool) *Chain {
	st := c.states[pi]
	if st == nil {
		st = &podState{}
		c.states[pi] = st
	}
	p := &st.eg
	if ingress {
		p = &st.in
	}
	if *p == nil {
		*p = &Chain{}
	}
	return *p
}

// ruleset flattens the chains of the isolated pods.
func (c *compiler) ruleset() Ruleset {
	rs := Ruleset{Node: c.node}
	for pi, st := range c.states {
		p := c.pods[pi]
		pr := PodRules{ID: PodID(p.Namespace, p.Name), Namespace: p.Namespace, Name: p.Name,
			IPs: slices.Clone(p.IPs), Ingress: st.in, Egress: st.eg}
		slices.SortFunc(pr.IPs, netip.Addr.Compare)
		for _, ch := range []*Chain{pr.Ingress, pr.Egress} {
			if ch != nil {
				c.flatten(ch)
			}
		}
		rs.Pods = append(rs.Pods, pr)
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
	rs.Problems = c.problems
	return rs
}

// PodID is the ID of the pod's chains and sets: the first 12 hex digits
// of the SHA-256 of "namespace/name".
func PodID(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return hex.EncodeToString(sum[:6])
}

// runKey identifies the boxes of shared peers with one protocol and port
// range.
type runKey struct {
	peers *AddrRange
	n     int
	ports ProtoPorts
}

// flatten fills ch's sets from ch.Rules. Pods with the same rules (the
// same resolved peers, shared, and ports) share the result.
func (c *compiler) flatten(ch *Chain) {
	slices.Sort(ch.Policies)
	ch.Policies = slices.Compact(ch.Policies)
	var kb strings.Builder
	for _, a := range ch.Rules {
		fmt.Fprintf(&kb, "%d %p %d %t:", len(a.Peers), sliceID(a.Peers), len(a.Ports), a.Ports == nil)
		for _, pp := range a.Ports {
			fmt.Fprintf(&kb, "%d/%d-%d,", pp.Proto, pp.Ports.From, pp.Ports.To)
		}
		kb.WriteByte(';')
	}
	key := kb.String()
	if f, ok := c.flat[key]; ok {
		ch.Any4, ch.Any6, ch.Ports4, ch.Ports6 = f.Any4, f.Any6, f.Ports4, f.Ports6
		return
	}
	c.flattenRules(ch)
	c.flat[key] = ch
}

// sliceID identifies a shared slice (the compiler keeps every resolved
// slice alive, so no address is reused during a compile).
func sliceID(rs []AddrRange) *AddrRange {
	if len(rs) == 0 {
		return nil
	}
	return &rs[0]
}

func (c *compiler) flattenRules(ch *Chain) {
	var any []AddrRange
	for _, a := range ch.Rules {
		if a.Ports == nil {
			if a.Peers == nil {
				any = append(any, full4, full6)
			} else {
				any = append(any, a.Peers...)
			}
		}
	}
	any = mergeRanges(any)
	s4, s6 := newBoxSet(true), newBoxSet(false)
	for _, a := range ch.Rules {
		if a.Ports == nil {
			continue
		}
		peers := a.Peers
		if peers == nil {
			peers = []AddrRange{full4, full6}
		}
		if len(any) == 0 && a.Peers != nil {
			// The usual case: the runs depend on the shared peers only.
			for _, pp := range a.Ports {
				k := runKey{sliceID(a.Peers), len(a.Peers), pp}
				r, ok := c.runs[k]
				if !ok {
					v4, v6 := splitFamilies(a.Peers)
					r = [2][]ubox{toRun(v4, pp.Ports), toRun(v6, pp.Ports)}
					c.runs[k] = r
				}
				s4.add(pp.Proto, r[0])
				s6.add(pp.Proto, r[1])
			}
			continue
		}
		v4, v6 := splitFamilies(subtractRanges(peers, any))
		for _, pp := range a.Ports {
			s4.addRun(v4, pp.Proto, pp.Ports)
			s6.addRun(v6, pp.Proto, pp.Ports)
		}
	}
	ch.Any4, ch.Any6 = splitFamilies(any)
	ch.Ports4, ch.Ports6 = s4.disjoint(), s6.disjoint()
}
