// Package kernel applies an overlay.State to one node's network namespace
// and reads it back: the VXLAN device (check, then ensure), its addresses,
// permanent neighbours and FDB entries, the routes podnet marks with
// overlay.RouteProtocol, the podnet-nat nftables table and the forwarding
// sysctls. Everything goes through netlink on handles opened for the node's
// namespace (netlink.NewHandleAt, nftables.WithNetNSFd), so several agents
// can run in one process, each for its own namespace; only sysctls switch
// the thread (via internal/netns), as /proc/sys/net is per thread.
//
// It decides no policy and owns only what is recognisably podnet's: the
// podnet.<VNI> device (and the neighbours and FDB entries on it), routes
// with protocol 0x50, and the podnet-nat table. Apply adds before it
// deletes, keeps going after an error and returns them all joined; it never
// removes the datapath because the agent stops.
package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/overlay"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/sysctl"
)

const mainTable = unix.RT_TABLE_MAIN

// Node is one network namespace the agent programs.
type Node struct {
	h      *netlink.Handle
	ns     vns.NsHandle // -1 for the process's own namespace
	nsPath string
	log    *slog.Logger
}

// Open returns a Node for the namespace at nsPath ("" = the caller's).
func Open(nsPath string, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{ns: -1, nsPath: nsPath, log: log}
	var err error
	if nsPath == "" {
		n.h, err = netlinkx.NewHandle()
	} else {
		n.ns, err = vns.GetFromPath(nsPath)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
		}
		n.h, err = netlinkx.NewHandleAt(n.ns)
	}
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close frees the handles.
// NSFd is the descriptor of the node's namespace, -1 for the process's
// own (for other writers into the same namespace, e.g. policy).
func (n *Node) NSFd() int { return int(n.ns) }

func (n *Node) Close() {
	if n.h != nil {
		n.h.Close()
	}
	if n.ns >= 0 {
		n.ns.Close()
	}
}

// Handle is the netlink handle in the node's namespace.
func (n *Node) Handle() *netlink.Handle { return n.h }

// Underlay is the interface carrying node-to-node traffic.
type Underlay struct {
	Dev   string
	Index int
	MTU   int
	IPs   []netip.Addr   // global addresses, the selecting one first
	Nets  []netip.Prefix // their on-link prefixes
	IsAny bool
}

