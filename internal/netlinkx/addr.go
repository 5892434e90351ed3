package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddrOpts are the address flags the plugins use.
type AddrOpts struct {
	// NoDAD skips IPv6 duplicate address detection (IFA_F_NODAD), so the
	// address is usable at once; ignored for IPv4.
	NoDAD bool
	// NoPrefixRoute stops the kernel from adding the on-link route for the
	// address's prefix (IFA_F_NOPREFIXROUTE); ptp routes the prefix itself.
	NoPrefixRoute bool
}

// AddAddr adds ipn to link. An identical address already present is fine.
func AddAddr(h *netlink.Handle, link netlink.Link, ipn net.IPNet, o AddrOpts) error {
	a := &netlink.Addr{IPNet: &ipn}
	if o.NoDAD && ipn.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	if o.NoPrefixRoute {
		a.Flags |= unix.IFA_F_NOPREFIXROUTE
	}
	if err := h.AddrAdd(link, a); err != nil && !IsExist(err) {
		return fmt.Errorf("add address %s to %q: %w", ipn.String(), link.Attrs().Name, err)
	}
	return nil
}

// EnsureGatewayAddr puts gw on a (bridge) link shared by many pods. The
// rules are the reference bridge plugin's: the address may already be there;
// any other IPv4 address, or an IPv6 address overlapping gw's prefix, is a
// conflict that is an error, or with force is removed first. Addresses in
// keep (the other gateways of the same ADD) never conflict. added reports
// whether this call put the address there.
func EnsureGatewayAddr(h *netlink.Handle, link netlink.Link, gw net.IPNet, keep []net.IPNet, force bool) (added bool, err error) {
	fam := Family(gw.IP)
	addrs, err := Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, fam) })
	if err != nil {
		return false, fmt.Errorf("list addresses of %q: %w", link.Attrs().Name, err)
	}
	want := gw.String()
	var conflicts []netlink.Addr
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if a.IPNet.String() == want {
			return false, nil
		}
		if fam == netlink.FAMILY_V6 && a.IP.IsLinkLocalUnicast() {
			continue
		}
		if inNets(*a.IPNet, keep) {
			continue
		}
		if fam == netlink.FAMILY_V4 || a.IPNet.Contains(gw.IP) || gw.Contains(a.IP) {
			conflicts = append(conflicts, a)
		}
	}
	for _, a := range conflicts {
		if !force {
			return false, fmt.Errorf("%q already has address %s, not %s (set forceAddress to replace it)", link.Attrs().Name, a.IPNet, want)
		}
		if err := h.AddrDel(link, &a); err != nil && !IsNotFound(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return false, fmt.Errorf("remove address %s from %q: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if err := AddAddr(h, link, gw, AddrOpts{NoDAD: true}); err != nil {
		return false, err
	}
	return true, nil
}

func inNets(n net.IPNet, list []net.IPNet) bool {
	s := n.String()
	for _, k := range list {
		if k.String() == s {
			return true
		}
	}
	return false
}

// AddRoute adds r; an identical route already present is fine.
func AddRoute(h *netlink.Handle, r *netlink.Route) error {
	if err := h.RouteAdd(r); err != nil && !IsExist(err) {
		gw := ""
		if r.Gw != nil {
			gw = " via " + r.Gw.String()
		}
		return fmt.Errorf("add route %s%s: %w", dstString(r.Dst), gw, err)
	}
	return nil
}

func dstString(d *net.IPNet) string {
	if d == nil {
		return "default"
	}
	return d.String()
}

// WaitAddrsSettled waits until no address of link is tentative (IPv6 DAD
// done) or timeout passes. Only used when DAD is on: without DAD the
// addresses are usable at once and nothing waits.
func WaitAddrsSettled(h *netlink.Handle, link netlink.Link, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_V6) })
		if err != nil {
			return fmt.Errorf("list addresses of %q: %w", link.Attrs().Name, err)
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("address %s on %q failed duplicate address detection", a.IPNet, link.Attrs().Name)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = true
			}
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("addresses of %q still tentative after %s", link.Attrs().Name, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckAddrs reports the first address of want that link does not carry
// with the same prefix length.
func CheckAddrs(h *netlink.Handle, link netlink.Link, want []net.IPNet) error {
	addrs, err := Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", link.Attrs().Name, err)
	}
	for _, w := range want {
		found := false
		for _, a := range addrs {
			if a.IPNet != nil && a.IP.Equal(w.IP) && maskEqual(a.Mask, w.Mask) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("address %s is missing on %q", w.String(), link.Attrs().Name)
		}
	}
	return nil
}

func maskEqual(a, b net.IPMask) bool {
	ao, ab := a.Size()
	bo, bb := b.Size()
	return ao == bo && ab == bb
}

// RouteWant is a route CHECK expects: a destination (nil = default) and,
// when set, the gateway it goes through.
type RouteWant struct {
	Dst *net.IPNet
	GW  net.IP
}

func (w RouteWant) String() string {
	s := dstString(w.Dst)
	if w.GW != nil {
		s += " via " + w.GW.String()
	}
	return s
}

// CheckRoutes reports the first route of want missing from the main table
// of h's namespace.
func CheckRoutes(h *netlink.Handle, want []RouteWant) error {
	if len(want) == 0 {
		return nil
	}
	routes, err := Retry(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, w := range want {
		if !hasRoute(routes, w) {
			return fmt.Errorf("route %s is missing", w)
		}
	}
	return nil
}

func hasRoute(routes []netlink.Route, w RouteWant) bool {
	wantFam := 0
	if w.Dst != nil {
		wantFam = Family(w.Dst.IP)
	} else if w.GW != nil {
		wantFam = Family(w.GW)
	}
	for _, r := range routes {
		if r.Family != 0 && wantFam != 0 && r.Family != wantFam {
			continue
		}
		if IsDefault(w.Dst) {
			if !IsDefault(r.Dst) {
				continue
			}
		} else if r.Dst == nil || r.Dst.String() != w.Dst.String() {
			continue
		}
		if w.GW == nil || w.GW.Equal(r.Gw) {
			return true
		}
		for _, nh := range r.MultiPath {
			if w.GW.Equal(nh.Gw) {
				return true
			}
		}
	}
	return false
}
