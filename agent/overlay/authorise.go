package overlay

// # Records are claims, not facts
//
// Every node writes its own record, and a record is only a claim: a buggy,
// stale or compromised node can publish anything. Before Compute programs
// one route, neighbour or FDB entry from a record, Authorise checks each
// field against what the store itself guarantees and what this node knows:
//
//   - a subnet counts only if the store's lease for exactly that prefix names
//     the record's node (etcd: the <prefix>/subnets/ key, taken with a
//     create-if-absent transaction; Kubernetes: the Node's spec.podCIDRs,
//     which only the control plane sets), has the length of our own subnet
//     of its family, lies inside a cluster CIDR, overlaps neither our subnets
//     nor another node's, and covers no underlay address (ours, our
//     underlay's on-link networks, or any node's): so no record can take
//     over another node's subnet, a single pod (/32), the default route or
//     the path to another node;
//   - underlay addresses are global unicast (no 0.0.0.0, loopback,
//     multicast, broadcast, link-local, IPv4-mapped), none of them ours, at
//     most MaxUnderlayIPs of them;
//   - the VTEP MAC is a 6-byte unicast address other than all zeros and
//     other than ours; a MAC claimed by two records goes to the node whose
//     name it is derived from (VtepMAC), and to neither if no such node is
//     among them;
//   - a record with any malformed field, or with no authorised subnet, is
//     skipped whole.
//
// A refused record or subnet is reported (State.Rejected, which the agent
// logs) and never stops the rest: every other record is still programmed.

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/agent/datastore"
)

// Bounds on one record, far above what a real node publishes (one or two
// underlay addresses, one subnet per family).
const (
	MaxUnderlayIPs = 16
	MaxSubnets     = 16
)

// Authorise returns the records of snap that l may program, each holding
// only its authorised subnets, and one line per refused record or subnet.
// l's own record is left out (the agent checks that one against what it
// published).
func Authorise(l Local, snap datastore.Snapshot) ([]datastore.NodeInfo, []string) {
	var rejected []string
	reject := func(format string, a ...any) { rejected = append(rejected, fmt.Sprintf(format, a...)) }
	for _, b := range snap.Bad {
		reject("record %s: skipped", b)
	}
	ownBits := map[bool]int{} // is4 -> our subnet length
	for _, s := range l.Subnets {
		if _, ok := ownBits[s.Addr().Is4()]; !ok {
			ownBits[s.Addr().Is4()] = s.Bits()
		}
	}
	ownMAC := strings.ToLower(l.VtepMAC)

	// 1. Each record's own fields.
	var cands []datastore.NodeInfo
	for _, n := range snap.Nodes {
		if n.Name == l.Name {
			continue
		}
		if why := recordFields(l, ownMAC, &n); why != "" {
			reject("node %s: %s: record skipped", n.Name, why)
			continue
		}
		cands = append(cands, n)
	}

	// 2. VTEP MACs: one node each.
	byMAC := map[string][]string{}
	for _, n := range cands {
		if n.VtepMAC != "" {
			byMAC[n.VtepMAC] = append(byMAC[n.VtepMAC], n.Name)
		}
	}
	dupMAC := map[string]bool{} // node names that lose their MAC claim
	for _, mac := range slices.Sorted(maps.Keys(byMAC)) {
		names := byMAC[mac]
		if len(names) < 2 {
			continue
		}
		genuine := slices.IndexFunc(names, func(name string) bool { return VtepMAC(name, l.VNI).String() == mac })
		for i, name := range names {
			if i != genuine {
				dupMAC[name] = true
				reject("node %s: VTEP MAC %s is also claimed by %s: record skipped", name, mac, strings.Join(slices.DeleteFunc(slices.Clone(names), func(o string) bool { return o == name }), ", "))
			}
		}
	}
	cands = slices.DeleteFunc(cands, func(n datastore.NodeInfo) bool { return dupMAC[n.Name] })

	// 3. Subnets, against the leases and every underlay address.
	var underlay []netip.Addr
	underlay = append(underlay, l.UnderlayIPs...)
	for _, n := range cands {
		underlay = append(underlay, n.UnderlayIPs...)
	}
	slices.SortFunc(underlay, netip.Addr.Compare)
	coversUnderlay := func(p netip.Prefix) (netip.Addr, bool) {
		i, _ := slices.BinarySearchFunc(underlay, p.Addr(), netip.Addr.Compare)
		if i < len(underlay) && p.Contains(underlay[i]) {
			return underlay[i], true
		}
		return netip.Addr{}, false
	}
	routed := map[netip.Prefix]string{}
	var out []datastore.NodeInfo
	for _, n := range cands {
		var keep []netip.Prefix
		fams := map[bool]bool{}
		for _, s := range n.Subnets {
			why := ""
			owner, leased := snap.Owners[s]
			bits, haveFam := ownBits[s.Addr().Is4()]
			ip, covers := coversUnderlay(s)
			switch {
			case !s.IsValid() || s != s.Masked():
				why = "is not a network address"
			case !leased:
				why = "has no lease in the datastore"
			case owner != n.Name:
				why = fmt.Sprintf("is leased to node %q", owner)
			case !haveFam:
				why = "is of an address family this node has no subnet of"
			case s.Bits() != bits:
				why = fmt.Sprintf("is a /%d, node subnets are /%d", s.Bits(), bits)
			case !inAny(s, l.ClusterCIDRs):
				why = fmt.Sprintf("is outside the cluster CIDRs %v", l.ClusterCIDRs)
			case overlaps(s, l.Subnets):
				why = fmt.Sprintf("overlaps ours %v", l.Subnets)
			case overlaps(s, l.UnderlayNets):
				why = fmt.Sprintf("overlaps our underlay networks %v", l.UnderlayNets)
			case covers:
				why = fmt.Sprintf("covers the underlay address %s", ip)
			case routed[s] != "":
				why = fmt.Sprintf("is already routed to node %s", routed[s])
			case fams[s.Addr().Is4()]:
				why = "is a second subnet of its family"
			}
			if why != "" {
				reject("node %s: subnet %s %s: skipped", n.Name, s, why)
				continue
			}
			fams[s.Addr().Is4()] = true
			routed[s] = n.Name
			keep = append(keep, s)
		}
		if len(keep) == 0 {
			if len(n.Subnets) == 0 {
				reject("node %s: no subnets: record skipped", n.Name)
			}
			continue
		}
		n.Subnets = keep
		out = append(out, n)
	}
	return out, rejected
}

