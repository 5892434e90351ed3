package policykernel

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
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

	// Of a desired state only (nil in one read from the kernel):
	// pods are the pods it was built from, by ID, and owner the pod
	// ID of each map key (both directions), so that the next desired
	// state is built from this one by the pods that changed.
	pods  map[string]podRec
	owner map[netip.Addr]string
	// mapsID identifies the maps' content: a state built from another
	// by its changed pods has baseID the other's mapsID and in was the
	// previous value of each map key that may differ (nil: every key
	// may); it took the other's maps over (see mapsOf).
	mapsID, baseID uint64
	was            [numMaps]map[netip.Addr]was
	ownerWas       map[netip.Addr]was
	// profiles tells the direction of each profile (true: egress).
	profiles map[string]bool
}

// podRec is what is programmed of one pod: its addresses (unmapped) and
// profiles.
type podRec struct {
	ips    []netip.Addr
	in, eg string
}

func (a podRec) equal(b podRec) bool {
	return a.in == b.in && a.eg == b.eg && slices.Equal(a.ips, b.ips)
}

var mapsIDs atomic.Uint64

// setState is one set.
type setState struct {
	kind setKind
	// bad: the set has another type than its name says, or elements
	// this package does not make: it is made again.
	bad bool
	// els are its elements (nil for kindOther: not read).
	els map[elemKey]struct{}
	// fromRS: a desired set, built from addrs, ranges or ports (copies
	// of the Ruleset's): the next desired state shares it if they are
	// the same.
	fromRS bool
	addrs  []netip.Addr
	ranges []policy.AddrRange
	ports  []policy.ProtoPort
}

// chainState is one chain other than the forward chain.
type chainState struct {
	// sig is the signature of its rules (rulesSig, rawSig); "" for a
	// chain that is not a profile chain (not read).
	sig string
	// uses are the sets its rules look up (read for profile chains);
	// jumps the chains they jump or go to (a profile's Next).
	uses, jumps []string
}

func newState() *state {
	return &state{sets: map[string]*setState{}, chains: map[string]*chainState{}}
}

// desired builds the state rs describes, checking what the kernel would
// reject or misread: names, address families, ranges, references. The
// rule signatures of profiles in sigs (by name: a profile never changes;
// those of the last Apply) are taken from there. With prev a desired
// state (the one applied), the sets and map entries of rs that did not
// change are taken from it, so that building and diffing cost what
// changed.
func desired(rs *policy.Ruleset, prev *state, sigs map[string]string, logGroup int) (*state, error) {
	s := newState()
	s.table, s.base, s.baseOK = true, true, true
	if prev != nil && prev.pods == nil {
		prev = nil
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
		addrSets[as.Name] = as
		if ps := prev.set(as.Name); ps != nil && slices.Equal(ps.addrs, as.Addrs) && slices.Equal(ps.ranges, as.Ranges) {
			s.sets[as.Name] = ps
			continue
		}
		els, err := addrElems(as)
		if err != nil {
			return nil, err
		}
		s.sets[as.Name] = &setState{kind: k, els: els, fromRS: true, addrs: slices.Clone(as.Addrs), ranges: slices.Clone(as.Ranges)}
	}
	for i := range rs.PortSets {
		ps := &rs.PortSets[i]
		if kindOf(ps.Name) != kindPorts || !validName(ps.Name) {
			return nil, fmt.Errorf("port set %q: bad name", ps.Name)
		}
		if s.sets[ps.Name] != nil {
			return nil, fmt.Errorf("set %s appears twice", ps.Name)
		}
		if old := prev.set(ps.Name); old != nil && slices.Equal(old.ports, ps.Ports) {
			s.sets[ps.Name] = old
			continue
		}
		els, err := portElems(ps)
		if err != nil {
			return nil, err
		}
		s.sets[ps.Name] = &setState{kind: kindPorts, els: els, fromRS: true, ports: slices.Clone(ps.Ports)}
	}
	egress := map[string]bool{}
	next := map[string]string{}
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
		next[p.Name] = p.Next
		var uses []string
		for _, r := range p.Rules {
			if r.Action > policy.Pass {
				return nil, fmt.Errorf("profile %s: rule of %s: action %d", p.Name, r.Policy, r.Action)
			}
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
		cs := &chainState{sig: sig, uses: uses}
		if p.Next != "" {
			cs.jumps = []string{p.Next}
		}
		s.chains[p.Name] = cs
	}
	// A profile goes on to another of its direction, never back to
	// itself (the kernel refuses loops).
	for n, to := range next {
		for k := 0; to != ""; k++ {
			if eg, ok := egress[to]; !ok || eg != egress[n] {
				return nil, fmt.Errorf("profile %s: next %q is not a profile of the ruleset of the same direction", n, to)
			}
			if to == n || k > len(next) {
				return nil, fmt.Errorf("profile %s: its next profiles make a loop", n)
			}
			to = next[to]
		}
	}
	if err := s.mapsOf(rs, prev, egress); err != nil {
		return nil, err
	}
	return s, nil
}

