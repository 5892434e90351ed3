package policykernel

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/podnet/podnet/agent/policy"
)

// state is the content of the table, as desired (from a Ruleset) or as
// applied (what the kernel holds, adopted at Open and kept since).
type state struct {
	// table: the table exists.
	table bool
	// maps: the verdict maps' elements, address -> chain jumped to; a
	// nil map is absent. mapBad: the map exists with another type or
	// elements this package does not write (it is made again).
	maps   [numMaps]map[netip.Addr]string
	mapBad [numMaps]bool
	// base: the forward chain exists; baseOK: with the right rules;
	// baseBad: with another type, hook, priority or policy.
	base, baseOK, baseBad bool
	// sets: the shared set exists; setBad: with another type or
	// elements this package does not make (it is made again).
	sets, setBad [numSets]bool
	// chains: the pod chains by name.
	chains map[string]*chainState
	// orphans: elements of the shared sets whose pod address no map
	// entry of the set's direction leads to (they go).
	orphans [numSets]map[elem]struct{}
	// stray: other sets in the table (not a map, not a shared set: the
	// per-pod sets of the old layout among them).
	stray []string
}

// chainState is one pod chain and its elements in the shared sets of its
// direction.
type chainState struct {
	// exists: the chain itself exists; rulesOK: its rules are
	// podRules'.
	exists, rulesOK bool
	// sets: the chain's elements in each kind of shared set (nil: none).
	sets [numKinds]map[elem]struct{}
}

func newState() *state {
	return &state{chains: map[string]*chainState{}}
}

// desired builds the state rs describes, checking what the kernel would
// reject or misread: pod IDs, address families, range order. A pod equal
// to its entry in prevPods (the pods prev was built from) reuses prev's
// chain states, so that building and diffing cost what changed. It
// returns the pods the new state was built from, private copies.
func desired(rs policy.Ruleset, prev *state, prevPods map[string]policy.PodRules) (*state, map[string]policy.PodRules, error) {
	pods := make(map[string]policy.PodRules, len(rs.Pods))
	s := newState()
	s.table, s.base, s.baseOK = true, true, true
	for i := range s.sets {
		s.sets[i] = true
	}
	for i := range s.maps {
		s.maps[i] = map[netip.Addr]string{}
	}
	for _, p := range rs.Pods {
		if !validID(p.ID) {
			return nil, nil, fmt.Errorf("pod %s/%s: bad ID %q", p.Namespace, p.Name, p.ID)
		}
		old, same := prevPods[p.ID]
		same = same && prev != nil && podEqual(old, p)
		if same {
			pods[p.ID] = old
		} else {
			pods[p.ID] = podCopy(p)
		}
		ips := make([]netip.Addr, 0, len(p.IPs))
		for _, a := range p.IPs {
			if !a.IsValid() || a.Zone() != "" {
				return nil, nil, fmt.Errorf("pod %s/%s: bad address %v", p.Namespace, p.Name, a)
			}
			ips = append(ips, a.Unmap())
		}
		for _, d := range []struct {
			in bool
			c  *policy.Chain
		}{{true, p.Ingress}, {false, p.Egress}} {
			if d.c == nil {
				continue
			}
			name := chainName(d.in, p.ID)
			if _, dup := s.chains[name]; dup {
				return nil, nil, fmt.Errorf("pod ID %s appears twice", p.ID)
			}
			if cs := prev.reusable(name); same && cs != nil {
				s.chains[name] = cs
			} else {
				cs, err := chainOf(d.c, ips)
				if err != nil {
					return nil, nil, fmt.Errorf("pod %s/%s chain %s: %w", p.Namespace, p.Name, name, err)
				}
				s.chains[name] = cs
			}
			for _, a := range ips {
				m := s.maps[mapIndex(d.in, a)]
				if other, dup := m[a]; dup && other != name {
					return nil, nil, fmt.Errorf("address %s belongs to two pods (%s, %s)", a, other, name)
				}
				m[a] = name
			}
		}
	}
	return s, pods, nil
}

// reusable returns the chain state of name if it is complete (chain and
// rules as built), for a desired state to share; nil otherwise.
func (s *state) reusable(name string) *chainState {
	if s == nil {
		return nil
	}
	cs := s.chains[name]
	if cs == nil || !cs.exists || !cs.rulesOK {
		return nil
	}
	return cs
}

// podEqual compares what is programmed of two pods.
func podEqual(a, b policy.PodRules) bool {
	return a.ID == b.ID && slices.Equal(a.IPs, b.IPs) && chainEqual(a.Ingress, b.Ingress) && chainEqual(a.Egress, b.Egress)
}

func chainEqual(a, b *policy.Chain) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.Equal(a.Any4, b.Any4) && slices.Equal(a.Any6, b.Any6) &&
		slices.Equal(a.Ports4, b.Ports4) && slices.Equal(a.Ports6, b.Ports6)
}

