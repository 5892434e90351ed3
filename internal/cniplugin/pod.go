package cniplugin

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/rollback"
	"github.com/podnet/podnet/internal/trace"
)

// Pod is what a plugin that wires a pod's interface (bridge, ptp) works
// with during ADD: the pod's network namespace, a netlink handle in the
// node's namespace (the calling thread's) and one in the pod's.
type Pod struct {
	NS   netns.NsHandle
	Node *netlink.Handle
	Pod  *netlink.Handle
}

// OpenPod validates CNI_IFNAME and CNI_NETNS and opens the pod's namespace
// and both handles, with the CNI error a runtime expects for each failure:
// code 4 naming CNI_IFNAME or CNI_NETNS for bad arguments (including a
// namespace that is gone), 999 for the kernel refusing a socket. The caller
// must Close the result.
func OpenPod(plugin string, args *skel.CmdArgs) (*Pod, error) {
	defer trace.Span("open pod netns + netlink handles")()
	if err := netlinkx.ValidIfName(args.IfName); err != nil {
		return nil, cnierr.Env(plugin, "CNI_IFNAME", "%q %v", args.IfName, err)
	}
	ns, gone, err := netlinkx.OpenNS(args.Netns)
	if err != nil {
		return nil, cnierr.Env(plugin, "CNI_NETNS", "%v", err)
	}
	if gone {
		return nil, cnierr.Env(plugin, "CNI_NETNS", "%q is not a network namespace (anymore)", args.Netns)
	}
	p := &Pod{NS: ns}
	if p.Node, err = netlinkx.NewHandle(); err != nil {
		p.Close()
		return nil, cnierr.Wrap(cnierr.Internal, plugin, err, "")
	}
	if p.Pod, err = netlinkx.NewHandleAt(ns); err != nil {
		p.Close()
		return nil, cnierr.Wrap(cnierr.Internal, plugin, err, "")
	}
	return p, nil
}

// Close releases the handles and the namespace.
func (p *Pod) Close() {
	if p.Pod != nil {
		p.Pod.Close()
	}
	if p.Node != nil {
		p.Node.Close()
	}
	p.NS.Close()
}

// CreateVeth creates the attachment's veth pair (v.PodName in the pod, a
// generated name on the node) and pushes its removal onto undo. A pod
// interface of that name left marked by an earlier DEL whose reaper has not
// run yet is removed and the creation retried; any other existing
// interface is code 4 naming CNI_IFNAME.
func (p *Pod) CreateVeth(plugin string, v netlinkx.Veth, undo *rollback.Stack) (*netlink.Veth, netlink.Link, error) {
	hostVeth, podLink, err := netlinkx.CreateVethPair(p.Node, p.Pod, v)
	if errors.Is(err, netlinkx.ErrPodIfExists) {
		if reaped, rerr := netlinkx.ReapPodLinkIfMarked(p.Node, p.Pod, v.PodName); rerr == nil && reaped {
			hostVeth, podLink, err = netlinkx.CreateVethPair(p.Node, p.Pod, v)
		}
	}
	if err != nil {
		if errors.Is(err, netlinkx.ErrPodIfExists) {
			return nil, nil, cnierr.New(cnierr.InvalidEnv, plugin, "CNI_IFNAME %q: %v", v.PodName, err)
		}
		return nil, nil, cnierr.Wrap(cnierr.Internal, plugin, err, "")
	}
	node := p.Node
	*undo = append(*undo, func() error {
		if err := node.LinkDel(hostVeth); err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("remove %s: %w", hostVeth.Name, err)
		}
		return nil
	})
	return hostVeth, podLink, nil
}

// PodLink is the pod side of an attachment as CHECK sees it: a handle in
// the pod's namespace and the pod's interface.
type PodLink struct {
	ns     netns.NsHandle
	Handle *netlink.Handle
	Link   netlink.Link
	// Iface is the pod's interface in prevResult.
	Iface *current.Interface
}

// CheckPod is the common start of a CHECK: it finds args.IfName in sandbox
// args.Netns among prev's interfaces, opens the pod's namespace and finds
// the link there, which must be of kind (a netlink type such as "veth" or
// "macvlan"; "" for any) and have prevResult's MAC. Every mismatch is a CHECK failure
// naming what differs. The caller must Close the result.
func CheckPod(plugin string, args *skel.CmdArgs, prev *current.Result, kind string) (*PodLink, error) {
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, plugin, "CHECK: "+format, a...)
	}
	var iface *current.Interface
	for _, i := range prev.Interfaces {
		if i.Name == args.IfName && i.Sandbox == args.Netns {
			iface = i
		}
	}
	if iface == nil {
		return nil, fail("prevResult has no interface %q in sandbox %q", args.IfName, args.Netns)
	}
	ns, gone, err := netlinkx.OpenNS(args.Netns)
	if err != nil {
		return nil, fail("%v", err)
	}
	if gone {
		return nil, fail("netns %q is gone", args.Netns)
	}
	p := &PodLink{ns: ns, Iface: iface}
	if p.Handle, err = netlinkx.NewHandleAt(ns); err != nil {
		p.Close()
		return nil, cnierr.Wrap(cnierr.Internal, plugin, err, "")
	}
	l, err := p.Handle.LinkByName(args.IfName)
	if err != nil {
		p.Close()
		return nil, fail("interface %q in %s: %v", args.IfName, args.Netns, err)
	}
	if kind != "" && l.Type() != kind {
		p.Close()
		return nil, fail("interface %q in %s is a %s link, not a %s", args.IfName, args.Netns, l.Type(), kind)
	}
	if iface.Mac != "" && iface.Mac != l.Attrs().HardwareAddr.String() {
		p.Close()
		return nil, fail("interface %q has MAC %s, prevResult says %s", args.IfName, l.Attrs().HardwareAddr, iface.Mac)
	}
	p.Link = l
	return p, nil
}

// CheckL3 checks that the pod's link carries every prevResult address
// meant for it (those naming its interface or none) and that the pod's
// namespace has every prevResult route, and extra.
func (p *PodLink) CheckL3(plugin string, prev *current.Result, extra ...netlinkx.RouteWant) error {
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, plugin, "CHECK: "+format, a...)
	}
	var want []net.IPNet
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(prev.Interfaces) && prev.Interfaces[*ipc.Interface] != p.Iface {
			continue
		}
		want = append(want, ipc.Address)
	}
	if err := netlinkx.CheckAddrs(p.Handle, p.Link, want); err != nil {
		return fail("%v", err)
	}
	routes := extra
	for _, r := range prev.Routes {
		dst := r.Dst
		routes = append(routes, netlinkx.RouteWant{Dst: &dst, GW: r.GW})
	}
	if err := netlinkx.CheckRoutes(p.Handle, routes); err != nil {
		return fail("in %s: %v", p.Iface.Sandbox, err)
	}
	return nil
}

// Close releases the handle and the namespace.
func (p *PodLink) Close() {
	if p.Handle != nil {
		p.Handle.Close()
	}
	p.ns.Close()
}
