package netlinkx

import (
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/sysctl"
	"github.com/podnet/podnet/internal/trace"
)

// DADTimeout bounds the wait for IPv6 duplicate address detection when a
// plugin turns DAD on (the reference plugins wait the same 5 s).
const DADTimeout = 5 * time.Second

// PodIface is the L3 set-up of a pod's interface.
type PodIface struct {
	Link  netlink.Link
	Addrs []net.IPNet
	// Routes are added after the link is up, in order; LinkIndex is filled
	// in when zero.
	Routes []*netlink.Route
	// NoPrefixRoute suppresses the kernel's on-link prefix routes (ptp).
	NoPrefixRoute bool
	// DAD turns IPv6 duplicate address detection on (and waits for it);
	// off, addresses are usable at once.
	DAD bool
	// ARPNotify sends gratuitous ARP when the link comes up
	// (net.ipv4.conf.IF.arp_notify), so neighbours forget a previous owner
	// of a reused address.
	ARPNotify bool
	// NoDADSysctl sets accept_dad=0 on the interface whenever DAD is off,
	// also without IPv6 addresses, as the reference bridge does (best
	// effort: IPv6 may be disabled in the kernel).
	NoDADSysctl bool
}

// ConfigurePod applies p in the pod namespace ns through h (a handle opened
// there): sysctls first (the only step that enters the namespace), then
// addresses, link up, and routes.
func ConfigurePod(h *netlink.Handle, ns vns.NsHandle, p PodIface) error {
	name := p.Link.Attrs().Name
	v4, v6 := false, false
	for _, a := range p.Addrs {
		if a.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	if (v4 && p.ARPNotify) || v6 || (p.NoDADSysctl && !p.DAD) {
		t := trace.Begin()
		err := netns.DoHandle(ns, func() error {
			return podSysctls(name, v4 && p.ARPNotify, v6, p.DAD, p.NoDADSysctl)
		})
		trace.End("pod sysctls (netns switch + writes)", t)
		if err != nil {
			return err
		}
	}
	t := trace.Begin()
	for _, a := range p.Addrs {
		if err := AddAddr(h, p.Link, a, AddrOpts{NoDAD: !p.DAD, NoPrefixRoute: p.NoPrefixRoute}); err != nil {
			return err
		}
	}
	trace.End("pod addr add", t)
	t = trace.Begin()
	if err := h.LinkSetUp(p.Link); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	trace.End("pod link up", t)
	if v6 && p.DAD {
		if err := WaitAddrsSettled(h, p.Link, DADTimeout); err != nil {
			return err
		}
	}
	defer trace.Span("pod routes add")()
	for _, r := range p.Routes {
		if r.LinkIndex == 0 {
			r.LinkIndex = p.Link.Attrs().Index
		}
		if err := AddRoute(h, r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// podSysctls runs inside the pod namespace.
func podSysctls(ifName string, arpNotify, v6, dad, noDADSysctl bool) error {
	if arpNotify {
		if err := sysctl.Set("net/ipv4/conf/"+ifName+"/arp_notify", "1"); err != nil {
			return err
		}
	}
	if !v6 {
		if noDADSysctl && !dad {
			_ = sysctl.Set("net/ipv6/conf/"+ifName+"/accept_dad", "0")
		}
		return nil
	}
	// A runtime may have disabled IPv6 in the pod; addresses cannot be added
	// then. Enable it on lo and the interface, as the reference does.
	for _, dev := range []string{"lo", ifName} {
		if _, err := sysctl.Ensure("net/ipv6/conf/"+dev+"/disable_ipv6", "0"); err != nil {
			return err
		}
	}
	if err := sysctl.Set("net/ipv6/conf/"+ifName+"/keep_addr_on_down", "1"); err != nil {
		return err
	}
	if !dad {
		// As the reference: no DAD on the pod's interface at all, so its
		// link-local address too is usable the moment ADD returns (with
		// IFA_F_NODAD only the assigned addresses skip it).
		return sysctl.Set("net/ipv6/conf/"+ifName+"/accept_dad", "0")
	}
	if err := sysctl.Set("net/ipv6/conf/"+ifName+"/accept_dad", "1"); err != nil {
		return err
	}
	// Best effort: older kernels lack enhanced_dad.
	_ = sysctl.Set("net/ipv6/conf/"+ifName+"/enhanced_dad", "1")
	return nil
}

// RouteFromCNI turns a result route into a netlink route on link index
// link, through gw when the route names no gateway (gw may be nil: an
// on-link route).
func RouteFromCNI(r *types.Route, link int, gw net.IP) *netlink.Route {
	dst := r.Dst
	nr := &netlink.Route{LinkIndex: link, Dst: &dst, Gw: r.GW, Priority: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS}
	if nr.Gw == nil {
		nr.Gw = gw
	}
	if nr.Gw == nil {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Table != nil {
		nr.Table = *r.Table
	}
	if r.Scope != nil {
		nr.Scope = netlink.Scope(*r.Scope)
	}
	return nr
}

// ReplaceRoute adds r or replaces a route with the same destination (a
// stale route to a reused pod address through a vanished device).
func ReplaceRoute(h *netlink.Handle, r *netlink.Route) error {
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("replace route %s: %w", dstString(r.Dst), err)
	}
	return nil
}

// EnableForwarding turns on IPv4 or IPv6 forwarding in the calling thread's
// namespace (written only when off).
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if _, err := sysctl.Ensure("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	if v6 {
		if _, err := sysctl.Ensure("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return nil
}