// recordFields checks one record's own fields, normalising its MAC, and
// says what is wrong ("" when nothing is).
func recordFields(l Local, ownMAC string, n *datastore.NodeInfo) string {
	switch {
	case n.Name == "":
		return "no name"
	case len(n.UnderlayIPs) == 0:
		return "no underlay address"
	case len(n.UnderlayIPs) > MaxUnderlayIPs:
		return fmt.Sprintf("%d underlay addresses, at most %d allowed", len(n.UnderlayIPs), MaxUnderlayIPs)
	case len(n.Subnets) > MaxSubnets:
		return fmt.Sprintf("%d subnets, at most %d allowed", len(n.Subnets), MaxSubnets)
	}
	for _, ip := range n.UnderlayIPs {
		if why := badUnderlay(ip); why != "" {
			return fmt.Sprintf("underlay address %s %s", ip, why)
		}
		if slices.Contains(l.UnderlayIPs, ip) {
			return fmt.Sprintf("underlay address %s is this node's", ip)
		}
	}
	if n.VtepMAC != "" {
		mac, why := parseVtepMAC(n.VtepMAC)
		if why != "" {
			return fmt.Sprintf("VTEP MAC %q %s", n.VtepMAC, why)
		}
		if mac == ownMAC {
			return fmt.Sprintf("VTEP MAC %s is this node's", mac)
		}
		n.VtepMAC = mac
	}
	return ""
}

// badUnderlay says why ip cannot be a node's underlay address.
func badUnderlay(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "is not an address"
	case ip.Is4In6():
		return "is IPv4-mapped (write it as IPv4)"
	case ip.Zone() != "":
		return "has a zone"
	case !ip.IsGlobalUnicast():
		return "is not a global unicast address"
	}
	return ""
}

// parseVtepMAC returns s in canonical form, or why it cannot be a VTEP MAC.
func parseVtepMAC(s string) (string, string) {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil:
		return "", "is not a MAC address"
	case len(hw) != 6:
		return "", fmt.Sprintf("is %d bytes, not 6", len(hw))
	case hw[0]&1 != 0:
		return "", "is a multicast or broadcast address"
	case slices.Equal(hw, make(net.HardwareAddr, 6)):
		return "", "is all zeros"
	}
	return hw.String(), ""
}
