package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// The profile layout (see the package comment): isolated pods point, per
// direction, at a profile chain shared by every pod with the same
// resolved rules; a profile's rules name shared sets of peer addresses
// (one per distinct peer selector or ipBlock) and of ports. Nothing is
// multiplied by the number of pods a policy selects.

// Profile is one chain: the union of the rules of the policies that
// isolate a pod in one direction, with named ports resolved. Pods with the
// same profile share it. Its Name is a hash of all of its content, so a
// profile never changes once made: a change makes a new one.
type Profile struct {
	// Name is the chain's: "ingress-<12 hex>" or "egress-<12 hex>".
	Name   string
	Egress bool
	// Policies are the "namespace/name" of the policies that isolate the
	// profile's pods in this direction, sorted.
	Policies []string
	// Rules in order; the first that matches decides by its Action (its
	// Policy and Index are what explain reports). NetworkPolicy rules
	// only allow; ClusterNetworkPolicy rules also deny, or pass to Next.
	Rules []Rule
	// Next, if set, is the profile a packet continues in when no rule
	// matched or a Pass rule did (ClusterNetworkPolicy's Admin tier
	// handing over to NetworkPolicy and the Baseline tier). Otherwise a
	// packet no rule matched is dropped, unless Open: a pod that no
	// NetworkPolicy isolates, whose cluster policies decided nothing, is
	// allowed.
	Next string
	Open bool
}

// Action is what a matching rule does.
type Action uint8

// Actions. Allow is a NetworkPolicy rule's and ClusterNetworkPolicy's
// Accept; Pass skips the rest of the Admin tier (kernel: goto Next).
const (
	Allow Action = iota
	Deny
	Pass
)

func (a Action) String() string {
	switch a {
	case Deny:
		return "Deny"
	case Pass:
		return "Pass"
	}
	return "Accept"
}

// Rule is one kernel rule of a profile: a peer match, a port match, and
// the policy rule it comes from. Each policy rule gives one or more.
type Rule struct {
	// Policy is "namespace/name" (NetworkPolicy) or the name of a
	// ClusterNetworkPolicy (Tier set), Index the rule's index in the
	// policy's ingress or egress list.
	Policy string
	Index  int
	// Tier is "" for NetworkPolicy, else "Admin" or "Baseline", with the
	// policy's Priority; Action what a match does.
	Tier     string
	Priority int32
	Action   Action
	// Peers is the AddrSet the peer's address must be in (the source for
	// ingress, the destination for egress; the rule applies to that set's
	// family only); "" is every address of both families.
	Peers string
	// Ports is the PortSet that must hold (protocol, destination port);
	// when "", Proto 0 is every protocol and port, else the protocol with
	// destination ports Range (0-65535: every port of Proto).
	Ports string
	Proto Proto
	Range PortRange
}

// AddrSet is a set of peer addresses of one family, shared by every rule
// with the same peer.
type AddrSet struct {
	// Name is "pods4-<12 hex>" or "pods6-<12 hex>" for the pods a peer
	// selector matches (Addrs, a hash set), "cidr4-<12 hex>" or
	// "cidr6-<12 hex>" for an ipBlock (Ranges: cidr minus except, an
	// interval set). The hash is of the peer, not of the members: pods
	// sets change members in place.
	Name string
	V6   bool
	// Interval sets hold Ranges (sorted, disjoint, not adjacent); the
	// others Addrs (sorted, distinct).
	Interval bool
	Addrs    []netip.Addr
	Ranges   []AddrRange
}

// PortSet is a set of exact (protocol, port) pairs, shared by every rule
// with the same ports. Its Name "ports-<12 hex>" is a hash of its content.
type PortSet struct {
	Name  string
	Ports []ProtoPort // sorted, distinct
}

// ProtoPort is one protocol and port.
type ProtoPort struct {
	Proto Proto
	Port  uint16
}

// FindProfile is the profile named name, or nil.
func (rs *Ruleset) FindProfile(name string) *Profile {
	i, ok := slices.BinarySearchFunc(rs.Profiles, name, func(p Profile, n string) int { return strings.Compare(p.Name, n) })
	if !ok {
		return nil
	}
	return &rs.Profiles[i]
}

// FindAddrSet is the set named name, or nil.
func (rs *Ruleset) FindAddrSet(name string) *AddrSet {
	i, ok := slices.BinarySearchFunc(rs.AddrSets, name, func(s AddrSet, n string) int { return strings.Compare(s.Name, n) })
	if !ok {
		return nil
	}
	return &rs.AddrSets[i]
}

// FindPortSet is the set named name, or nil.
func (rs *Ruleset) FindPortSet(name string) *PortSet {
	i, ok := slices.BinarySearchFunc(rs.PortSets, name, func(s PortSet, n string) int { return strings.Compare(s.Name, n) })
	if !ok {
		return nil
	}
	return &rs.PortSets[i]
}

// Contains reports whether a is in s.
func (s *AddrSet) Contains(a netip.Addr) bool {
	if a.Is6() != s.V6 { // an IPv4-mapped IPv6 address is IPv6, as in the kernel
		return false
	}
	if !s.Interval {
		_, ok := slices.BinarySearchFunc(s.Addrs, a, netip.Addr.Compare)
		return ok
	}
	i, _ := slices.BinarySearchFunc(s.Ranges, a, func(r AddrRange, a netip.Addr) int {
		if r.To.Less(a) {
			return -1
		}
		if a.Less(r.From) {
			return 1
		}
		return 0
	})
	return i < len(s.Ranges) && !a.Less(s.Ranges[i].From) && !s.Ranges[i].To.Less(a)
}

// Contains reports whether (proto, port) is in s.
func (s *PortSet) Contains(proto Proto, port uint16) bool {
	_, ok := slices.BinarySearchFunc(s.Ports, ProtoPort{proto, port}, compareProtoPort)
	return ok
}

func compareProtoPort(a, b ProtoPort) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
}

// Matches reports whether r (of a profile of rs) matches a packet to or
// from peer with protocol proto and destination port port (port is
// ignored for protocols without ports: pass 0).
func (rs *Ruleset) Matches(r Rule, peer netip.Addr, proto Proto, port uint16) bool {
	if r.Peers != "" {
		s := rs.FindAddrSet(r.Peers)
		if s == nil || !s.Contains(peer) {
			return false
		}
	}
	switch {
	case r.Ports != "":
		s := rs.FindPortSet(r.Ports)
		return s != nil && s.Contains(proto, port)
	case r.Proto == 0:
		return true
	default:
		return r.Proto == proto && port >= r.Range.From && port <= r.Range.To
	}
}

// RuleCount is the number of rules in all the Ruleset's profiles.
func (rs *Ruleset) RuleCount() int {
	n := 0
	for _, p := range rs.Profiles {
		n += len(p.Rules)
	}
	return n
}

// Elements counts the Ruleset's set and map elements (for metrics): the
// members of every set plus one map entry per isolated pod address and
// direction.
func (rs *Ruleset) Elements() int {
	n := 0
	for _, s := range rs.AddrSets {
		n += len(s.Addrs) + len(s.Ranges)
	}
	for _, s := range rs.PortSets {
		n += len(s.Ports)
	}
	for _, p := range rs.Pods {
		if p.IngressChain != "" {
			n += len(p.IPs)
		}
		if p.EgressChain != "" {
			n += len(p.IPs)
		}
	}
	return n
}
