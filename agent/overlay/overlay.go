// Package overlay computes, as plain values, what the kernel of one node
// must hold so that its pods reach every other node's pods: per remote node
// a route, and for VXLAN a neighbour and an FDB entry; the node's own VXLAN
// device and address; and the masquerade rule set. It renders that state as
// `ip`/`bridge`/`nft`-like text for golden tests and operators. It imports
// no netlink and touches nothing: agent/kernel applies what it returns.
//
// # VXLAN, the Flannel way
//
// Every node has one VXLAN device (podnet.<VNI>, learning off) whose
// address is its pod subnet's network address as a /32 (10.244.1.0/32) or
// /128, and whose MAC is stable for the node (derived from its name). For
// each remote node B with subnet 10.244.2.0/24, VTEP MAC M and underlay IP U
// we program exactly three things:
//
//	route 10.244.2.0/24 via 10.244.2.0 dev podnet.1 onlink  (L3: which next hop)
//	neigh 10.244.2.0 lladdr M dev podnet.1                   (ARP/NDP: next hop -> inner dst MAC)
//	fdb   M dev podnet.1 dst U                                (L2: inner dst MAC -> outer dst IP)
//
// The kernel then encapsulates without ever asking userspace: no L2/L3
// miss handling, no per-pod state, no multicast, and the tables grow with
// the number of nodes, not pods. The .0 address is a safe next hop because
// it is never a pod's. (Flannel's vxlan backend documents the same scheme
// and the misses-based design it replaced.)
//
// # host-gw
//
// For a remote node whose underlay address is on our own L2 subnet, a plain
// route "10.244.2.0/24 via U dev <underlay>" is enough and costs no
// encapsulation. Backend auto picks host-gw for those and VXLAN for the
// others, per node and per family.
package overlay

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/podnet/podnet/agent/datastore"
)

// Backends.
const (
	VXLAN  = "vxlan"
	HostGW = "host-gw"
	Auto   = "auto"
)

// RouteProtocol marks every route podnet installs (rtm_protocol), so the
// reconciler lists and removes only its own. 0x50 is unassigned in
// /etc/iproute2/rt_protos.
const RouteProtocol = 0x50

// DeviceName is the VXLAN device's name for a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("podnet.%d", vni) }

// VtepMAC is the stable, locally administered MAC of a node's VXLAN
// device: a device re-created after a reboot keeps the MAC the other nodes
// already program.
func VtepMAC(node string, vni int) net.HardwareAddr {
	h := sha256.Sum256(fmt.Appendf(nil, "podnet-vtep/%s/%d", node, vni))
	m := net.HardwareAddr(h[:6])
	m[0] = (m[0] | 0x02) &^ 0x01 // locally administered, unicast
	return m
}

// Local is this node as the agent sees it.
type Local struct {
	Name         string
	Backend      string // vxlan | host-gw | auto
	UnderlayDev  string
	UnderlayIPs  []netip.Addr
	UnderlayNets []netip.Prefix // on-link prefixes of the underlay device (for auto)
	Subnets      []netip.Prefix
	VtepMAC      string
	VNI, Port    int
	MTU          int // pod MTU = VXLAN device MTU
	ClusterCIDRs []netip.Prefix
}

// Device is the desired VXLAN device.
type Device struct {
	Name        string
	VNI, Port   int
	LocalIP     netip.Addr
	UnderlayDev string
	MTU         int
	MAC         string
	Addrs       []netip.Prefix
}

// Route is one desired route, protocol RouteProtocol, main table.
type Route struct {
	Dst    netip.Prefix
	Via    netip.Addr
	Dev    string
	Onlink bool
	Node   string // for humans: which node it leads to
	Mode   string // vxlan | host-gw
}

// Neighbor is a permanent ARP/NDP entry.
type Neighbor struct {
	IP  netip.Addr
	MAC string
	Dev string
}

// FDBEntry is a permanent VXLAN forwarding entry: inner MAC -> outer dst.
type FDBEntry struct {
	MAC string
	Dst netip.Addr
	Dev string
}

// NAT is the masquerade rule set's data: pods' traffic leaving the cluster
// CIDRs is masqueraded, traffic to other pods and to nodes is not.
type NAT struct {
	Cluster4, Cluster6 []netip.Prefix
	Nodes4, Nodes6     []netip.Addr
}

// State is everything the kernel layer applies for one node.
type State struct {
	Device    *Device // nil for pure host-gw
	Routes    []Route
	Neighbors []Neighbor
	FDB       []FDBEntry
	NAT       NAT
	// Problems are remote nodes (or families) that cannot be reached and
	// why; the agent logs them, the rest is still applied.
	Problems []string
	// Rejected are the records, or parts of records, that Authorise
	// refused and why; the agent logs them, the rest is still applied.
	Rejected []string
}

