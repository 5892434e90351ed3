package netlinkx

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/sysctl"
	"github.com/podnet/podnet/internal/trace"
)

// Veth describes a veth pair whose host end stays in the namespace of the
// host handle and whose pod end is created directly in another namespace.
type Veth struct {
	// HostName is the host end's name; empty picks RandomHostVethName and
	// retries on a name collision.
	HostName string
	// PodName is the pod end's name in PodNS (the CNI ifname).
	PodName string
	// PodNS is the pod's namespace.
	PodNS netns.NsHandle
	// MTU of both ends; 0 keeps the kernel default.
	MTU int
	// PodMAC and HostMAC; nil picks RandomMAC.
	PodMAC, HostMAC net.HardwareAddr
	// MasterIndex attaches the host end to a bridge when non-zero.
	MasterIndex int
	// HostNoDAD turns IPv6 DAD off on the host end before it comes up. The
	// kernel sends neighbour solicitations only from a non-tentative
	// link-local address, so a routed (ptp) host end with DAD on cannot
	// reach its pod over IPv6 for the first second or two. Needs the
	// caller's thread in the host namespace (a sysctl write).
	HostNoDAD bool
}

// ErrPodIfExists is returned by CreateVethPair when the pod already has an
// interface named PodName.
var ErrPodIfExists = errors.New("interface already exists in the pod namespace")

// CreateVethPair creates the pair in one request (host end up, pod end down
// in PodNS, both MACs and MTUs set), then attaches the host end to
// MasterIndex. It returns the host link (index filled in) and the pod link
// read back through pod. On error nothing is left behind.
//
// The removal of a half-made pair is keyed on a local variable, not on a
// named result: a "return nil, nil, err" would nil a named result before a
// deferred cleanup reads it (that panicked when a concurrent DEL of the same
// attachment deleted the pod end between creation and read-back).
func CreateVethPair(host, pod *netlink.Handle, v Veth) (*netlink.Veth, netlink.Link, error) {
	if v.PodMAC == nil {
		v.PodMAC = RandomMAC()
	}
	if v.HostMAC == nil {
		v.HostMAC = RandomMAC()
	}
	random := v.HostName == ""
	var hostLink *netlink.Veth
	for try := 0; ; try++ {
		name := v.HostName
		if random {
			name = RandomHostVethName()
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = v.MTU
		attrs.HardwareAddr = v.HostMAC
		if !v.HostNoDAD {
			attrs.Flags = net.FlagUp
		}
		veth := netlink.NewVeth(attrs)
		veth.PeerName = v.PodName
		veth.PeerHardwareAddr = v.PodMAC
		veth.PeerNamespace = netlink.NsFd(int(v.PodNS))
		t := trace.Begin()
		err := host.LinkAdd(veth)
		trace.End("veth pair create (pod end into netns)", t)
		if err == nil {
			hostLink = veth
			break
		}
		if !IsExist(err) {
			return nil, nil, fmt.Errorf("create veth %s/%s: %w", name, v.PodName, err)
		}
		// EEXIST: either name may be taken.
		if _, perr := pod.LinkByName(v.PodName); perr == nil {
			return nil, nil, fmt.Errorf("create veth for %q: %w", v.PodName, ErrPodIfExists)
		}
		if !random || try >= 10 {
			return nil, nil, fmt.Errorf("create veth %s/%s: host name taken: %w", name, v.PodName, err)
		}
	}
	podLink, err := finishVethPair(host, pod, hostLink, v)
	if err != nil {
		// Index 0: the read-back by name failed, so the pair is gone
		// already (a concurrent DEL removed the pod end, and with it ours).
		if hostLink.Index != 0 {
			if derr := host.LinkDel(hostLink); derr != nil && !IsNotFound(derr) {
				err = errors.Join(err, fmt.Errorf("remove %q: %w", hostLink.Name, derr))
			}
		}
		return nil, nil, err
	}
	return hostLink, podLink, nil
}

// finishVethPair is CreateVethPair after the pair exists: index read-back,
// DAD off, master, pod end read-back. It removes nothing; its caller does.
func finishVethPair(host, pod *netlink.Handle, hostLink *netlink.Veth, v Veth) (netlink.Link, error) {
	if hostLink.Index == 0 {
		defer trace.Span("host veth index read-back")()
		l, err := host.LinkByName(hostLink.Name)
		if err != nil {
			return nil, fmt.Errorf("read back %q: %w", hostLink.Name, err)
		}
		hostLink.Index = l.Attrs().Index
	}
	// The host end never takes router advertisements from the pod: on a
	// routed (ptp) end whose node forwards no IPv6, accept_ra=1 would let
	// a pod install the node's default route. The pod end is still down,
	// so nothing has arrived before this write. (The reference plugins
	// do the same.)
	t := trace.Begin()
	err := ipv6Off(hostLink.Name, "accept_ra")
	trace.End("sysctl host veth accept_ra=0", t)
	if err != nil {
		return nil, err
	}
	if v.HostNoDAD {
		if err := ipv6Off(hostLink.Name, "accept_dad"); err != nil {
			return nil, err
		}
		if err := host.LinkSetUp(hostLink); err != nil {
			return nil, fmt.Errorf("set %q up: %w", hostLink.Name, err)
		}
	}
	if v.MasterIndex != 0 {
		t := trace.Begin()
		err := host.LinkSetMasterByIndex(hostLink, v.MasterIndex)
		trace.End("bridge attach (set master)", t)
		if err != nil {
			return nil, fmt.Errorf("attach %q to bridge: %w", hostLink.Name, err)
		}
		hostLink.MasterIndex = v.MasterIndex
	}
	t = trace.Begin()
	podLink, err := pod.LinkByName(v.PodName)
	trace.End("pod link read-back", t)
	if err != nil {
		return nil, fmt.Errorf("read back %q in pod: %w", v.PodName, err)
	}
	return podLink, nil
}

// Bridge describes the bridge EnsureBridge makes or adopts.
type Bridge struct {
	Name    string
	MTU     int  // only applied when the bridge is created
	Promisc bool // turned on when set; never turned off
}

// EnsureBridge returns the bridge named b.Name, creating it (up, with a
// fixed random MAC so that the bridge address does not follow its ports as
// they come and go) when absent. An existing link of another type with that
// name is an error; an existing bridge is adopted and brought up.
// created reports whether this call made it.
func EnsureBridge(h *netlink.Handle, b Bridge) (br *netlink.Bridge, created bool, err error) {
	l, err := h.LinkByName(b.Name)
	if err != nil && !IsNotFound(err) {
		return nil, false, fmt.Errorf("look up %q: %w", b.Name, err)
	}
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = b.Name
		attrs.MTU = b.MTU
		attrs.HardwareAddr = RandomMAC()
		nb := &netlink.Bridge{LinkAttrs: attrs}
		err = h.LinkAdd(nb)
		switch {
		case err == nil:
			if nb.Index == 0 {
				return nil, false, fmt.Errorf("created %q but cannot read its index back", b.Name)
			}
			created = true
			// Before it comes up: we own the bridge's addresses and routes
			// (no router advertisements), and its link-local address must
			// be usable at once (neighbour solicitations need it).
			_ = ipv6Off(b.Name, "accept_ra")
			_ = ipv6Off(b.Name, "accept_dad")
			if err := h.LinkSetUp(nb); err != nil {
				return nb, true, fmt.Errorf("set %q up: %w", b.Name, err)
			}
			nb.Flags |= net.FlagUp
			if b.Promisc {
				if err := h.SetPromiscOn(nb); err != nil {
					return nb, true, fmt.Errorf("promiscuous mode on %q: %w", b.Name, err)
				}
				nb.Promisc = 1
			}
			return nb, true, nil
		case IsExist(err):
			// Lost a race with a concurrent ADD: adopt its bridge.
			if l, err = h.LinkByName(b.Name); err != nil {
				return nil, false, fmt.Errorf("look up %q: %w", b.Name, err)
			}
		default:
			return nil, false, fmt.Errorf("create bridge %q: %w", b.Name, err)
		}
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, false, fmt.Errorf("%q exists but is a %s link, not a bridge", b.Name, l.Type())
	}
	if br.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, false, fmt.Errorf("set %q up: %w", b.Name, err)
		}
	}
	if b.Promisc && br.Promisc == 0 {
		if err := h.SetPromiscOn(br); err != nil {
			return nil, false, fmt.Errorf("promiscuous mode on %q: %w", b.Name, err)
		}
	}
	return br, false, nil
}

