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

// PodRules are one isolated pod: its addresses and its profiles.
type PodRules struct {
	// ID is 12 lower-case hex digits of a hash of "namespace/name" (the
	// order of Ruleset.Pods; dumps and logs).
	ID              string
	Namespace, Name string
	// IPs are the pod's addresses: the map keys that jump to its chains.
	IPs []netip.Addr
	// IngressChain and EgressChain are the names of the pod's Profiles;
	// "" when no policy isolates the pod in that direction (then no map
	// entry is made for it in that direction).
	IngressChain, EgressChain string
}

// AddrRange is an inclusive address range of one family.
type AddrRange struct{ From, To netip.Addr }

// PortRange is an inclusive port range.
type PortRange struct{ From, To uint16 }

// ProtoPorts is a protocol with a port range.
type ProtoPorts struct {
	Proto Proto
	Ports PortRange
}
