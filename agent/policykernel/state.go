package policykernel

import (
	"fmt"
	"net/netip"
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
	// sets and chains other than the maps and the forward chain, by name.
	sets   map[string]*setState
	chains map[string]*chainState
}

// setState is one set.
type setState struct {
	kind setKind
	// bad: the set has another type than its name says, or elements
	// this package does not make: it is made again.
	bad bool
	// els are its elements (nil for kindOther: not read).
	els map[elemKey]struct{}
}

// chainState is one chain other than the forward chain.
type chainState struct {
	// sig is the signature of its rules (rulesSig, rawSig); "" for a
	// chain that is not a profile chain (not read).
	sig string
	// uses are the sets its rules look up (read for profile chains).
	uses []string
}

func newState() *state {
	return &state{sets: map[string]*setState{}, chains: map[string]*chainState{}}
}

// desired builds the state rs describes, checking what the kernel would
// reject or misread: names, address families, ranges, references. The
// rule signatures of profiles in sigs (by name: a profile never changes;
// those of the last Apply) are taken from there.
func desired(rs *policy.Ruleset, sigs map[string]string, logGroup int) (*state, error) {
	s := newState()
	s.table, s.base, s.baseOK = true, true, true
	for i := range s.maps {
		s.maps[i] = map[netip.Addr]string{}
	}
	addrSets := make(map[string]*policy.AddrSet, len(rs.AddrSets))
	for i := range rs.AddrSets {
		as := &rs.AddrSets[i]
		k := kindOf(as.Name)
		if k == kindOther || k == kindPorts || k.v6() != as.V6 || k.interval() != as.Interval || !validName(as.Name) {
			return nil, fmt.Errorf("address set %q (v6 %t, interval %t): bad name", as.Name, as.V6, as.Interval)
		}
		if s.sets[as.Name] != nil {
			return nil, fmt.Errorf("set %s appears twice", as.Name)
		}
		els, err := addrElems(as)
		if err != nil {
			return nil, err
		}
		s.sets[as.Name] = &setState{kind: k, els: els}
		addrSets[as.Name] = as
	}
	for i := range rs.PortSets {
		ps := &rs.PortSets[i]
		if kindOf(ps.Name) != kindPorts || !validName(ps.Name) {
			return nil, fmt.Errorf("port set %q: bad name", ps.Name)
		}
		if s.sets[ps.Name] != nil {
			return nil, fmt.Errorf("set %s appears twice", ps.Name)
		}
		els, err := portElems(ps)
		if err != nil {
			return nil, err
		}
		s.sets[ps.Name] = &setState{kind: kindPorts, els: els}
	}
	egress := map[string]bool{}
	for i := range rs.Profiles {
		p := &rs.Profiles[i]
		prefix := ingressPrefix
		if p.Egress {
			prefix = egressPrefix
		}
		if len(p.Name) <= len(prefix) || p.Name[:len(prefix)] != prefix || !validName(p.Name) {
			return nil, fmt.Errorf("profile %q (egress %t): bad name", p.Name, p.Egress)
		}
		if s.chains[p.Name] != nil {
			return nil, fmt.Errorf("profile %s appears twice", p.Name)
		}
		egress[p.Name] = p.Egress
		var uses []string
		for _, r := range p.Rules {
			if r.Peers != "" {
				if addrSets[r.Peers] == nil {
					return nil, fmt.Errorf("profile %s: rule of %s names address set %q, not in the ruleset", p.Name, r.Policy, r.Peers)
				}
				uses = append(uses, r.Peers)
			}
			switch {
			case r.Ports != "":
				if k := s.sets[r.Ports]; k == nil || k.kind != kindPorts {
					return nil, fmt.Errorf("profile %s: rule of %s names port set %q, not in the ruleset", p.Name, r.Policy, r.Ports)
				}
				uses = append(uses, r.Ports)
			case r.Proto != 0 && r.Range.To < r.Range.From:
				return nil, fmt.Errorf("profile %s: rule of %s: port range %d-%d", p.Name, r.Policy, r.Range.From, r.Range.To)
			}
		}
		sig, ok := sigs[p.Name]
		if !ok {
			sig = rulesSig(profileRules(p, addrSets, nil, logGroup))
		}
		s.chains[p.Name] = &chainState{sig: sig, uses: uses}
	}
	seen := make(map[string]bool, len(rs.Pods))
	for _, p := range rs.Pods {
		if !validName(p.ID) || seen[p.ID] {
			return nil, fmt.Errorf("pod %s/%s: bad or repeated ID %q", p.Namespace, p.Name, p.ID)
		}
		seen[p.ID] = true
		for _, d := range []struct {
			in    bool
			chain string
		}{{true, p.IngressChain}, {false, p.EgressChain}} {
			if d.chain == "" {
				continue
			}
			if eg, ok := egress[d.chain]; !ok || eg == d.in {
				return nil, fmt.Errorf("pod %s/%s: profile %q is not an %s profile of the ruleset", p.Namespace, p.Name, d.chain, map[bool]string{true: "ingress", false: "egress"}[d.in])
			}
			for _, a := range p.IPs {
				if !a.IsValid() || a.Zone() != "" {
					return nil, fmt.Errorf("pod %s/%s: bad address %v", p.Namespace, p.Name, a)
				}
				a = a.Unmap()
				m := s.maps[mapIndex(d.in, a)]
				if _, dup := m[a]; dup {
					return nil, fmt.Errorf("pod %s/%s: address %s belongs to two pods", p.Namespace, p.Name, a)
				}
				m[a] = d.chain
			}
		}
	}
	return s, nil
}

// validName: what the kernel and nft take as an object name here.
func validName(id string) bool {
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

// Stats is what one Apply changed. An address range is one element (the
// kernel stores two: its start and its end).
type Stats struct {
	// ElementsAdded and ElementsRemoved count set and map elements.
	ElementsAdded, ElementsRemoved int
	// ChainsAdded and ChainsRemoved count chains (profile chains, old
	// layout chains, and the base chain when it is created).
	ChainsAdded, ChainsRemoved int
	// SetsAdded and SetsRemoved count sets and maps.
	SetsAdded, SetsRemoved int
	// RulesAdded counts rules written (new chains, or chains whose
	// rules were not the expected ones).
	RulesAdded int
	// Batches is the number of batches sent (0, 1 or 2); Messages the
	// number of netlink messages in them.
	Batches, Messages int
	// Duration is the wall time of Apply, batches included.
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
	s.Batches += o.Batches
	s.Messages += o.Messages
	return s
}

// Changed reports whether the Apply sent anything.
func (s Stats) Changed() bool { return s.Messages > 0 }