// set returns the set name of s if it was built from a Ruleset (nil
// otherwise, and for a nil s).
func (s *state) set(name string) *setState {
	if s == nil {
		return nil
	}
	if ss := s.sets[name]; ss != nil && ss.fromRS {
		return ss
	}
	return nil
}

// mapsOf fills the maps of s with the pods of rs: from scratch, or with
// prev from prev's maps and the pods that differ from prev's. egress
// tells the direction of each profile of rs.
func (s *state) mapsOf(rs *policy.Ruleset, prev *state, egress map[string]bool) error {
	s.pods = make(map[string]podRec, len(rs.Pods))
	// A pod unchanged since prev was checked then; its profiles still
	// exist when prev had the same profiles.
	sameProfiles := prev != nil && len(prev.profiles) == len(egress)
	for n, eg := range egress {
		if !sameProfiles {
			break
		}
		old, ok := prev.profiles[n]
		sameProfiles = ok && old == eg
	}
	s.profiles = egress
	var changed []podRec
	var ids []string
	reused, replaced := 0, 0
	for _, p := range rs.Pods {
		rec := podRec{in: p.IngressChain, eg: p.EgressChain}
		n := len(s.pods)
		if old, ok := prev.pod(p.ID); ok && old.in == rec.in && old.eg == rec.eg && slices.Equal(old.ips, p.IPs) {
			s.pods[p.ID] = old
			if len(s.pods) == n {
				return fmt.Errorf("pod %s/%s: ID %s repeated", p.Namespace, p.Name, p.ID)
			}
			reused++
			if sameProfiles {
				continue
			}
		} else if ok {
			replaced++
		}
		if !validName(p.ID) {
			return fmt.Errorf("pod %s/%s: bad ID %q", p.Namespace, p.Name, p.ID)
		}
		for _, d := range []struct {
			in    bool
			chain string
		}{{true, p.IngressChain}, {false, p.EgressChain}} {
			if eg, ok := egress[d.chain]; d.chain != "" && (!ok || eg == d.in) {
				return fmt.Errorf("pod %s/%s: profile %q is not an %s profile of the ruleset", p.Namespace, p.Name, d.chain, map[bool]string{true: "ingress", false: "egress"}[d.in])
			}
		}
		if len(s.pods) > n {
			continue // reused, checked
		}
		for _, a := range p.IPs {
			if !a.IsValid() || a.Zone() != "" {
				return fmt.Errorf("pod %s/%s: bad address %v", p.Namespace, p.Name, a)
			}
			rec.ips = append(rec.ips, a.Unmap())
		}
		s.pods[p.ID] = rec
		if len(s.pods) == n {
			return fmt.Errorf("pod %s/%s: ID %s repeated", p.Namespace, p.Name, p.ID)
		}
		changed = append(changed, rec)
		ids = append(ids, p.ID)
	}
	switch {
	case prev == nil:
		s.mapsID = mapsIDs.Add(1)
		s.owner = make(map[netip.Addr]string, 2*len(rs.Pods))
		for i := range s.maps {
			s.maps[i] = map[netip.Addr]string{}
		}
	case len(changed) == 0 && reused == len(prev.pods):
		// Nothing changed: prev's maps are shared (never written once
		// built).
		s.mapsID, s.baseID, s.maps, s.owner = prev.mapsID, prev.mapsID, prev.maps, prev.owner
		for i := range s.was {
			s.was[i] = map[netip.Addr]was{}
		}
		return nil
	default:
		// prev's maps are taken over and changed in place, the
		// previous value of each key changed kept in was (undone on
		// an error). prev is spent: Apply replaces it with s, or
		// forgets it.
		s.mapsID, s.baseID = mapsIDs.Add(1), prev.mapsID
		s.maps, s.owner = prev.maps, prev.owner
		defer func() { prev.pods = nil }()
		for i := range s.was {
			s.was[i] = map[netip.Addr]was{}
		}
		s.ownerWas = map[netip.Addr]was{}
		// Entries of the pods that changed or went leave first: an
		// address may pass from one pod to another.
		leave := func(old podRec) {
			for _, a := range old.ips {
				s.setOwner(a, "")
				for _, in := range []bool{true, false} {
					s.setMap(mapIndex(in, a), a, "")
				}
			}
		}
		if reused+replaced == len(prev.pods) {
			for _, id := range ids {
				if old, ok := prev.pods[id]; ok {
					leave(old)
				}
			}
		} else {
			for id, old := range prev.pods {
				if now, ok := s.pods[id]; !ok || !now.equal(old) {
					leave(old)
				}
			}
		}
	}
	for k, rec := range changed {
		for _, a := range rec.ips {
			if other, dup := s.owner[a]; dup && other != ids[k] {
				s.undo()
				return fmt.Errorf("pod ID %s: address %s belongs to two pods (%s)", ids[k], a, other)
			}
			if rec.in == "" && rec.eg == "" {
				continue
			}
			s.setOwner(a, ids[k])
			for _, d := range []struct {
				in    bool
				chain string
			}{{true, rec.in}, {false, rec.eg}} {
				if d.chain != "" {
					s.setMap(mapIndex(d.in, a), a, d.chain)
				}
			}
		}
	}
	return nil
}

