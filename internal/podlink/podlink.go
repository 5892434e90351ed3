// Package podlink is what the plugins whose only device is the pod's own
// interface (macvlan, tap) share: each creates its device in the pod's
// namespace under a temporary name in its own way, and everything after
// that is the same — rename to CNI_IFNAME, IPAM, addresses and routes, the
// result, and DEL, CHECK, GC and STATUS. There is no node side to undo.
package podlink

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/rollback"
)

// Spec is one attachment as the plugin parsed it.
type Spec struct {
	Plugin string
	Conf   *types.NetConf // IPAM.Type "" = L2 only; DNS replaces IPAM's when set
	// Create makes the pod's interface, named tmp, in the pod's namespace
	// (h.NS). Its errors are returned as they are: make them CNI errors
	// naming the field where the config is at fault.
	Create func(h *cniplugin.Pod, tmp string) error
	// Kind is the netlink kind of the pod's interface ("macvlan", "tuntap";
	// "" for any).
	Kind string
	// Release, when set, gives the pod's interface back instead of
	// deleting it (host-device): on a failed ADD and on DEL. It runs with
	// a handle in the pod's namespace; node is the node's namespace.
	Release func(pod *netlink.Handle, node vns.NsHandle, link netlink.Link) error
	// Check, when set, adds the plugin's own CHECK of the pod's interface.
	Check func(args *skel.CmdArgs, pl *cniplugin.PodLink) error
}

// NewPlugin is the plugin typ whose verbs are this package's: decode turns
// the CNI arguments into the plugin's config without ADD's checks (its
// errors are returned as they are), and spec turns that config into the
// attachment's Spec. ADD, CHECK and STATUS also run the config's Validate;
// DEL and GC do not, so a config ADD refused still cleans up (docs/del.md).
func NewPlugin[C cniplugin.Validator](typ, about string, decode func(args *skel.CmdArgs) (C, error), spec func(C) Spec) *cniplugin.Plugin {
	specOf := func(args *skel.CmdArgs, validate bool) (Spec, error) {
		c, err := decode(args)
		if err == nil && validate {
			err = c.Validate()
		}
		if err != nil {
			return Spec{}, err
		}
		return spec(c), nil
	}
	with := func(validate bool, verb func(*skel.CmdArgs, Spec) error) func(*skel.CmdArgs) error {
		return func(args *skel.CmdArgs) error {
			s, err := specOf(args, validate)
			if err != nil {
				return err
			}
			return verb(args, s)
		}
	}
	return &cniplugin.Plugin{
		Type:  typ,
		About: about,
		Add: func(args *skel.CmdArgs) (types.Result, error) {
			s, err := specOf(args, true)
			if err != nil {
				return nil, err
			}
			return Add(args, s)
		},
		Check:  with(true, Check),
		Del:    with(false, Del),
		GC:     with(false, GC),
		Status: with(true, Status),
	}
}

