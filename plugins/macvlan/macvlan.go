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
// removes the interface and releases the address. What macvlan itself
// cannot do: the node cannot reach its own macvlan children through the
// master (the kernel's macvlan design), and in private and vepa modes pods
// on one master reach each other only through an external switch that
// hairpins.
package macvlan

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/rollback"
)

const name = "macvlan"

// Plugin is the macvlan plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet macvlan: pod interfaces on a node interface's L2 network",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

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

func add(args *skel.CmdArgs) (_ types.Result, err error) {
	conf, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return nil, err
	}
	h, err := cniplugin.OpenPod(name, args)
	if err != nil {
		return nil, err
	}
	defer h.Close()

	var undo rollback.Stack
	defer func() { undo.Unwind(name, &err) }()

	// The master lives in the node's namespace, or with linkInContainer in
	// the pod's; the macvlan is created from there.
	creator, where := h.Node, "node's"
	if conf.LinkInContainer {
		creator, where = h.Pod, "pod's"
	}
	m, err := master(creator, conf, where)
	if err != nil {
		return nil, err
	}
	if conf.MTU > m.Attrs().MTU {
		return nil, cnierr.Field(name, "mtu", "%d is above the MTU %d of master %q", conf.MTU, m.Attrs().MTU, m.Attrs().Name)
	}

	tmp := netlinkx.RandomHostVethName()
	attrs := netlink.LinkAttrs{Name: tmp, MTU: conf.MTU, ParentIndex: m.Attrs().Index, HardwareAddr: conf.MAC}
	if !conf.LinkInContainer {
		attrs.Namespace = netlink.NsFd(int(h.NS))
	}
	if err := creator.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: conf.LinkMode}); err != nil {
		if errors.Is(err, unix.EINVAL) && conf.LinkMode == netlink.MACVLAN_MODE_PASSTHRU {
			return nil, cnierr.Field(name, "mode", "passthru on master %q refused by the kernel (one passthru interface per master, and none beside other modes): %v", m.Attrs().Name, err)
		}
		if errors.Is(err, unix.EADDRINUSE) && conf.MAC != nil {
			return nil, cnierr.Field(name, "mac", "%s is already used on master %q", conf.MAC, m.Attrs().Name)
		}
		return nil, internal(err, "create a macvlan on %q", m.Attrs().Name)
	}
	link, err := h.Pod.LinkByName(tmp)
	if err != nil {
		return nil, internal(err, "find the new macvlan %s in the pod", tmp)
	}
	undo = append(undo, func() error {
		if err := h.Pod.LinkDel(link); err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("remove %s in the pod: %w", args.IfName, err)
		}
		return nil
	})
	if err := h.Pod.LinkSetName(link, args.IfName); err != nil {
		if netlinkx.IsExist(err) {
			return nil, cnierr.New(cnierr.InvalidEnv, name, "CNI_IFNAME %q: an interface of that name already exists in %s", args.IfName, args.Netns)
		}
		return nil, internal(err, "rename %s to %s", tmp, args.IfName)
	}
	if link, err = h.Pod.LinkByName(args.IfName); err != nil {
		return nil, internal(err, "find %s in the pod", args.IfName)
	}

	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: args.IfName, Mac: link.Attrs().HardwareAddr.String(), Sandbox: args.Netns}},
	}
	p := netlinkx.PodIface{Link: link, DAD: true, ARPNotify: true}
	if conf.L3() {
		ctx := context.Background()
		ipamRes, err := delegate.Add(ctx, conf.IPAM.Type, args)
		if err != nil {
			return nil, err
		}
		undo = append(undo, func() error { return delegate.Del(ctx, conf.IPAM.Type, args) })
		if len(ipamRes.IPs) == 0 {
			return nil, cnierr.New(cnierr.InvalidConfig, name, "IPAM %q returned no addresses", conf.IPAM.Type)
		}
		res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
		var gw4, gw6 net.IP
		for _, ipc := range res.IPs {
			ipc.Interface = current.Int(0)
			p.Addrs = append(p.Addrs, ipc.Address)
			switch {
			case ipc.Gateway == nil:
			case ipc.Address.IP.To4() != nil && gw4 == nil:
				gw4 = ipc.Gateway
			case ipc.Address.IP.To4() == nil && gw6 == nil:
				gw6 = ipc.Gateway
			}
		}
		for _, r := range res.Routes {
			gw := gw4
			if r.Dst.IP.To4() == nil {
				gw = gw6
			}
			p.Routes = append(p.Routes, netlinkx.RouteFromCNI(r, link.Attrs().Index, gw))
		}
	}
	if err := netlinkx.ConfigurePod(h.Pod, h.NS, p); err != nil {
		return nil, internal(err, "configure %s in %s", args.IfName, args.Netns)
	}
	if d := conf.DNS; d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != "" {
		res.DNS = d
	}
	return res, nil
}

// del removes the pod's macvlan (a namespace or interface already gone is
// fine), then releases the address: only once nothing uses it.
func del(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	var errs []error
	if args.Netns != "" {
		if err := netlinkx.DelPodLink(args.Netns, args.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	if conf.L3() {
		if err := delegate.Del(context.Background(), conf.IPAM.Type, args); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return cnierr.Wrap(cnierr.Internal, name, errors.Join(errs...), "DEL")
	}
	return nil
}

// check verifies the pod's interface (a macvlan of the configured mode on
// the master, with prevResult's MAC), its addresses and routes.
func check(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &conf.NetConf)
	if err != nil {
		return err
	}
	if conf.L3() {
		if err := delegate.Check(context.Background(), conf.IPAM.Type, args); err != nil {
			return err
		}
	}
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	pl, err := cniplugin.CheckPod(name, args, prev, "macvlan")
	if err != nil {
		return err
	}
	defer pl.Close()
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
	return pl.CheckL3(name, prev)
}

func gc(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if !conf.L3() {
		return nil
	}
	return delegate.GC(context.Background(), conf.IPAM.Type, args)
}

func status(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if !conf.L3() {
		return nil
	}
	return delegate.Status(context.Background(), conf.IPAM.Type, args)
}