// OverheadFor is the VXLAN encapsulation overhead for an underlay family.
func OverheadFor(underlay netip.Addr) int {
	if underlay.Is4() {
		return 50
	}
	return 70
}

func sameFamily(a, b netip.Addr) bool { return a.Is4() == b.Is4() }

func firstOfFamily(ips []netip.Addr, like netip.Addr) (netip.Addr, bool) {
	for _, ip := range ips {
		if sameFamily(ip, like) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// Compute returns the desired state for local given the store's snapshot:
// only what Authorise lets through is programmed (local's own record is
// skipped).
func Compute(l Local, snap datastore.Snapshot) State {
	nodes, rejected := Authorise(l, snap)
	st := compute(l, nodes)
	st.Rejected = rejected
	return st
}

// compute builds the state from authorised records.
func compute(l Local, nodes []datastore.NodeInfo) State {
	var st State
	dev := DeviceName(l.VNI)
	var vtepIP netip.Addr
	if len(l.UnderlayIPs) > 0 {
		vtepIP = l.UnderlayIPs[0]
	}
	if l.Backend != HostGW {
		d := &Device{Name: dev, VNI: l.VNI, Port: l.Port, LocalIP: vtepIP, UnderlayDev: l.UnderlayDev, MTU: l.MTU, MAC: l.VtepMAC}
		for _, s := range l.Subnets {
			d.Addrs = append(d.Addrs, netip.PrefixFrom(s.Masked().Addr(), s.Addr().BitLen()))
		}
		st.Device = d
	}
	onOurL2 := func(ip netip.Addr) bool {
		for _, n := range l.UnderlayNets {
			if n.Contains(ip) {
				return true
			}
		}
		return false
	}
	for _, n := range nodes {
		if n.Name == l.Name {
			continue
		}
		fdbDone := false
		for _, s := range n.Subnets {
			gwU, haveGW := firstOfFamily(n.UnderlayIPs, s.Addr())
			mode := l.Backend
			if mode == Auto {
				mode = VXLAN
				if haveGW && onOurL2(gwU) {
					mode = HostGW
				}
			}
			switch mode {
			case HostGW:
				if !haveGW {
					st.Problems = append(st.Problems, fmt.Sprintf("node %s: host-gw route to %s needs an underlay address of the same family, node has %v: skipped", n.Name, s, n.UnderlayIPs))
					continue
				}
				if !onOurL2(gwU) {
					st.Problems = append(st.Problems, fmt.Sprintf("node %s: host-gw next hop %s is not on our underlay subnets %v (use backend vxlan or auto)", n.Name, gwU, l.UnderlayNets))
				}
				st.Routes = append(st.Routes, Route{Dst: s, Via: gwU, Dev: l.UnderlayDev, Node: n.Name, Mode: HostGW})
			default:
				if n.VtepMAC == "" {
					st.Problems = append(st.Problems, fmt.Sprintf("node %s: no VTEP MAC published (backend %q): cannot reach %s over vxlan", n.Name, n.Backend, s))
					continue
				}
				u, ok := firstOfFamily(n.UnderlayIPs, vtepIP)
				if !vtepIP.IsValid() || !ok {
					st.Problems = append(st.Problems, fmt.Sprintf("node %s: no underlay address of our VTEP's family (ours %v, theirs %v): cannot reach %s over vxlan", n.Name, vtepIP, n.UnderlayIPs, s))
					continue
				}
				gw := s.Addr()
				st.Routes = append(st.Routes, Route{Dst: s, Via: gw, Dev: dev, Onlink: true, Node: n.Name, Mode: VXLAN})
				st.Neighbors = append(st.Neighbors, Neighbor{IP: gw, MAC: strings.ToLower(n.VtepMAC), Dev: dev})
				if !fdbDone {
					st.FDB = append(st.FDB, FDBEntry{MAC: strings.ToLower(n.VtepMAC), Dst: u, Dev: dev})
					fdbDone = true
				}
			}
		}
	}
	for _, c := range l.ClusterCIDRs {
		if c.Addr().Is4() {
			st.NAT.Cluster4 = append(st.NAT.Cluster4, c.Masked())
		} else {
			st.NAT.Cluster6 = append(st.NAT.Cluster6, c.Masked())
		}
	}
	addNode := func(ip netip.Addr) {
		if ip.Is4() {
			st.NAT.Nodes4 = append(st.NAT.Nodes4, ip)
		} else {
			st.NAT.Nodes6 = append(st.NAT.Nodes6, ip)
		}
	}
	for _, ip := range l.UnderlayIPs {
		addNode(ip)
	}
	for _, n := range nodes {
		if n.Name != l.Name {
			for _, ip := range n.UnderlayIPs {
				addNode(ip)
			}
		}
	}
	st.sort()
	return st
}

func overlaps(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

func inAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func cmpPrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func (st *State) sort() {
	slices.SortFunc(st.Routes, func(a, b Route) int { return cmpPrefix(a.Dst, b.Dst) })
	slices.SortFunc(st.Neighbors, func(a, b Neighbor) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(st.FDB, func(a, b FDBEntry) int { return cmp.Compare(a.MAC, b.MAC) })
	for _, l := range [][]netip.Addr{st.NAT.Nodes4, st.NAT.Nodes6} {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	st.NAT.Nodes4 = slices.Compact(st.NAT.Nodes4)
	st.NAT.Nodes6 = slices.Compact(st.NAT.Nodes6)
	slices.SortFunc(st.NAT.Cluster4, cmpPrefix)
	slices.SortFunc(st.NAT.Cluster6, cmpPrefix)
}

// String renders a route like `ip route` prints it.
func (r Route) String() string {
	s := fmt.Sprintf("%s via %s dev %s proto 0x%x", r.Dst, r.Via, r.Dev, RouteProtocol)
	if r.Onlink {
		s += " onlink"
	}
	return s
}

// String renders a neighbour like `ip neigh`.
func (n Neighbor) String() string {
	return fmt.Sprintf("%s dev %s lladdr %s PERMANENT", n.IP, n.Dev, n.MAC)
}

// String renders an FDB entry like `bridge fdb`.
func (f FDBEntry) String() string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", f.MAC, f.Dev, f.Dst)
}

// Render is the whole state as text: one line per kernel object, then the
// nftables table, then problems as comments.
func (st State) Render() string {
	var b strings.Builder
	if d := st.Device; d != nil {
		fmt.Fprintf(&b, "link %s type vxlan id %d local %s dev %s dstport %d nolearning mtu %d address %s\n",
			d.Name, d.VNI, d.LocalIP, d.UnderlayDev, d.Port, d.MTU, d.MAC)
		for _, a := range d.Addrs {
			fmt.Fprintf(&b, "addr %s dev %s\n", a, d.Name)
		}
	}
	for _, r := range st.Routes {
		fmt.Fprintf(&b, "route %s  # %s %s\n", r, r.Node, r.Mode)
	}
	for _, n := range st.Neighbors {
		fmt.Fprintf(&b, "neigh %s\n", n)
	}
	for _, f := range st.FDB {
		fmt.Fprintf(&b, "fdb %s\n", f)
	}
	b.WriteString(st.NAT.Render())
	for _, p := range st.Problems {
		fmt.Fprintf(&b, "# problem: %s\n", p)
	}
	for _, r := range st.Rejected {
		fmt.Fprintf(&b, "# rejected: %s\n", r)
	}
	return b.String()
}

// NAT table, set and chain names.
const (
	NATTable = "podnet-nat"
	NATChain = "postrouting"
	SetCl4   = "cluster4"
	SetCl6   = "cluster6"
	SetNode4 = "nodes4"
	SetNode6 = "nodes6"
)

// NATRules are the chain's rules in order, as nft text. The kernel layer
// builds the same rules as expressions and tags each with its text, so the
// two cannot drift apart unnoticed.
var NATRules = []string{
	"ip saddr @cluster4 ip daddr @cluster4 return",
	"ip saddr @cluster4 ip daddr @nodes4 return",
	"ip saddr @cluster4 masquerade",
	"ip6 saddr @cluster6 ip6 daddr @cluster6 return",
	"ip6 saddr @cluster6 ip6 daddr @nodes6 return",
	"ip6 saddr @cluster6 masquerade",
}

func join[T fmt.Stringer](l []T) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}

// Render prints the table in nft syntax.
func (n NAT) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", NATTable)
	set := func(name, typ string, interval bool, elems string) {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", name, typ)
		if interval {
			b.WriteString("\t\tflags interval\n")
		}
		if elems != "" {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", elems)
		}
		b.WriteString("\t}\n")
	}
	set(SetCl4, "ipv4_addr", true, join(n.Cluster4))
	set(SetCl6, "ipv6_addr", true, join(n.Cluster6))
	set(SetNode4, "ipv4_addr", false, join(n.Nodes4))
	set(SetNode6, "ipv6_addr", false, join(n.Nodes6))
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n", NATChain)
	for _, r := range NATRules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