// FindUnderlay picks the underlay interface: by name, else by an address
// inside cidr, else the one holding the default route.
func (n *Node) FindUnderlay(name string, cidr netip.Prefix) (Underlay, error) {
	var link netlink.Link
	var prefer netip.Addr
	switch {
	case name != "":
		l, err := n.h.LinkByName(name)
		if err != nil {
			return Underlay{}, fmt.Errorf("underlay interface %q: %w", name, err)
		}
		link = l
	case cidr.IsValid():
		addrs, err := netlinkx.Retry(func() ([]netlink.Addr, error) { return n.h.AddrList(nil, netlink.FAMILY_ALL) })
		if err != nil {
			return Underlay{}, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ok && cidr.Contains(ip.Unmap()) {
				if link, err = n.h.LinkByIndex(a.LinkIndex); err != nil {
					return Underlay{}, err
				}
				prefer = ip.Unmap()
				break
			}
		}
		if link == nil {
			return Underlay{}, fmt.Errorf("underlay: no interface has an address in %s", cidr)
		}
	default:
		l, err := netlinkx.DefaultRouteLink(n.h)
		if err != nil {
			return Underlay{}, err
		}
		link = l
		if link == nil {
			return Underlay{}, errors.New("underlay: no default route; set the underlay interface by name or CIDR")
		}
	}
	u := Underlay{Dev: link.Attrs().Name, Index: link.Attrs().Index, MTU: link.Attrs().MTU}
	addrs, err := netlinkx.Retry(func() ([]netlink.Addr, error) { return n.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return Underlay{}, fmt.Errorf("list addresses of %s: %w", u.Dev, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE || ip.IsLinkLocalUnicast() {
			continue
		}
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		u.IPs = append(u.IPs, ip)
		u.Nets = append(u.Nets, netip.PrefixFrom(ip, ones).Masked())
	}
	slices.SortStableFunc(u.IPs, func(a, b netip.Addr) int {
		switch {
		case a == prefer:
			return -1
		case b == prefer:
			return 1
		case a.Is4() && !b.Is4():
			return -1
		case b.Is4() && !a.Is4():
			return 1
		}
		return 0
	})
	if len(u.IPs) == 0 {
		return Underlay{}, fmt.Errorf("underlay interface %s has no global address", u.Dev)
	}
	return u, nil
}

// EnableForwarding sets net.ipv4.ip_forward and net.ipv6.conf.all.forwarding
// in the node's namespace.
func (n *Node) EnableForwarding(v4, v6 bool) error {
	set := func() error {
		var errs []error
		if v4 {
			if _, err := sysctl.Ensure("net.ipv4.ip_forward", "1"); err != nil {
				errs = append(errs, err)
			}
		}
		if v6 {
			if _, err := sysctl.Ensure("net.ipv6.conf.all.forwarding", "1"); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if n.nsPath == "" {
		return set()
	}
	return netns.Do(n.nsPath, set)
}

// Apply makes the kernel match st. It returns every error it met; what
// could be applied is applied.
func (n *Node) Apply(st overlay.State) error {
	var errs []error
	devIdx := 0
	if st.Device != nil {
		link, err := n.EnsureDevice(*st.Device)
		if err != nil {
			errs = append(errs, err)
		} else {
			devIdx = link.Attrs().Index
			errs = append(errs, n.syncAddrs(link, st.Device.Addrs))
			errs = append(errs, n.syncFDB(devIdx, st.FDB))
			errs = append(errs, n.syncNeighbors(devIdx, st.Neighbors))
		}
	}
	errs = append(errs, n.syncRoutes(st.Routes))
	if _, err := n.ApplyNAT(st.NAT); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// EnsureDevice adopts a VXLAN device matching d or (re)creates it.
func (n *Node) EnsureDevice(d overlay.Device) (netlink.Link, error) {
	under, err := n.h.LinkByName(d.UnderlayDev)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: underlay %q: %w", d.Name, d.UnderlayDev, err)
	}
	mac, err := net.ParseMAC(d.MAC)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: mac %q: %w", d.Name, d.MAC, err)
	}
	local := net.IP(d.LocalIP.AsSlice())
	cur, err := n.h.LinkByName(d.Name)
	switch {
	case err == nil:
		vx, ok := cur.(*netlink.Vxlan)
		if ok && vx.VxlanId == d.VNI && vx.SrcAddr.Equal(local) && vx.Port == d.Port &&
			!vx.Learning && vx.VtepDevIndex == under.Attrs().Index {
			break // adopt
		}
		n.log.Info("replacing VXLAN device with wrong attributes", "dev", d.Name, "type", cur.Type())
		if err := n.h.LinkDel(cur); err != nil {
			return nil, fmt.Errorf("vxlan %s: delete mismatching device: %w", d.Name, err)
		}
		cur = nil
	case !netlinkx.IsNotFound(err):
		return nil, fmt.Errorf("vxlan %s: %w", d.Name, err)
	default:
		cur = nil
	}
	if cur == nil {
		vx := &netlink.Vxlan{
			LinkAttrs:    netlink.LinkAttrs{Name: d.Name, MTU: d.MTU, HardwareAddr: mac},
			VxlanId:      d.VNI,
			VtepDevIndex: under.Attrs().Index,
			SrcAddr:      local,
			Port:         d.Port,
			Learning:     false,
		}
		if err := n.h.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("vxlan %s: create: %w", d.Name, err)
		}
		n.log.Info("created VXLAN device", "dev", d.Name, "vni", d.VNI, "local", d.LocalIP, "mtu", d.MTU)
		if cur, err = n.h.LinkByName(d.Name); err != nil {
			return nil, fmt.Errorf("vxlan %s: %w", d.Name, err)
		}
	}
	a := cur.Attrs()
	var errs []error
	if a.MTU != d.MTU {
		errs = append(errs, wrap("set mtu", n.h.LinkSetMTU(cur, d.MTU)))
	}
	if a.HardwareAddr.String() != mac.String() {
		errs = append(errs, wrap("set mac", n.h.LinkSetHardwareAddr(cur, mac)))
	}
	if a.Flags&net.FlagUp == 0 {
		errs = append(errs, wrap("set up", n.h.LinkSetUp(cur)))
	}
	if err := errors.Join(errs...); err != nil {
		return cur, fmt.Errorf("vxlan %s: %w", d.Name, err)
	}
	if fresh, err := n.h.LinkByName(d.Name); err == nil {
		cur = fresh
	}
	return cur, nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (n *Node) syncAddrs(link netlink.Link, want []netip.Prefix) error {
	cur, err := netlinkx.Retry(func() ([]netlink.Addr, error) { return n.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	have := map[netip.Prefix]netlink.Addr{}
	for _, a := range cur {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		have[netip.PrefixFrom(ip.Unmap(), ones)] = a
	}
	var errs []error
	for _, p := range want {
		if _, ok := have[p]; ok {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := n.h.AddrAdd(link, a); err != nil && !netlinkx.IsExist(err) {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", p, link.Attrs().Name, err))
		}
	}
	for p, a := range have {
		if slices.Contains(want, p) || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := n.h.AddrDel(link, &a); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale address %s from %s: %w", p, link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func (n *Node) syncNeighbors(idx int, want []overlay.Neighbor) error {
	var cur []netlink.Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		l, err := netlinkx.Retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, fam) })
		if err != nil {
			return fmt.Errorf("list neighbours: %w", err)
		}
		cur = append(cur, l...)
	}
	have := map[string]netlink.Neigh{}
	for _, e := range cur {
		if e.LinkIndex == idx && e.State&netlink.NUD_PERMANENT != 0 {
			have[e.IP.String()+"|"+e.HardwareAddr.String()] = e
		}
	}
	wantKeys := map[string]bool{}
	var errs []error
	for _, w := range want {
		k := w.IP.String() + "|" + w.MAC
		wantKeys[k] = true
		if _, ok := have[k]; ok {
			continue
		}
		mac, _ := net.ParseMAC(w.MAC)
		err := n.h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: family(w.IP), State: netlink.NUD_PERMANENT, IP: w.IP.AsSlice(), HardwareAddr: mac})
		if err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s: %w", w, err))
		}
	}
	for k, e := range have {
		if wantKeys[k] {
			continue
		}
		// A neighbour whose MAC changed was replaced above; deleting by IP
		// would remove the new one, so only delete IPs we no longer want.
		if slices.ContainsFunc(want, func(w overlay.Neighbor) bool { return net.IP(w.IP.AsSlice()).Equal(e.IP) }) {
			continue
		}
		if err := n.h.NeighDel(&e); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale neighbour %s: %w", e.IP, err))
		}
	}
	return errors.Join(errs...)
}

