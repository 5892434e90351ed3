// Package ptp is the CNI "ptp" plugin: a veth pair per pod, routed rather
// than bridged. The pod keeps its IPAM address (with the IPAM prefix, but
// without the kernel's on-link prefix route) and reaches everything through
// the gateway: a link-scope /32 (/128) route to the gateway over the veth,
// the pod subnet and the IPAM routes via it. The node side of the veth
// carries the gateway address as a /32 (/128) and a host route to the pod,
// and forwarding is turned on, so pods on one node reach each other and the
// node through the node's routing table. This is the reference plugin's
// behaviour, in fewer netlink requests (IFA_F_NOPREFIXROUTE instead of
// adding and deleting the prefix route).
//
// Kernel objects it owns: the host veth of each attachment (the pod end goes
// with it; its addresses and routes go with the device; DEL only marks it
// and sets it down, which drops its routes, a reaper process deletes it off the
// runtime's critical path), and the rules
// tagged with the attachment in nftables table "inet podnet-ptp"
// (masquerade). IPAM is delegated. A failed ADD undoes its steps in reverse.
package ptp

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/rollback"

	// podnet's IPAM plugins run in-process when delegated to.
	_ "github.com/podnet/podnet/ipam/hostlocal"
	_ "github.com/podnet/podnet/ipam/static"
)

const name = "ptp"

// Table is the nftables (inet) table holding the masquerade rules.
const Table = "podnet-ptp"

// MasqChain is where the plugin's masquerade rules live.
var MasqChain = nft.MasqChain(Table)

// Plugin is the ptp plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet ptp: routed veth pairs",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

// Conf is the ptp configuration (the reference plugin's fields).
type Conf struct {
	types.NetConf
	IPMasq        bool    `json:"ipMasq"`
	IPMasqBackend *string `json:"ipMasqBackend,omitempty"`
	MTU           int     `json:"mtu"`
}

// Parse decodes and validates stdin: code 6 for JSON of the wrong type, 7
// for a bad value naming the field. It is what ADD, CHECK and STATUS use.
func Parse(stdin []byte) (*Conf, error) { return cniplugin.Validated(Decode(stdin)) }

// Decode reads stdin without ADD's checks: what DEL and GC need (the
// network name, ipMasq, the IPAM type; docs/del.md). A negative mtu means
// the kernel's default, as in the reference plugin.
func Decode(stdin []byte) (*Conf, error) {
	c := &Conf{}
	if err := cniplugin.Decode(name, stdin, c); err != nil {
		return nil, err
	}
	if c.MTU < 0 {
		c.MTU = 0
	}
	return c, nil
}

// Validate makes ADD's checks.
func (c *Conf) Validate() error {
	if c.IPAM.Type == "" {
		return cnierr.Field(name, "ipam", "required: ptp needs an IPAM plugin (e.g. {\"type\": \"host-local\", ...})")
	}
	if err := netlinkx.ValidMTU(c.MTU); err != nil {
		return cnierr.Field(name, "mtu", "%v", err)
	}
	if b := c.IPMasqBackend; b != nil && *b != "nftables" && *b != "iptables" {
		return cnierr.Field(name, "ipMasqBackend", "%q is neither \"nftables\" nor \"iptables\"", *b)
	}
	return nil
}

// Plan completes an IPAM result for ptp (pure): addresses point at the pod
// veth (index 1) and a missing gateway becomes the subnet's first address.
func Plan(res *current.Result) error {
	if len(res.IPs) == 0 {
		return fmt.Errorf("IPAM returned no addresses")
	}
	for _, ipc := range res.IPs {
		if ipc.Address.IP == nil || ipc.Address.Mask == nil {
			return fmt.Errorf("IPAM returned an address without prefix: %v", ipc)
		}
		if v4 := ipc.Address.IP.To4(); v4 != nil && len(ipc.Address.Mask) == net.IPv4len {
			ipc.Address.IP = v4
		}
		ipc.Interface = current.Int(1)
		if ipc.Gateway == nil {
			ipc.Gateway = firstIP(ipc.Address)
		}
		if ipc.Gateway.Equal(ipc.Address.IP) {
			return fmt.Errorf("IPAM gave the pod %s, which is its gateway address", ipc.Address.IP)
		}
	}
	return nil
}

func firstIP(ipn net.IPNet) net.IP {
	sub := netlinkx.Subnet(ipn)
	ip := make(net.IP, len(sub.IP))
	copy(ip, sub.IP)
	for i := len(ip) - 1; i >= 0; i-- {
		ip[i]++
		if ip[i] != 0 {
			break
		}
	}
	return ip
}

