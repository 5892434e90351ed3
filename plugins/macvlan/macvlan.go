// Package macvlan is the CNI "macvlan" plugin: the pod gets a macvlan
// interface on a parent ("master") interface of the node, so it appears on
// the master's L2 network with its own MAC, without a bridge or a veth.
// Same fields and result as the reference plugin (master, mode, mtu, mac,
// linkInContainer; MAC also from CNI_ARGS and runtimeConfig; IPAM optional:
// without it the interface is L2 only).
//
// Kernel objects it owns: the macvlan interface in the pod's namespace
// (created there directly, under a temporary name, then renamed, so its
// name never meets the node's names). IPAM is delegated. A failed ADD
// removes the interface and releases the address. DEL deletes it at once,
// not through a reaper as bridge and ptp do: in the pod's own namespace
// reapers could not coalesce, and a process per DEL halved the throughput
// of parallel DELs (README, Benchmark). What macvlan itself
// cannot do: the node cannot reach its own macvlan children through the
// master (the kernel's macvlan design), and in private and vepa modes pods
// on one master reach each other only through an external switch that
// hairpins.
package macvlan

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/podlink"

	// podnet's IPAM plugins run in-process when delegated to.
	_ "github.com/podnet/podnet/ipam/hostlocal"
	_ "github.com/podnet/podnet/ipam/static"
)

const name = "macvlan"

// Plugin is the macvlan plugin.
var Plugin = podlink.NewPlugin(name, "podnet macvlan: pod interfaces on a node interface's L2 network",
	func(args *skel.CmdArgs) (*Conf, error) { return Decode(args.StdinData, args.Args) }, spec)

func internal(err error, format string, a ...any) error {
	return cnierr.Wrap(cnierr.Internal, name, err, format, a...)
}

// master finds the parent interface through h (the node's or, with
// linkInContainer, the pod's namespace): conf.Master, or the interface of
// the first default route.
func master(h *netlink.Handle, conf *Conf, where string) (netlink.Link, error) {
	if conf.Master != "" {
		l, err := h.LinkByName(conf.Master)
		if err != nil {
			if netlinkx.IsNotFound(err) {
				return nil, cnierr.Field(name, "master", "%q: no such interface in the %s namespace", conf.Master, where)
			}
			return nil, internal(err, "find master %q", conf.Master)
		}
		return l, nil
	}
	l, err := netlinkx.DefaultRouteLink(h)
	if err != nil {
		return nil, internal(err, "find the default route's interface")
	}
	if l == nil {
		return nil, cnierr.Field(name, "master", "not set, and the %s namespace has no default route to take it from", where)
	}
	return l, nil
}

// spec is the attachment for podlink: the macvlan is made on the master,
// in the node's namespace (created straight into the pod's) or, with
// linkInContainer, in the pod's.
func spec(conf *Conf) podlink.Spec {
	return podlink.Spec{Plugin: name, Conf: &conf.NetConf, Kind: "macvlan", Check: func(args *skel.CmdArgs, pl *cniplugin.PodLink) error {
		return checkMacvlan(args, conf, pl)
	}, Create: func(h *cniplugin.Pod, tmp string) error {
		creator, where := h.Node, "node's"
		if conf.LinkInContainer {
			creator, where = h.Pod, "pod's"
		}
		m, err := master(creator, conf, where)
		if err != nil {
			return err
		}
		if conf.MTU > m.Attrs().MTU {
			return cnierr.Field(name, "mtu", "%d is above the MTU %d of master %q", conf.MTU, m.Attrs().MTU, m.Attrs().Name)
		}
		attrs := netlink.LinkAttrs{Name: tmp, MTU: conf.MTU, ParentIndex: m.Attrs().Index, HardwareAddr: conf.MAC}
		if !conf.LinkInContainer {
			attrs.Namespace = netlink.NsFd(int(h.NS))
		}
		if err := creator.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: conf.LinkMode}); err != nil {
			if errors.Is(err, unix.EINVAL) && conf.LinkMode == netlink.MACVLAN_MODE_PASSTHRU {
				return cnierr.Field(name, "mode", "passthru on master %q refused by the kernel (one passthru interface per master, and none beside other modes): %v", m.Attrs().Name, err)
			}
			if errors.Is(err, unix.EADDRINUSE) && conf.MAC != nil {
				return cnierr.Field(name, "mac", "%s is already used on master %q", conf.MAC, m.Attrs().Name)
			}
			return internal(err, "create a macvlan on %q", m.Attrs().Name)
		}
		return nil
	}}
}

// checkMacvlan is CHECK's part for macvlan: the configured mode, on the
// master.
func checkMacvlan(args *skel.CmdArgs, conf *Conf, pl *cniplugin.PodLink) error {
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	mv := pl.Link.(*netlink.Macvlan)
	if mv.Mode != conf.LinkMode {
		return fail("interface %q is in mode %s, config says %s", args.IfName, ModeName(mv.Mode), ModeName(conf.LinkMode))
	}
	h, where := pl.Handle, "pod's"
	if !conf.LinkInContainer {
		node, err := netlinkx.NewHandle()
		if err != nil {
			return internal(err, "")
		}
		defer node.Close()
		h, where = node, "node's"
	}
	m, err := master(h, conf, where)
	if err != nil {
		return fail("%v", err)
	}
	if mv.ParentIndex != m.Attrs().Index {
		return fail("interface %q is not on master %q", args.IfName, m.Attrs().Name)
	}
	return nil
}
