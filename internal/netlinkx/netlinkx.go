// Package netlinkx is podnet's kernel edge for links, addresses and routes:
// veth pairs, bridges, the address and route set-ups the bridge and ptp
// plugins apply, and the read-back that CHECK uses. Everything goes through
// netlink (github.com/vishvananda/netlink) on handles the caller opens in the
// namespace it means, so nothing here switches threads between namespaces
// except where the kernel gives no other way (sysctls, see package sysctl).
//
// It decides no policy: which addresses, routes and names to use come from
// the caller.
//
// Dumps (link, address and route lists) can be interrupted by concurrent
// changes; every dump here goes through Retry.
package netlinkx

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"unicode"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds Retry: an interrupted dump means the table changed
// while we read it, which under heavy churn can happen a few times in a row.
const dumpRetries = 10

// Retry runs a netlink dump until it is not interrupted (EINTR or
// NLM_F_DUMP_INTR, which vishvananda/netlink reports as ErrDumpInterrupted
// together with possibly inconsistent results).
func Retry[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = dump()
		if err == nil || !Interrupted(err) {
			return v, err
		}
	}
	return v, fmt.Errorf("netlink dump still interrupted after %d tries: %w", dumpRetries, err)
}

// Interrupted reports whether err is a dump interruption worth retrying.
func Interrupted(err error) bool {
	return errors.Is(err, netlink.ErrDumpInterrupted) || errors.Is(err, unix.EINTR)
}

// NewHandle opens a rtnetlink handle in the calling thread's namespace.
func NewHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

// NewHandleAt opens a rtnetlink handle in namespace ns without moving the
// caller into it.
func NewHandleAt(ns netns.NsHandle) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket in netns: %w", err)
	}
	return h, nil
}

// IsNotFound reports whether err means a link (or address, or route) does
// not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// IsExist reports whether err means the object already exists.
func IsExist(err error) bool {
	return errors.Is(err, unix.EEXIST) || errors.Is(err, os.ErrExist)
}

// RandomHostVethName returns "veth" and 8 random hex digits, the reference
// plugins' naming (NetworkManager ignores devices named veth*).
func RandomHostVethName() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return fmt.Sprintf("veth%x", b[:])
}

// RandomMAC returns a random locally administered unicast MAC, what the
// kernel would pick, but known to us without reading it back and marked as
// set by the user, so that neither udev nor the bridge code rewrites it.
func RandomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	b[0] = (b[0] | 0x02) &^ 0x01
	return net.HardwareAddr(b)
}

// LinkByName looks a link up; a missing link gives an error for which
// IsNotFound is true.
func LinkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	return h.LinkByName(name)
}

// DelLinkByName deletes the named link. It reports whether the link was
// there; a missing link is not an error.
func DelLinkByName(h *netlink.Handle, name string) (bool, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("look up %q: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return true, fmt.Errorf("delete %q: %w", name, err)
	}
	return true, nil
}

// Family returns netlink.FAMILY_V4 or FAMILY_V6 for ip.
func Family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// HostMask returns the /32 or /128 mask for ip's family.
func HostMask(ip net.IP) net.IPMask {
	if ip.To4() != nil {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

// HostNet returns ip as a /32 or /128 network.
func HostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

// Subnet returns the network that contains ipn (host bits cleared).
func Subnet(ipn net.IPNet) *net.IPNet {
	ip := ipn.IP
	if v4 := ip.To4(); v4 != nil && len(ipn.Mask) == net.IPv4len {
		ip = v4
	}
	return &net.IPNet{IP: ip.Mask(ipn.Mask), Mask: ipn.Mask}
}

// DefaultNet returns 0.0.0.0/0 or ::/0 for ip's family.
func DefaultNet(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// IsDefault reports whether n is 0.0.0.0/0 or ::/0 (a nil n counts).
func IsDefault(n *net.IPNet) bool {
	if n == nil {
		return true
	}
	ones, _ := n.Mask.Size()
	return ones == 0 && n.IP.IsUnspecified()
}

// OpenNS opens the network namespace at path. gone reports that there is
// no namespace there any more (the path is missing, or is a left-over file
// that is no longer a namespace bind mount), which DEL treats as "nothing
// left to remove in the pod".
func OpenNS(path string) (h netns.NsHandle, gone bool, err error) {
	h, err = netns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return netns.None(), true, nil
		}
		return netns.None(), false, fmt.Errorf("open netns %q: %w", path, err)
	}
	typ, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE)
	if err != nil {
		// Not a namespace file (ENOTTY/EINVAL): an unmounted left-over.
		h.Close()
		return netns.None(), true, nil
	}
	if typ != unix.CLONE_NEWNET {
		h.Close()
		return netns.None(), false, fmt.Errorf("%q is a namespace, but not a network namespace", path)
	}
	return h, false, nil
}

// ValidIfName checks a Linux interface name: 1-15 bytes of printable
// ASCII, no '/', ':' or white space, not "." or "..".
func ValidIfName(s string) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	if len(s) > 15 {
		return fmt.Errorf("is longer than 15 bytes")
	}
	if s == "." || s == ".." {
		return fmt.Errorf("is not a valid interface name")
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return fmt.Errorf("contains %q, not allowed in interface names", r)
		}
	}
	return nil
}

// DefaultRouteLink returns the interface of the first default route in the
// main table of h's namespace, IPv4 before IPv6 (the first hop of a
// multipath route), or nil when there is none: the "uplink" that macvlan's
// default master and the agent's default underlay both mean.
func DefaultRouteLink(h *netlink.Handle) (netlink.Link, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := Retry(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !IsDefault(r.Dst) {
				continue
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 {
				continue
			}
			return h.LinkByIndex(idx)
		}
	}
	return nil, nil
}

// ValidMTU accepts 0 (the kernel's default) and 68-65535, the range an
// Ethernet-like link can be given.
func ValidMTU(mtu int) error {
	switch {
	case mtu == 0:
		return nil
	case mtu < 0:
		return fmt.Errorf("%d is negative", mtu)
	case mtu < 68:
		return fmt.Errorf("%d is below the minimum 68", mtu)
	case mtu > 65535:
		return fmt.Errorf("%d is above the maximum 65535", mtu)
	}
	return nil
}