// PodRoutes are the pod-side routes for res (LinkIndex left 0): per
// address, the gateway on-link, the subnet via the gateway, then the IPAM
// routes via their gateway or the family's (a gateway other than the
// IPAM's is declared on-link: nothing else is on-link in ptp).
func PodRoutes(res *current.Result) []*netlink.Route {
	var out []*netlink.Route
	seen := map[string]bool{}
	var gw4, gw6 net.IP
	gwSet := map[string]bool{}
	for _, ipc := range res.IPs {
		gwSet[ipc.Gateway.String()] = true
		src := ipc.Address.IP
		if src.To4() != nil {
			if gw4 == nil {
				gw4 = ipc.Gateway
			}
		} else if gw6 == nil {
			gw6 = ipc.Gateway
		}
		gwNet := netlinkx.HostNet(ipc.Gateway)
		if !seen[gwNet.String()] {
			seen[gwNet.String()] = true
			out = append(out, &netlink.Route{Dst: gwNet, Scope: netlink.SCOPE_LINK, Src: src})
		}
		sub := netlinkx.Subnet(ipc.Address)
		if ones, bits := sub.Mask.Size(); ones < bits && !seen[sub.String()] {
			seen[sub.String()] = true
			out = append(out, &netlink.Route{Dst: sub, Gw: ipc.Gateway, Src: src})
		}
	}
	for _, r := range res.Routes {
		if seen[r.Dst.String()] {
			continue
		}
		seen[r.Dst.String()] = true
		gw := gw4
		if r.Dst.IP.To4() == nil {
			gw = gw6
		}
		nr := netlinkx.RouteFromCNI(r, 0, gw)
		// Only the gateways are on-link in ptp (the pod address has no
		// prefix route): any other next hop is declared on-link, which
		// is what the reference's routes end up as once it deletes the
		// prefix route it added them through.
		if r.GW != nil && !gwSet[r.GW.String()] {
			nr.Flags |= int(netlink.FLAG_ONLINK)
		}
		out = append(out, nr)
	}
	return out
}

func internal(err error, format string, a ...any) error {
	return cnierr.Wrap(cnierr.Internal, name, err, format, a...)
}

func add(args *skel.CmdArgs) (types.Result, error) { return AddWith(args, nil) }

// AddWith is ADD with a hook: beforeWire runs once IPAM has given the
// pod its addresses and before anything is wired (no veth, no route: the
// address cannot send or receive yet). An error from it fails the ADD and
// releases the addresses. The podnet plugin uses it to have the pod's
// network policy in force before the pod's first packet.
func AddWith(args *skel.CmdArgs, beforeWire func(*current.Result) error) (_ types.Result, err error) {
	conf, err := Parse(args.StdinData)
	if err != nil {
		return nil, err
	}
	h, err := cniplugin.OpenPod(name, args)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	podNS, node, pod := h.NS, h.Node, h.Pod

	var undo rollback.Stack
	defer func() { undo.Unwind(name, &err) }()

	ctx := context.Background()
	res, err := delegate.Add(ctx, conf.IPAM.Type, args)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return delegate.Del(ctx, conf.IPAM.Type, args) })
	if err := Plan(res); err != nil {
		return nil, cnierr.New(cnierr.InvalidConfig, name, "%v", err)
	}
	if beforeWire != nil {
		if err := beforeWire(res); err != nil {
			return nil, err
		}
	}
	v4, v6 := false, false
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	if err := netlinkx.EnableForwarding(v4, v6); err != nil {
		return nil, internal(err, "enable forwarding")
	}

	veth := netlinkx.Veth{PodName: args.IfName, PodNS: podNS, MTU: conf.MTU, HostNoDAD: v6}
	hostVeth, podLink, err := h.CreateVeth(name, veth, &undo)
	if err != nil {
		return nil, err
	}

	// Node side first, so the gateway answers as soon as the pod is up.
	for _, ipc := range res.IPs {
		if err := netlinkx.AddAddr(node, hostVeth, *netlinkx.HostNet(ipc.Gateway), netlinkx.AddrOpts{NoDAD: true}); err != nil {
			return nil, internal(err, "")
		}
		hr := &netlink.Route{LinkIndex: hostVeth.Index, Dst: netlinkx.HostNet(ipc.Address.IP), Scope: netlink.SCOPE_LINK}
		if err := netlinkx.ReplaceRoute(node, hr); err != nil {
			return nil, internal(err, "host route to the pod")
		}
	}

	p := netlinkx.PodIface{Link: podLink, NoPrefixRoute: true, Routes: PodRoutes(res)}
	for _, ipc := range res.IPs {
		p.Addrs = append(p.Addrs, ipc.Address)
	}
	if err := netlinkx.ConfigurePod(pod, podNS, p); err != nil {
		return nil, internal(err, "configure %s in %s", args.IfName, args.Netns)
	}

	if conf.IPMasq {
		rules, err := nft.MasqRules(p.Addrs)
		if err != nil {
			return nil, internal(err, "")
		}
		tag := nft.Tag(conf.Name, args.ContainerID, args.IfName)
		if err := nft.Apply(MasqChain, tag, rules); err != nil {
			return nil, internal(err, "ipMasq")
		}
		undo = append(undo, func() error { _, err := nft.Remove(MasqChain, tag); return err })
	}

	res.CNIVersion = current.ImplementedSpecVersion
	res.Interfaces = []*current.Interface{
		{Name: hostVeth.Name, Mac: hostVeth.HardwareAddr.String()},
		{Name: args.IfName, Mac: podLink.Attrs().HardwareAddr.String(), Sandbox: args.Netns},
	}
	if d := conf.DNS; d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != "" {
		res.DNS = d
	}
	return res, nil
}

