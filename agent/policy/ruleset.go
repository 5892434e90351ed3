package policy

import "net/netip"

// Ruleset is the desired content of table inet podnet-policy on one node
// (the layout is in the package comment). It is what the compiler
// produces, what the kernel writer programs, what `policy dump` renders and
// what explain evaluates. Its chains may share slices (pods with the same
// rules share their sets): treat it as read-only.
type Ruleset struct {
	// Node is the node it was compiled for.
	Node string
	// Pods are the pods on Node that some policy isolates in at least one
	// direction, sorted by ID.
	Pods []PodRules
	// Profiles (sorted by Name) are the chains the pods' map entries
	// jump to; AddrSets and PortSets (sorted by Name) the sets their
	// rules name. Every set a profile names is here, and no other.
	Profiles []Profile
	AddrSets []AddrSet
	PortSets []PortSet
	// Problems are the parts of the input that could not be compiled as
	// written (invalid selectors, CIDRs, ports, protocols; an address two
	// pods on Node share), each naming the object. They fail closed: a
	// broken rule allows nothing, a policy whose podSelector is broken
	// selects every pod of its namespace and allows nothing. Only the
	// policies that select pods on Node have their rules checked. They are
	// not programmed.
	Problems []string
}

// PodRules are one isolated pod's chains.
type PodRules struct {
	// ID names the pod's chains and sets: 12 lower-case hex digits of a
	// hash of "namespace/name", stable across agents and restarts.
	ID              string
	Namespace, Name string
	// IPs are the pod's addresses: the map keys that jump to its chains.
	IPs []netip.Addr
	// Ingress and Egress are nil when no policy isolates the pod in that
	// direction (then no map entry is made for it in that direction).
	Ingress, Egress *Chain
	// IngressChain and EgressChain are the names of the pod's Profiles;
	// "" when no policy isolates the pod in that direction (then no map
	// entry is made for it in that direction).
	IngressChain, EgressChain string
}

// Chain is what one isolated pod allows in one direction: the union of
// every rule of every policy that selects the pod for that direction.
// Everything else is dropped (and counted).
type Chain struct {
	// Policies are the "namespace/name" of the policies that isolate the
	// pod in this direction, sorted.
	Policies []string
	// Any4 and Any6 are the peer ranges allowed on every protocol and
	// port: sorted, disjoint, not adjacent (merged), as an interval set
	// needs them.
	Any4, Any6 []AddrRange
	// Ports4 and Ports6 are the (peer range, protocol, port range) boxes
	// allowed: sorted, pairwise disjoint, as the kernel's concatenated
	// interval set (pipapo) needs them.
	Ports4, Ports6 []PortBox
	// Rules are the rules before flattening, in policy then rule order,
	// with named ports already resolved: explain reports the first one
	// that matches a packet the sets allow. They are not programmed.
	Rules []Allow
}

// AddrRange is an inclusive address range of one family.
type AddrRange struct{ From, To netip.Addr }

// PortRange is an inclusive port range.
type PortRange struct{ From, To uint16 }

// PortBox is one element of a ports set.
type PortBox struct {
	Addrs AddrRange
	Proto Proto
	Ports PortRange
}

// Allow is one rule of one policy, for one pod and direction, resolved.
// Rules that allow nothing (their peers or named ports resolve to nothing,
// or they are broken) have no Allow. An egress rule with named ports has
// one Allow for its numeric ports and one per distinct resolution of its
// named ports among the peer pods, all with the same Policy and Rule.
type Allow struct {
	// Policy is "namespace/name"; Rule the index in its ingress or egress
	// list.
	Policy string
	Rule   int
	// Peers nil means every address; otherwise the allowed ranges.
	Peers []AddrRange
	// Ports nil means every protocol and port.
	Ports []ProtoPorts
}

// ProtoPorts is a protocol with a port range.
type ProtoPorts struct {
	Proto Proto
	Ports PortRange
}
