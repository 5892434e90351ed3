package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Compiler compiles Rulesets like Compile, remembering per namespace what
// the namespace's policies gave its pods on the node, so that a change
// recompiles only the namespaces it touches: a namespace is reused when
// its policies are the same objects (pointers: a changed policy is a new
// object, as from an informer or a datastore watch; callers must not
// change a policy in place), its pods on the node have the same names,
// labels and named ports, and every peer set its rules name still has
// members of the same families. The result is always what Compile would
// give (a property test checks it on random changes). Safe for concurrent
// use; one Compiler serves one node at a time.
type Compiler struct {
	mu        sync.Mutex
	node      string
	nextBlock int
	ns        map[string]*nsMemo
	cnps      map[string]*cnpMemo // by ClusterNetworkPolicy name
	profiles  map[string]*Profile // by block ids, of the last compile
	// reused and redone count the namespaces the last Compile took from
	// its memo and compiled again.
	reused, redone int
	// cnpReused counts the cluster policies the last Compile took from
	// its memo.
	cnpReused int
}

// Reused reports how many namespaces the last Compile reused and how many
// it compiled again.
func (x *Compiler) Reused() (reused, redone int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.reused, x.redone
}

// nsMemo is what one namespace's policies gave its pods on the node.
type nsMemo struct {
	sig      string
	pols     []*networkingv1.NetworkPolicy // kept alive: sig holds their addresses
	specs    []groupSpec                   // the peers its rules name, distinct
	shape    string                        // the peers' set names when made
	problems []string
	ports    []*PortSet
	pods     [][2][]*block // by position in the namespace's pods on the node (as in sig)
}

// groupSpec says how to make a peer group again.
type groupSpec struct {
	key           string
	ns            string
	podSel, nsSel *metav1.LabelSelector
	ranges        []AddrRange // ipBlock (nil for selector peers)
}

// nsRecord collects, while a namespace's policies are compiled, what a
// memo of it needs.
type nsRecord struct {
	specs  []groupSpec
	seen   map[string]bool
	ports  []string
	noMemo bool // egress named ports: rules depend on peers' ports
}

// NewCompiler returns a Compiler with nothing remembered.
func NewCompiler() *Compiler { return &Compiler{} }

// Compile is Compile(m, node), reusing what earlier calls resolved.
func (x *Compiler) Compile(m Model, node string) Ruleset {
	x.mu.Lock()
	defer x.mu.Unlock()
	if node != x.node {
		x.node, x.ns, x.cnps, x.profiles = node, nil, nil, nil
	}
	c := newCompiler(m, node)
	c.x = x
	// Only policies of namespaces with pods on node can select one.
	// Sorted by namespace and name; duplicates keep their input order.
	type pol struct {
		np *networkingv1.NetworkPolicy
		i  int
	}
	sorted := make([]pol, 0, len(m.Policies))
	for i, np := range m.Policies {
		if np != nil && len(c.local[np.Namespace]) > 0 {
			sorted = append(sorted, pol{np, i})
		}
	}
	slices.SortFunc(sorted, func(a, b pol) int {
		if a.np.Namespace != b.np.Namespace {
			return strings.Compare(a.np.Namespace, b.np.Namespace)
		}
		if a.np.Name != b.np.Name {
			return strings.Compare(a.np.Name, b.np.Name)
		}
		return a.i - b.i
	})
	pols := make([]*networkingv1.NetworkPolicy, len(sorted))
	for i, p := range sorted {
		pols[i] = p.np
	}
	memos := make(map[string]*nsMemo, len(x.ns))
	x.reused, x.redone, x.cnpReused = 0, 0, 0
	for i := 0; i < len(pols); {
		ns := pols[i].Namespace
		j := i + 1
		for j < len(pols) && pols[j].Namespace == ns {
			j++
		}
		sig := c.nsSignature(ns, pols[i:j])
		if old := x.ns[ns]; old != nil && old.sig == sig && c.replay(ns, old) {
			memos[ns] = old
			x.reused++
		} else {
			x.redone++
			c.rec = &nsRecord{seen: map[string]bool{}}
			p0 := len(c.problems)
			for _, np := range pols[i:j] {
				c.addPolicy(np)
			}
			if memo := c.capture(ns, sig, pols[i:j], p0); memo != nil {
				memos[ns] = memo
			}
			c.rec = nil
		}
		i = j
	}
	x.ns = memos
	c.clusterPolicies()
	x.cnps = c.cnps
	rs := c.ruleset()
	x.profiles = c.profiles
	return rs
}