// del makes the attachment inert at once (host veth marked and down; the
// kernel removes the host routes through it, both families) and leaves the deletion of the veth pair to a
// detached reaper process (netlinkx.StartReleasePodLink); it removes the
// attachment's masquerade rules and releases the IPAM reservation;
// already-gone things are fine.
func del(args *skel.CmdArgs) error {
	conf, err := Decode(args.StdinData)
	if err != nil {
		return err
	}
	var errs []error
	waitLink := func() error { return nil }
	if args.Netns != "" {
		waitLink = netlinkx.StartReleasePodLink(netlinkx.Detach{
			Path: args.Netns, IfName: args.IfName, Info: netlinkx.ReapInfo(conf.Name, args.ContainerID, args.IfName),
		})
	}
	if conf.IPMasq {
		if _, err := nft.Remove(MasqChain, nft.Tag(conf.Name, args.ContainerID, args.IfName)); err != nil {
			errs = append(errs, err)
		}
	}
	// Release the address only once its interface is gone or inert.
	if err := waitLink(); err != nil {
		errs = append(errs, err)
	}
	// Without IPAM (a config ADD refused) nothing was reserved.
	if conf.IPAM.Type != "" {
		if err := delegate.Del(context.Background(), conf.IPAM.Type, args); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return cnierr.Wrap(cnierr.Internal, name, errors.Join(errs...), "DEL")
	}
	return nil
}

// check verifies the pod veth (type, MAC), its addresses and routes, the
// host route to each pod address through the peer veth, and the masquerade
// rules.
func check(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &conf.NetConf)
	if err != nil {
		return err
	}
	if err := delegate.Check(context.Background(), conf.IPAM.Type, args); err != nil {
		return err
	}
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	pl, err := cniplugin.CheckPod(name, args, prev, "veth")
	if err != nil {
		return err
	}
	defer pl.Close()
	podLink := pl.Link
	// The pod reaches its gateway through a link-scope host route.
	var gwRoutes []netlinkx.RouteWant
	for _, ipc := range prev.IPs {
		if ipc.Gateway != nil {
			gwRoutes = append(gwRoutes, netlinkx.RouteWant{Dst: netlinkx.HostNet(ipc.Gateway)})
		}
	}
	if err := pl.CheckL3(name, prev, gwRoutes...); err != nil {
		return err
	}

	node, err := netlinkx.NewHandle()
	if err != nil {
		return internal(err, "")
	}
	defer node.Close()
	for _, ipc := range prev.IPs {
		dst := netlinkx.HostNet(ipc.Address.IP)
		rs, err := netlinkx.Retry(func() ([]netlink.Route, error) {
			return node.RouteListFiltered(netlinkx.Family(dst.IP), &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		})
		if err != nil {
			return internal(err, "list node routes")
		}
		ok := false
		for _, r := range rs {
			if r.LinkIndex == podLink.Attrs().ParentIndex {
				ok = true
			}
		}
		if !ok {
			return fail("node has no route to %s through the pod's host veth", dst)
		}
	}
	if conf.IPMasq {
		if n, err := nft.CountTag(MasqChain, nft.Tag(conf.Name, args.ContainerID, args.IfName)); err != nil || n == 0 {
			return fail("masquerade rules for %s missing from %s (%v)", args.ContainerID, MasqChain, err)
		}
	}
	return nil
}

// gc delegates to IPAM, removes masquerade rules of attachments that are
// not in cni.dev/valid-attachments, and deletes the host veths that DELs
// detached and no reaper removed (yet).
func gc(args *skel.CmdArgs) error {
	conf, err := Decode(args.StdinData)
	if err != nil {
		return err
	}
	var errs []error
	if conf.IPAM.Type != "" {
		if err := delegate.GC(context.Background(), conf.IPAM.Type, args); err != nil {
			errs = append(errs, err)
		}
	}
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		keep[nft.Tag(conf.Name, a.ContainerID, a.IfName)] = true
	}
	if _, err := nft.GC(MasqChain, nft.NetworkPrefix(conf.Name), func(t string) bool { return keep[t] }); err != nil {
		errs = append(errs, err)
	}
	if err := reapMarked(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return cnierr.Wrap(cnierr.Internal, name, errors.Join(errs...), "GC")
	}
	return nil
}

// reapMarked deletes, synchronously, every link in the node namespace that
// a DEL marked for reaping (see netlinkx.StartReleasePodLink).
func reapMarked() error {
	node, err := netlinkx.NewHandle()
	if err != nil {
		return err
	}
	defer node.Close()
	_, err = netlinkx.ReapMarked(node, 0)
	return err
}

func status(args *skel.CmdArgs) error {
	conf, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	return delegate.Status(context.Background(), conf.IPAM.Type, args)
}