// Add runs ADD: Create under a temporary name, rename to CNI_IFNAME (code
// 4 when that name is taken), IPAM, then the interface's addresses, routes
// and link up. Everything it made is undone when it fails.
func Add(args *skel.CmdArgs, s Spec) (_ *current.Result, err error) {
	h, err := cniplugin.OpenPod(s.Plugin, args)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var undo rollback.Stack
	defer func() { undo.Unwind(s.Plugin, &err) }()
	internal := func(err error, format string, a ...any) error {
		return cnierr.Wrap(cnierr.Internal, s.Plugin, err, format, a...)
	}

	tmp := netlinkx.RandomHostVethName()
	if err := s.Create(h, tmp); err != nil {
		return nil, err
	}
	link, err := h.Pod.LinkByName(tmp)
	if err != nil {
		return nil, internal(err, "find the new interface %s in the pod", tmp)
	}
	undo = append(undo, func() error {
		if s.Release != nil {
			// By index: it may carry the temporary name or CNI_IFNAME.
			cur, err := h.Pod.LinkByIndex(link.Attrs().Index)
			if err != nil {
				return fmt.Errorf("give back %s: %w", args.IfName, err)
			}
			here, err := vns.Get()
			if err != nil {
				return err
			}
			defer here.Close()
			return s.Release(h.Pod, here, cur)
		}
		if err := h.Pod.LinkDel(link); err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("remove %s in the pod: %w", args.IfName, err)
		}
		return nil
	})
	if err := h.Pod.LinkSetName(link, args.IfName); err != nil {
		if netlinkx.IsExist(err) {
			return nil, cnierr.New(cnierr.InvalidEnv, s.Plugin, "CNI_IFNAME %q: an interface of that name already exists in %s", args.IfName, args.Netns)
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
	// The pod shares an L2 network with other hosts: duplicate address
	// detection stays on, as in the reference.
	p := netlinkx.PodIface{Link: link, DAD: true, ARPNotify: true}
	if ipam := s.Conf.IPAM.Type; ipam != "" {
		ctx := context.Background()
		ipamRes, err := delegate.Add(ctx, ipam, args)
		if err != nil {
			return nil, err
		}
		undo = append(undo, func() error { return delegate.Del(ctx, ipam, args) })
		if len(ipamRes.IPs) == 0 {
			return nil, cnierr.New(cnierr.InvalidConfig, s.Plugin, "IPAM %q returned no addresses", ipam)
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
	if d := s.Conf.DNS; d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != "" {
		res.DNS = d
	}
	return res, nil
}

// Del deletes the pod's interface (a namespace or interface already gone
// is fine), then releases the address, once nothing uses it.
func Del(args *skel.CmdArgs, s Spec) error {
	var errs []error
	switch {
	case args.Netns == "":
	case s.Release != nil:
		if err := release(args, s); err != nil {
			errs = append(errs, err)
		}
	default:
		if err := netlinkx.DelPodLink(args.Netns, args.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	if ipam := s.Conf.IPAM.Type; ipam != "" {
		if err := delegate.Del(context.Background(), ipam, args); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return cnierr.Wrap(cnierr.Internal, s.Plugin, errors.Join(errs...), "DEL")
	}
	return nil
}

// release is DEL's s.Release of CNI_IFNAME in the pod's namespace; a
// namespace or interface already gone is fine.
func release(args *skel.CmdArgs, s Spec) error {
	podNS, gone, err := netlinkx.OpenNS(args.Netns)
	if err != nil || gone {
		return err
	}
	defer podNS.Close()
	pod, err := netlinkx.NewHandleAt(podNS)
	if err != nil {
		return err
	}
	defer pod.Close()
	l, err := pod.LinkByName(args.IfName)
	if err != nil {
		if netlinkx.IsNotFound(err) {
			return nil
		}
		return err
	}
	here, err := vns.Get()
	if err != nil {
		return err
	}
	defer here.Close()
	return s.Release(pod, here, l)
}

// Check runs CHECK: IPAM's CHECK, then the pod's interface must be of
// s.Kind with prevResult's MAC, pass s.Check, and carry prevResult's
// addresses and routes.
func Check(args *skel.CmdArgs, s Spec) error {
	prev, err := cniplugin.RequirePrevResult(s.Plugin, s.Conf)
	if err != nil {
		return err
	}
	if ipam := s.Conf.IPAM.Type; ipam != "" {
		if err := delegate.Check(context.Background(), ipam, args); err != nil {
			return err
		}
	}
	pl, err := cniplugin.CheckPod(s.Plugin, args, prev, s.Kind)
	if err != nil {
		return err
	}
	defer pl.Close()
	if s.Check != nil {
		if err := s.Check(args, pl); err != nil {
			return err
		}
	}
	return pl.CheckL3(s.Plugin, prev)
}

// GC and Status pass the verb to IPAM; without IPAM there is nothing to do.
func GC(args *skel.CmdArgs, s Spec) error {
	if s.Conf.IPAM.Type == "" {
		return nil
	}
	return delegate.GC(context.Background(), s.Conf.IPAM.Type, args)
}

// Status: see GC.
func Status(args *skel.CmdArgs, s Spec) error {
	if s.Conf.IPAM.Type == "" {
		return nil
	}
	return delegate.Status(context.Background(), s.Conf.IPAM.Type, args)
}
