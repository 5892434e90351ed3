// Package tap is the CNI "tap" plugin: the pod gets a persistent tap
// device, for a VM or a user-space network stack in the pod to attach to
// (Kata Containers, KubeVirt and friends). Same fields and result as the
// reference plugin (multiQueue, mtu, mac, owner, group; MAC also from
// CNI_ARGS and runtimeConfig; IPAM optional). selinuxContext is refused
// with code 2: this node has no SELinux to label with.
//
// The tap is made with the tun driver's ioctls (TUNSETIFF, TUNSETOWNER,
// TUNSETGROUP, TUNSETPERSIST) on /dev/net/tun opened inside the pod's
// namespace, which is where the driver creates it. The netlink library's
// tuntap support always sets an owner and group (root when unset); the
// reference execs `ip tuntap` to leave them unset, and podnet execs no ip.
// Everything after the device exists is internal/podlink's.
package tap

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/podlink"

	// podnet's IPAM plugins run in-process when delegated to.
	_ "github.com/podnet/podnet/ipam/hostlocal"
	_ "github.com/podnet/podnet/ipam/static"
)

const name = "tap"

// Plugin is the tap plugin.
var Plugin = podlink.NewPlugin(name, "podnet tap: a persistent tap device in the pod",
	func(args *skel.CmdArgs) (*Conf, error) { return Decode(args.StdinData, args.Args) }, spec)

func internal(err error, format string, a ...any) error {
	return cnierr.Wrap(cnierr.Internal, name, err, format, a...)
}

// Flags of the tap: Ethernet frames, no packet-info header, no virtio-net
// header: what `ip tuntap add mode tap` makes, as the reference does when
// no owner and group are given. Whoever attaches sets both for its queue.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI

// createTap makes the persistent tap ifName in the calling thread's network
// namespace.
func createTap(ifName string, c *Conf) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifName)
	if err != nil {
		return err
	}
	flags := uint16(tapFlags)
	if c.MultiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if c.Owner != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, int(*c.Owner)); err != nil {
			return fmt.Errorf("TUNSETOWNER: %w", err)
		}
	}
	if c.Group != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, int(*c.Group)); err != nil {
			return fmt.Errorf("TUNSETGROUP: %w", err)
		}
	}
	// Persistent: the device outlives this descriptor, until DEL.
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	return nil
}

func spec(conf *Conf) podlink.Spec {
	return podlink.Spec{Plugin: name, Conf: &conf.NetConf, Kind: "tuntap", Check: func(args *skel.CmdArgs, pl *cniplugin.PodLink) error {
		return checkTap(args, conf, pl)
	}, Create: func(h *cniplugin.Pod, tmp string) error {
		if err := netns.DoHandle(h.NS, func() error { return createTap(tmp, conf) }); err != nil {
			return internal(err, "create tap %s in the pod", tmp)
		}
		l, err := h.Pod.LinkByName(tmp)
		if err != nil {
			return internal(err, "find tap %s", tmp)
		}
		// Gone with it if what follows fails: podlink undoes from here.
		fail := func(err error, what string) error {
			_ = h.Pod.LinkDel(l)
			return internal(err, "%s", what)
		}
		if conf.MTU > 0 {
			if err := h.Pod.LinkSetMTU(l, conf.MTU); err != nil {
				return fail(err, fmt.Sprintf("set MTU %d", conf.MTU))
			}
		}
		if conf.MAC != nil {
			if err := h.Pod.LinkSetHardwareAddr(l, conf.MAC); err != nil {
				return fail(err, fmt.Sprintf("set MAC %s", conf.MAC))
			}
		}
		if conf.Bridge != "" {
			br, err := h.Pod.LinkByName(conf.Bridge)
			if err != nil || br.Type() != "bridge" {
				_ = h.Pod.LinkDel(l)
				return cnierr.Field(name, "bridge", "no bridge %q in the pod's network namespace: create it there before ADD (the tap becomes its port)", conf.Bridge)
			}
			if err := h.Pod.LinkSetMaster(l, br); err != nil {
				return fail(err, fmt.Sprintf("attach to bridge %s", conf.Bridge))
			}
		}
		return nil
	}}
}

// checkTap is CHECK's part for tap: a tap, multi-queue as configured, with
// the configured owner and group, a port of the configured bridge.
func checkTap(args *skel.CmdArgs, conf *Conf, pl *cniplugin.PodLink) error {
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	t := pl.Link.(*netlink.Tuntap)
	if t.Mode != netlink.TUNTAP_MODE_TAP {
		return fail("interface %q is a tun, not a tap", args.IfName)
	}
	if mq := t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0; mq != conf.MultiQueue {
		return fail("interface %q multi-queue is %v, config says %v", args.IfName, mq, conf.MultiQueue)
	}
	if conf.Bridge != "" {
		br, err := pl.Handle.LinkByIndex(t.MasterIndex)
		if t.MasterIndex == 0 || err != nil || br.Attrs().Name != conf.Bridge {
			return fail("interface %q is not a port of bridge %q", args.IfName, conf.Bridge)
		}
	}
	for _, id := range []struct {
		field string
		want  *uint32
		have  uint32
	}{{"owner", conf.Owner, t.Owner}, {"group", conf.Group, t.Group}} {
		if id.want != nil && *id.want != id.have {
			return fail("interface %q %s is %d, config says %d", args.IfName, id.field, id.have, *id.want)
		}
	}
	return nil
}