// podCopy keeps what is programmed of p, in slices the caller cannot
// change afterwards.
func podCopy(p policy.PodRules) policy.PodRules {
	c := func(ch *policy.Chain) *policy.Chain {
		if ch == nil {
			return nil
		}
		return &policy.Chain{Any4: slices.Clone(ch.Any4), Any6: slices.Clone(ch.Any6),
			Ports4: slices.Clone(ch.Ports4), Ports6: slices.Clone(ch.Ports6)}
	}
	return policy.PodRules{ID: p.ID, IPs: slices.Clone(p.IPs), Ingress: c(p.Ingress), Egress: c(p.Egress)}
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// chainOf returns the chain state of c for a pod with addresses ips: each
// peer range and ports box once per address of its family.
func chainOf(c *policy.Chain, ips []netip.Addr) (*chainState, error) {
	cs := &chainState{exists: true, rulesOK: true}
	var err error
	var peers [numKinds][]elem
	if peers[kindA4], err = anySet(c.Any4, true); err != nil {
		return nil, fmt.Errorf("Any4: %w", err)
	}
	if peers[kindA6], err = anySet(c.Any6, false); err != nil {
		return nil, fmt.Errorf("Any6: %w", err)
	}
	if peers[kindP4], err = portSet(c.Ports4, true); err != nil {
		return nil, fmt.Errorf("Ports4: %w", err)
	}
	if peers[kindP6], err = portSet(c.Ports6, false); err != nil {
		return nil, fmt.Errorf("Ports6: %w", err)
	}
	for k, l := range peers {
		m := map[elem]struct{}{}
		for _, a := range ips {
			if a.Is4() != kindV4(k) {
				continue
			}
			for _, e := range l {
				e.Pod = a
				m[e] = struct{}{}
			}
		}
		cs.sets[k] = m
	}
	return cs, nil
}

func checkRange(r policy.AddrRange, v4 bool) error {
	if !r.From.IsValid() || !r.To.IsValid() || r.From.Is4() != v4 || r.To.Is4() != v4 || r.From.Zone() != "" || r.To.Zone() != "" {
		return fmt.Errorf("range %s-%s: not of the set's family", r.From, r.To)
	}
	if r.To.Less(r.From) {
		return fmt.Errorf("range %s-%s: end before start", r.From, r.To)
	}
	return nil
}

// anySet checks that rs are sorted and disjoint (an interval set rejects
// overlaps) and returns them as elements without a pod address.
func anySet(rs []policy.AddrRange, v4 bool) ([]elem, error) {
	out := make([]elem, 0, len(rs))
	for i, r := range rs {
		if err := checkRange(r, v4); err != nil {
			return nil, err
		}
		if i > 0 && !rs[i-1].To.Less(r.From) {
			return nil, fmt.Errorf("ranges %s-%s and %s-%s: not sorted and disjoint", rs[i-1].From, rs[i-1].To, r.From, r.To)
		}
		out = append(out, elem{Addrs: r})
	}
	return out, nil
}

func portSet(bs []policy.PortBox, v4 bool) ([]elem, error) {
	out := make([]elem, 0, len(bs))
	for _, b := range bs {
		if err := checkRange(b.Addrs, v4); err != nil {
			return nil, err
		}
		if b.Proto == 0 || b.Ports.To < b.Ports.From {
			return nil, fmt.Errorf("box %s-%s proto %d ports %d-%d: bad protocol or port range", b.Addrs.From, b.Addrs.To, b.Proto, b.Ports.From, b.Ports.To)
		}
		out = append(out, elem{Addrs: b.Addrs, Proto: b.Proto, Ports: b.Ports})
	}
	return out, nil
}

// Stats is what one Apply changed. An address range or a ports box is one
// element (the kernel may store two for a range).
type Stats struct {
	// ElementsAdded and ElementsRemoved count set and map elements.
	ElementsAdded, ElementsRemoved int
	// ChainsAdded and ChainsRemoved count pod chains (and the base
	// chain when it is created).
	ChainsAdded, ChainsRemoved int
	// SetsAdded and SetsRemoved count sets and maps.
	SetsAdded, SetsRemoved int
	// RulesAdded counts rules written (new chains, or chains whose
	// rules were not the expected ones).
	RulesAdded int
	// Messages is the number of netlink messages in the batch (0: no
	// batch was sent).
	Messages int
	// Duration is the wall time of Apply, batch included.
	Duration time.Duration
}

// plus returns the sum of two batches' stats.
func (s Stats) plus(o Stats) Stats {
	s.ElementsAdded += o.ElementsAdded
	s.ElementsRemoved += o.ElementsRemoved
	s.ChainsAdded += o.ChainsAdded
	s.ChainsRemoved += o.ChainsRemoved
	s.SetsAdded += o.SetsAdded
	s.SetsRemoved += o.SetsRemoved
	s.RulesAdded += o.RulesAdded
	s.Messages += o.Messages
	return s
}

// Changed reports whether the Apply sent anything.
func (s Stats) Changed() bool { return s.Messages > 0 }