// was is the value a map key had before a desired state changed it.
type was struct {
	val string
	ok  bool
}

// setMap sets key a of map i to chain ("": deletes it), recording the
// previous value when the maps are taken over.
func (s *state) setMap(i int, a netip.Addr, chain string) {
	if s.was[i] != nil {
		if _, seen := s.was[i][a]; !seen {
			v, ok := s.maps[i][a]
			s.was[i][a] = was{v, ok}
		}
	}
	if chain == "" {
		delete(s.maps[i], a)
	} else {
		s.maps[i][a] = chain
	}
}

func (s *state) setOwner(a netip.Addr, id string) {
	if s.ownerWas != nil {
		if _, seen := s.ownerWas[a]; !seen {
			v, ok := s.owner[a]
			s.ownerWas[a] = was{v, ok}
		}
	}
	if id == "" {
		delete(s.owner, a)
	} else {
		s.owner[a] = id
	}
}

// undo puts back the maps taken over as they were.
func (s *state) undo() {
	put := func(m map[netip.Addr]string, w map[netip.Addr]was) {
		for a, v := range w {
			if v.ok {
				m[a] = v.val
			} else {
				delete(m, a)
			}
		}
	}
	for i := range s.was {
		put(s.maps[i], s.was[i])
	}
	put(s.owner, s.ownerWas)
}

func (s *state) pod(id string) (podRec, bool) {
	if s == nil {
		return podRec{}, false
	}
	p, ok := s.pods[id]
	return p, ok
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