// ipv6Off sets net.ipv6.conf.<link>.<key> to 0 for a link in the calling
// thread's namespace. A node with IPv6 disabled has no such file, which is
// fine.
func ipv6Off(link, key string) error {
	err := sysctl.Set("net/ipv6/conf/"+link+"/"+key, "0")
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// WaitOperUp returns once link index is operationally up, or after timeout
// (reporting false). A bridge forwards through a port only after the
// kernel's link-watch work has seen the port's carrier, which runs
// asynchronously after both veth ends are up; on a quiet node it has run by
// the time a plugin gets here and this costs one request, under rtnl
// contention (namespaces being torn down) it can take a while.
func WaitOperUp(h *netlink.Handle, index int, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	sleep := time.Millisecond
	for {
		l, err := h.LinkByIndex(index)
		if err != nil {
			return false, err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(sleep)
		if sleep < 50*time.Millisecond {
			sleep *= 2
		}
	}
}

// DelPodLink deletes ifName in the pod namespace at path. A missing
// namespace or link is not an error (DEL must be idempotent).
func DelPodLink(path, ifName string) error {
	podNS, gone, err := OpenNS(path)
	if err != nil {
		return err
	}
	if gone {
		return nil
	}
	defer podNS.Close()
	pod, err := NewHandleAt(podNS)
	if err != nil {
		return err
	}
	defer pod.Close()
	_, err = DelLinkByName(pod, ifName)
	return err
}

// StartDelPodLink runs DelPodLink in the background and returns a function
// that waits for it. Deleting a veth blocks in the kernel for a grace
// period (tens of ms on a busy VM); DEL releases IPAM and nftables state
// meanwhile. Safe from any thread: the only socket it opens is bound to
// the pod namespace explicitly.
func StartDelPodLink(path, ifName string) (wait func() error) {
	done := make(chan error, 1)
	go func() { done <- DelPodLink(path, ifName) }()
	return func() error { return <-done }
}