// nsSignature identifies what a namespace's blocks depend on besides its
// peers' members: its policies (as objects) and its pods on the node.
func (c *compiler) nsSignature(ns string, pols []*networkingv1.NetworkPolicy) string {
	var b []byte
	for _, np := range pols {
		b = fmt.Appendf(b, "%p,", np)
	}
	for _, pi := range c.local[ns] {
		p := c.pods[pi]
		b = append(b, '|')
		b = append(b, p.Name...)
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			b = fmt.Appendf(b, "\x00%s=%s", k, p.Labels[k])
		}
		for _, np := range p.Ports {
			b = fmt.Appendf(b, "\x01%s/%d/%d", np.Name, np.Protocol, np.Port)
		}
	}
	return string(b)
}

// record notes a peer group the namespace being compiled uses.
func (c *compiler) record(g groupSpec) {
	if c.rec == nil || c.rec.seen[g.key] {
		return
	}
	c.rec.seen[g.key] = true
	c.rec.specs = append(c.rec.specs, g)
}

// shape makes the groups of specs and lists their set names.
func (c *compiler) shape(specs []groupSpec) (string, bool) {
	var b strings.Builder
	for _, s := range specs {
		var g *group
		if s.ranges != nil {
			g = c.cidrGroup(s.ranges)
		} else {
			var err error
			if g, err = c.selectPeers(s.ns, s.podSel, s.nsSel); err != nil {
				return "", false
			}
		}
		b.WriteString(strings.Join(c.groupSets(g), ","))
		b.WriteByte(';')
	}
	return b.String(), true
}

func (c *compiler) capture(ns, sig string, pols []*networkingv1.NetworkPolicy, p0 int) *nsMemo {
	if c.rec.noMemo {
		return nil
	}
	shape, ok := c.shape(c.rec.specs)
	if !ok {
		return nil
	}
	m := &nsMemo{sig: sig, pols: slices.Clone(pols), specs: c.rec.specs, shape: shape,
		problems: slices.Clone(c.problems[p0:]), pods: make([][2][]*block, len(c.local[ns]))}
	for _, name := range c.rec.ports {
		m.ports = append(m.ports, c.ports[name])
	}
	for k, pi := range c.local[ns] {
		if c.states != nil && c.states[pi] != nil {
			st := c.states[pi]
			m.pods[k] = [2][]*block{slices.Clip(st.in), slices.Clip(st.eg)}
		}
	}
	return m
}

// replay gives ns's pods the blocks of m, when m's peers still have the
// same set names; false (and nothing changed but caches) otherwise.
func (c *compiler) replay(ns string, m *nsMemo) bool {
	if shape, ok := c.shape(m.specs); !ok || shape != m.shape {
		return false
	}
	c.problems = append(c.problems, m.problems...)
	for _, ps := range m.ports {
		c.ports[ps.Name] = ps
	}
	for k, pi := range c.local[ns] {
		if b := m.pods[k]; b[0] != nil || b[1] != nil {
			st := c.state(pi)
			st.in, st.eg = b[0], b[1]
		}
	}
	return true
}

// recordPorts notes a port set the namespace being compiled uses.
func (c *compiler) recordPorts(name string) {
	if c.rec != nil && !slices.Contains(c.rec.ports, name) {
		c.rec.ports = append(c.rec.ports, name)
	}
}
