package cniplugin

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/netlinkx"
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
