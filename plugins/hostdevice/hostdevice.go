// Package hostdevice is the CNI "host-device" plugin: an existing
// interface of the node (named by "device" or "hwaddr") is moved into the
// pod and renamed CNI_IFNAME; DEL gives it back under its old name. Same
// fields and result as the reference plugin; like the reference, the old
// name travels in the interface's alias, so either plugin can DEL what the
// other ADDed. Finding devices by PCI address or sysfs path (pciBusID,
// runtimeConfig.deviceID, kernelpath, DPDK) is refused with code 2: this
// node has no PCI network device to test it with.
//
// Everything after the move is internal/podlink's, with Release giving the
// device back instead of deleting it.
package hostdevice

import (
	"bytes"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/podlink"

	// podnet's IPAM plugins run in-process when delegated to.
	_ "github.com/podnet/podnet/ipam/hostlocal"
	_ "github.com/podnet/podnet/ipam/static"
)

const name = "host-device"

// Plugin is the host-device plugin.
var Plugin = podlink.NewPlugin(name, "podnet host-device: a node interface moved into the pod",
	func(args *skel.CmdArgs) (*Conf, error) { return Decode(args.StdinData) }, spec)

func internal(err error, format string, a ...any) error {
	return cnierr.Wrap(cnierr.Internal, name, err, format, a...)
}

// find returns the node's interface the config names.
func find(h *netlink.Handle, c *Conf) (netlink.Link, error) {
	if c.Device != "" {
		l, err := h.LinkByName(c.Device)
		if netlinkx.IsNotFound(err) {
			return nil, cnierr.Field(name, "device", "%q: no such interface on the node", c.Device)
		}
		if err != nil {
			return nil, internal(err, "find %q", c.Device)
		}
		return l, nil
	}
	links, err := netlinkx.Retry(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return nil, internal(err, "list the node's interfaces")
	}
	for _, l := range links {
		if bytes.Equal(l.Attrs().HardwareAddr, c.MAC) {
			return l, nil
		}
	}
	return nil, cnierr.Field(name, "hwaddr", "no interface on the node has MAC %s", c.MAC)
}

func spec(conf *Conf) podlink.Spec {
	return podlink.Spec{Plugin: name, Conf: &conf.NetConf, Release: giveBack,
		Create: func(h *cniplugin.Pod, tmp string) error {
			l, err := find(h.Node, conf)
			if err != nil {
				return err
			}
			if l.Attrs().Flags&net.FlagLoopback != 0 {
				return cnierr.Field(name, "device", "%q is the node's loopback", l.Attrs().Name)
			}
			orig := l.Attrs().Name
			// Down to rename; the old name in the alias (as the reference
			// keeps it) for DEL; a temporary name so the move cannot
			// collide with a name in the pod.
			if err := h.Node.LinkSetDown(l); err != nil {
				return internal(err, "set %s down", orig)
			}
			if err := h.Node.LinkSetAlias(l, orig); err != nil {
				return internal(err, "keep the name of %s in its alias", orig)
			}
			if err := h.Node.LinkSetName(l, tmp); err != nil {
				return internal(err, "rename %s", orig)
			}
			if err := h.Node.LinkSetNsFd(l, int(h.NS)); err != nil {
				_ = h.Node.LinkSetName(l, orig)
				return internal(err, "move %s into the pod", orig)
			}
			return nil
		}}
}

// giveBack moves link from the pod (pod's handle) back to the node's
// namespace under the name its alias keeps, down, as the reference does.
// It travels under a temporary name, so neither the pod's names (it may
// have an interface of the old name) nor the node's (it has its own eth0)
// collide on the way.
func giveBack(pod *netlink.Handle, node vns.NsHandle, link netlink.Link) error {
	orig := link.Attrs().Alias
	if orig == "" || netlinkx.ValidIfName(orig) != nil {
		return fmt.Errorf("%s has no original name in its alias (%q): left in the pod", link.Attrs().Name, orig)
	}
	nh, err := netlinkx.NewHandleAt(node)
	if err != nil {
		return err
	}
	defer nh.Close()
	ifName := link.Attrs().Name
	if err := pod.LinkSetDown(link); err != nil {
		return fmt.Errorf("set %s down: %w", ifName, err)
	}
	tmp := netlinkx.RandomHostVethName()
	if err := pod.LinkSetName(link, tmp); err != nil {
		return fmt.Errorf("rename %s: %w", ifName, err)
	}
	if err := pod.LinkSetNsFd(link, int(node)); err != nil {
		// Leave it as DEL found it, so DEL can be retried.
		_ = pod.LinkSetName(link, ifName)
		return fmt.Errorf("move %s back to the node: %w", orig, err)
	}
	l, err := nh.LinkByName(tmp)
	if err != nil {
		return fmt.Errorf("find %s (%s) back on the node: %w", tmp, orig, err)
	}
	if err := nh.LinkSetName(l, orig); err != nil {
		return fmt.Errorf("rename %s back to %s on the node: %w", tmp, orig, err)
	}
	return nil
}