func (n *Node) syncFDB(idx int, want []overlay.FDBEntry) error {
	cur, err := netlinkx.Retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	have := map[string]netlink.Neigh{}
	for _, e := range cur {
		if e.LinkIndex == idx {
			have[e.HardwareAddr.String()+"|"+e.IP.String()] = e
		}
	}
	wantKeys := map[string]bool{}
	var errs []error
	for _, w := range want {
		k := w.MAC + "|" + w.Dst.String()
		wantKeys[k] = true
		if _, ok := have[k]; ok {
			continue
		}
		mac, _ := net.ParseMAC(w.MAC)
		err := n.h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: w.Dst.AsSlice(), HardwareAddr: mac})
		if err != nil {
			errs = append(errs, fmt.Errorf("set fdb %s: %w", w, err))
		}
	}
	for k, e := range have {
		if wantKeys[k] {
			continue
		}
		e.Family, e.Flags = unix.AF_BRIDGE, netlink.NTF_SELF
		if err := n.h.NeighDel(&e); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale fdb %s dst %s: %w", e.HardwareAddr, e.IP, err))
		}
	}
	return errors.Join(errs...)
}

func routeKey(dst *net.IPNet, gw net.IP, idx int, flags int) string {
	return fmt.Sprintf("%s|%s|%d|%t", dst, gw, idx, flags&int(netlink.FLAG_ONLINK) != 0)
}

// OwnRoutes lists the routes podnet installed (protocol 0x50, main table).
func (n *Node) OwnRoutes() ([]netlink.Route, error) {
	return netlinkx.Retry(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: overlay.RouteProtocol, Table: mainTable},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
}

func (n *Node) syncRoutes(want []overlay.Route) error {
	cur, err := n.OwnRoutes()
	if err != nil {
		return fmt.Errorf("list podnet routes: %w", err)
	}
	have := map[string]netlink.Route{}
	for _, r := range cur {
		have[routeKey(r.Dst, r.Gw, r.LinkIndex, r.Flags)] = r
	}
	var errs []error
	wantKeys := map[string]bool{}
	for _, w := range want {
		link, err := n.h.LinkByName(w.Dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: device: %w", w, err))
			continue
		}
		r := netlink.Route{
			Dst:       &net.IPNet{IP: w.Dst.Addr().AsSlice(), Mask: net.CIDRMask(w.Dst.Bits(), w.Dst.Addr().BitLen())},
			Gw:        w.Via.AsSlice(),
			LinkIndex: link.Attrs().Index,
			Protocol:  overlay.RouteProtocol,
			Table:     mainTable,
		}
		if w.Onlink {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		k := routeKey(r.Dst, r.Gw, r.LinkIndex, r.Flags)
		wantKeys[k] = true
		if _, ok := have[k]; ok {
			continue
		}
		if err := n.h.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", w, err))
		}
	}
	for k, r := range have {
		if wantKeys[k] {
			continue
		}
		if err := n.h.RouteDel(&r); err != nil && !netlinkx.IsNotFound(err) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}
