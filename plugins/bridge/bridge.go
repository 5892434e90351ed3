// Package bridge is the CNI "bridge" plugin: it attaches a pod to a Linux
// bridge in the node's namespace through a veth pair, gives the pod the
// addresses and routes its IPAM returns, and optionally makes the bridge
// the pod's gateway, masquerades pod traffic leaving the subnet and drops
// frames the pod sends with a MAC other than its own. It follows the
// reference plugin's fields and result shape
// (interfaces = [bridge, host veth, pod veth]).
//
// Kernel objects it owns: the host veth of each attachment (the pod end goes
// with it; DEL only marks it and sets it down, a reaper process deletes it
// off the runtime's critical path), the rules tagged with the attachment in the nftables tables
// "inet podnet-bridge" (masquerade) and "bridge podnet-bridge" (MAC spoof
// check). The bridge and its gateway addresses are shared by every pod on
// the node and are created or adopted, never removed, not even when an ADD
// fails (another pod may already use them). IPAM is delegated.
//
// Every ADD step that creates something pushes its undo; a failed ADD runs
// them in reverse, so it leaves no veth, rule or IP reservation behind.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/rollback"
	"github.com/podnet/podnet/internal/trace"

	// podnet's IPAM plugins run in-process when delegated to.
	_ "github.com/podnet/podnet/ipam/hostlocal"
	_ "github.com/podnet/podnet/ipam/static"
)

const name = "bridge"

// portUpTimeout bounds the wait for the host veth to become a forwarding
// bridge port; past it ADD succeeds anyway (the port comes up by itself).
const portUpTimeout = 2 * time.Second

// Table is the nftables table name (inet family for masquerade, bridge
// family for the MAC spoof check).
const Table = "podnet-bridge"

// Plugin is the bridge plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet bridge: attaches pods to a Linux bridge through veth pairs",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

// MasqChain and SpoofChain are where the plugin's nftables rules live.
var (
	MasqChain  = nft.MasqChain(Table)
	SpoofChain = nft.SpoofChain(Table)
)

// parse is ADD's, CHECK's and STATUS's full parse; DEL and GC use decode
// (docs/del.md).
func parse(args *skel.CmdArgs) (*Conf, error) { return Parse(args.StdinData, args.Args) }

func decode(args *skel.CmdArgs) (*Conf, error) { return Decode(args.StdinData, args.Args) }

// Plan completes an IPAM result for the bridge (pure, no kernel): every
// address points at the pod veth (index 2); with isGateway a missing
// gateway becomes the subnet's first address; with isDefaultGateway a
// default route through it is added for each family that has none. It
// returns the gateway addresses to put on the bridge.
func Plan(c *Conf, res *current.Result) (bridgeAddrs []net.IPNet, err error) {
	haveDefault := map[int]bool{}
	for _, r := range res.Routes {
		if netlinkx.IsDefault(&r.Dst) {
			haveDefault[netlinkx.Family(r.Dst.IP)] = true
		}
	}
	for _, ipc := range res.IPs {
		if ipc.Address.IP == nil || ipc.Address.Mask == nil {
			return nil, fmt.Errorf("IPAM returned an address without prefix: %v", ipc)
		}
		if v4 := ipc.Address.IP.To4(); v4 != nil && len(ipc.Address.Mask) == net.IPv4len {
			ipc.Address.IP = v4
		}
		ipc.Interface = current.Int(2)
		if ipc.Gateway == nil && c.IsGW {
			ipc.Gateway = firstIP(ipc.Address)
		}
		if c.IsGW && ipc.Gateway.Equal(ipc.Address.IP) {
			return nil, fmt.Errorf("IPAM gave the pod %s, which is the gateway address", ipc.Address.IP)
		}
		fam := netlinkx.Family(ipc.Address.IP)
		if c.IsDefaultGW && !haveDefault[fam] {
			res.Routes = append(res.Routes, &types.Route{Dst: *netlinkx.DefaultNet(ipc.Address.IP), GW: ipc.Gateway})
			haveDefault[fam] = true
		}
		if c.IsGW {
			bridgeAddrs = append(bridgeAddrs, net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask})
		}
	}
	return bridgeAddrs, nil
}

// firstIP is the first host address of ipn's subnet (the conventional
// gateway).
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

// familyGateways returns the first gateway per family.
func familyGateways(res *current.Result) (v4, v6 net.IP) {
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			continue
		}
		if ipc.Address.IP.To4() != nil {
			if v4 == nil {
				v4 = ipc.Gateway
			}
		} else if v6 == nil {
			v6 = ipc.Gateway
		}
	}
	return v4, v6
}

func internal(err error, format string, a ...any) error {
	return cnierr.Wrap(cnierr.Internal, name, err, format, a...)
}

func add(args *skel.CmdArgs) (_ types.Result, err error) {
	t := trace.Begin()
	conf, err := parse(args)
	trace.End("bridge: config parse", t)
	if err != nil {
		return nil, err
	}
	h, err := cniplugin.OpenPod(name, args)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	podNS, node, pod := h.NS, h.Node, h.Pod

	// Rollback: each step that made something pushes its undo.
	var undo rollback.Stack
	defer func() { undo.Unwind(name, &err) }()

	ctx := context.Background()
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	// IPAM runs while the bridge and veth are set up: it only needs the
	// CNI arguments (in-process IPAM never depends on the calling thread's
	// namespace; exec'd IPAM gets CNI_NETNS). Its undo is pushed first, so
	// a reservation it made is released last, whatever fails.
	var waitIPAM func() (*current.Result, error)
	if conf.L3() {
		type out struct {
			res *current.Result
			err error
		}
		ch := make(chan out, 1)
		go func() {
			t := trace.Begin()
			r, err := delegate.Add(ctx, conf.IPAM.Type, args)
			trace.End("ipam ADD (goroutine, overlaps)", t)
			ch <- out{r, err}
		}()
		var o *out
		waitIPAM = func() (*current.Result, error) {
			if o == nil {
				t := trace.Begin()
				v := <-ch
				trace.End("ipam wait", t)
				o = &v
			}
			return o.res, o.err
		}
		undo = append(undo, func() error {
			if _, err := waitIPAM(); err != nil {
				return nil // nothing reserved
			}
			return delegate.Del(ctx, conf.IPAM.Type, args)
		})
	}

	t = trace.Begin()
	br, created, err := netlinkx.EnsureBridge(node, netlinkx.Bridge{Name: conf.BrName, MTU: conf.MTU, Promisc: conf.PromiscMode})
	trace.End("bridge ensure (look up)", t)
	if err != nil {
		return nil, internal(err, "")
	}

	veth := netlinkx.Veth{PodName: args.IfName, PodNS: podNS, MTU: conf.MTU, PodMAC: conf.MAC, MasterIndex: br.Index}
	hostVeth, podLink, err := h.CreateVeth(name, veth, &undo)
	if err != nil {
		return nil, err
	}
	if conf.HairpinMode {
		if err := node.LinkSetHairpin(hostVeth, true); err != nil {
			return nil, internal(err, "hairpin mode on %s", hostVeth.Name)
		}
	}
	if conf.PortIsolation {
		if err := node.LinkSetIsolated(hostVeth, true); err != nil {
			return nil, internal(err, "port isolation on %s", hostVeth.Name)
		}
	}
	var bridgeAddrs []net.IPNet
	if waitIPAM != nil {
		ipamRes, err := waitIPAM()
		if err != nil {
			return nil, err
		}
		if len(ipamRes.IPs) == 0 {
			return nil, cnierr.New(cnierr.InvalidConfig, name, "IPAM %q returned no addresses", conf.IPAM.Type)
		}
		res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
		if bridgeAddrs, err = Plan(conf, res); err != nil {
			return nil, cnierr.New(cnierr.InvalidConfig, name, "%v", err)
		}
	}

	tag := nft.Tag(conf.Name, args.ContainerID, args.IfName)
	podMAC := podLink.Attrs().HardwareAddr
	if conf.MacSpoofChk {
		rule, err := nft.SpoofRule(hostVeth.Name, podMAC)
		if err != nil {
			return nil, internal(err, "")
		}
		t := trace.Begin()
		err = nft.Apply(SpoofChain, tag, [][]expr.Any{rule})
		trace.End("nft spoof check apply", t)
		if err != nil {
			return nil, internal(err, "macspoofchk")
		}
		undo = append(undo, func() error { _, err := nft.Remove(SpoofChain, tag); return err })
	}

	if !conf.DisableContainerInterface {
		p := netlinkx.PodIface{Link: podLink, DAD: conf.EnableDad, ARPNotify: true, NoDADSysctl: true}
		gw4, gw6 := familyGateways(res)
		for _, ipc := range res.IPs {
			p.Addrs = append(p.Addrs, ipc.Address)
		}
		for _, r := range res.Routes {
			gw := gw4
			if r.Dst.IP.To4() == nil {
				gw = gw6
			}
			p.Routes = append(p.Routes, netlinkx.RouteFromCNI(r, podLink.Attrs().Index, gw))
		}
		t := trace.Begin()
		err := netlinkx.ConfigurePod(pod, podNS, p)
		trace.End("pod configure (total)", t)
		if err != nil {
			return nil, internal(err, "configure %s in %s", args.IfName, args.Netns)
		}
	}

	if conf.IsGW && len(bridgeAddrs) > 0 {
		v4, v6 := false, false
		for _, gw := range bridgeAddrs {
			t := trace.Begin()
			added, err := netlinkx.EnsureGatewayAddr(node, br, gw, bridgeAddrs, conf.ForceAddress)
			trace.End("gateway addr ensure", t)
			if err != nil {
				return nil, cnierr.Wrap(cnierr.Internal, name, err, "gateway address")
			}
			if added && !created {
				// Pin the MAC of an adopted bridge so it stops following
				// its ports (the reference does the same).
				_ = node.LinkSetHardwareAddr(br, br.HardwareAddr)
			}
			if gw.IP.To4() != nil {
				v4 = true
			} else {
				v6 = true
			}
		}
		t := trace.Begin()
		err := netlinkx.EnableForwarding(v4, v6)
		trace.End("sysctl ip_forward ensure", t)
		if err != nil {
			return nil, internal(err, "enable forwarding")
		}
	}

	if conf.IPMasq && conf.L3() {
		var pods []net.IPNet
		for _, ipc := range res.IPs {
			pods = append(pods, ipc.Address)
		}
		rules, err := nft.MasqRules(pods)
		if err != nil {
			return nil, internal(err, "")
		}
		t := trace.Begin()
		err = nft.Apply(MasqChain, tag, rules)
		trace.End("nft masquerade apply (total)", t)
		if err != nil {
			return nil, internal(err, "ipMasq")
		}
		undo = append(undo, func() error { _, err := nft.Remove(MasqChain, tag); return err })
	}

	if !conf.DisableContainerInterface {
		// The bridge forwards through the port once the kernel has seen its
		// carrier (asynchronous link-watch work): usually done by now.
		t := trace.Begin()
		_, err := netlinkx.WaitOperUp(node, hostVeth.Index, portUpTimeout)
		trace.End("wait host veth oper up", t)
		if err != nil {
			return nil, internal(err, "read back %s", hostVeth.Name)
		}
	}

	brMAC := br.HardwareAddr
	if !created {
		// An adopted bridge's MAC may follow its ports: report it as it is now.
		t := trace.Begin()
		if l, err := node.LinkByIndex(br.Index); err == nil {
			brMAC = l.Attrs().HardwareAddr
		}
		trace.End("bridge MAC read-back", t)
	}
	res.Interfaces = []*current.Interface{
		{Name: br.Name, Mac: brMAC.String()},
		{Name: hostVeth.Name, Mac: hostVeth.HardwareAddr.String()},
		{Name: args.IfName, Mac: podMAC.String(), Sandbox: args.Netns},
	}
	if dnsSet(conf.DNS) {
		res.DNS = conf.DNS
	}
	return res, nil
}

func dnsSet(d types.DNS) bool {
	return d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != ""
}

// del makes the attachment inert at once (host veth marked and down, so no
// frame crosses it) and leaves the deletion of the veth pair, 20 ms or more
// of kernel time, to a detached reaper process (netlinkx.StartReleasePodLink);
// meanwhile it removes the nftables rules, then releases the IPAM
// reservation. It succeeds when things are already gone: a second DEL, a
// vanished netns, no prevResult. It decodes the config without ADD's
// checks (docs/del.md): a config ADD refused still cleans up.
func del(args *skel.CmdArgs) error {
	t := trace.Begin()
	conf, err := decode(args)
	trace.End("bridge: config decode", t)
	if err != nil {
		return err
	}
	var errs []error
	waitLink := func() error { return nil }
	if args.Netns != "" {
		br := conf.BrName
		if ValidIfName(br) != nil {
			// No bridge can have this name, so the host veth is no port
			// of it: "" makes the detach find a veth that is not "ours"
			// and delete the pod's interface (and its peer) at once.
			br = ""
		}
		t := trace.Begin()
		waitLink = netlinkx.StartReleasePodLink(netlinkx.Detach{
			Path: args.Netns, IfName: args.IfName, Bridge: br, Info: netlinkx.ReapInfo(conf.Name, args.ContainerID, args.IfName),
		})
		trace.End("pod link detach (reaper start in background)", t)
	}
	tag := nft.Tag(conf.Name, args.ContainerID, args.IfName)
	if conf.IPMasq {
		t := trace.Begin()
		if _, err := nft.Remove(MasqChain, tag); err != nil {
			errs = append(errs, err)
		}
		trace.End("nft masquerade remove (total)", t)
	}
	if conf.MacSpoofChk {
		t := trace.Begin()
		if _, err := nft.Remove(SpoofChain, tag); err != nil {
			errs = append(errs, err)
		}
		trace.End("nft spoof check remove", t)
	}
	// The address is released only once the interface that carried it is
	// gone or down, so a new pod never shares it with a live one.
	t = trace.Begin()
	if err := waitLink(); err != nil {
		errs = append(errs, err)
	}
	trace.End("wait pod link released / reaper started", t)
	if conf.L3() {
		t := trace.Begin()
		if err := delegate.Del(context.Background(), conf.IPAM.Type, args); err != nil {
			errs = append(errs, err)
		}
		trace.End("ipam DEL", t)
	}
	if len(errs) == 1 {
		return cnierr.Wrap(cnierr.Internal, name, errs[0], "DEL")
	}
	if len(errs) > 1 {
		return internal(errors.Join(errs...), "DEL")
	}
	return nil
}

// check verifies what ADD made against prevResult: the bridge (type, MAC,
// promiscuous mode), the pod veth (MAC), the host veth that is its peer and
// a port of the bridge, the pod's addresses and routes, and the
// attachment's nftables rules.
func check(args *skel.CmdArgs) error {
	conf, err := parse(args)
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &conf.NetConf)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if conf.L3() {
		if err := delegate.Check(ctx, conf.IPAM.Type, args); err != nil {
			return err
		}
	}
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	var brIf, podIf *current.Interface
	for _, i := range prev.Interfaces {
		switch {
		case i.Name == conf.BrName && i.Sandbox == "":
			brIf = i
		case i.Name == args.IfName && i.Sandbox == args.Netns:
			podIf = i
		}
	}
	if brIf == nil {
		return fail("prevResult has no interface for bridge %q", conf.BrName)
	}
	if podIf == nil {
		return fail("prevResult has no interface %q in sandbox %q", args.IfName, args.Netns)
	}

	node, err := netlinkx.NewHandle()
	if err != nil {
		return internal(err, "")
	}
	defer node.Close()
	l, err := node.LinkByName(conf.BrName)
	if err != nil {
		return fail("bridge %q: %v", conf.BrName, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return fail("%q is a %s link, not a bridge", conf.BrName, l.Type())
	}
	if brIf.Mac != "" && brIf.Mac != br.HardwareAddr.String() {
		return fail("bridge %q has MAC %s, prevResult says %s", conf.BrName, br.HardwareAddr, brIf.Mac)
	}
	if (br.Promisc != 0) != conf.PromiscMode {
		return fail("bridge %q promiscuous mode is %v, config says %v", conf.BrName, br.Promisc != 0, conf.PromiscMode)
	}

	pl, err := cniplugin.CheckPod(name, args, prev, "veth")
	if err != nil {
		return err
	}
	defer pl.Close()
	podLink := pl.Link

	var hostVeth netlink.Link
	for _, i := range prev.Interfaces {
		if i == brIf || i == podIf || i.Sandbox != "" {
			continue
		}
		l, err := node.LinkByName(i.Name)
		if err != nil {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok {
			continue
		}
		if l.Attrs().Index != podLink.Attrs().ParentIndex || l.Attrs().MasterIndex != br.Index {
			continue
		}
		if i.Mac != "" && i.Mac != l.Attrs().HardwareAddr.String() {
			return fail("host veth %q has MAC %s, prevResult says %s", i.Name, l.Attrs().HardwareAddr, i.Mac)
		}
		hostVeth = l
		break
	}
	if hostVeth == nil {
		return fail("no host veth in prevResult is the peer of %q and a port of %q", args.IfName, conf.BrName)
	}

	if err := pl.CheckL3(name, prev); err != nil {
		return err
	}

	tag := nft.Tag(conf.Name, args.ContainerID, args.IfName)
	if conf.IPMasq && conf.L3() {
		if n, err := nft.CountTag(MasqChain, tag); err != nil || n == 0 {
			return fail("masquerade rules for %s missing from %s (%v)", args.ContainerID, MasqChain, err)
		}
	}
	if conf.MacSpoofChk {
		if n, err := nft.CountTag(SpoofChain, tag); err != nil || n == 0 {
			return fail("MAC spoof check rule for %s missing from %s (%v)", args.ContainerID, SpoofChain, err)
		}
	}
	return nil
}

// gc delegates to IPAM, removes the nftables rules of this network's
// attachments that are not in cni.dev/valid-attachments, and deletes the
// host veths that DELs detached and no reaper removed (yet).
func gc(args *skel.CmdArgs) error {
	conf, err := decode(args)
	if err != nil {
		return err
	}
	var errs []error
	if conf.L3() {
		if err := delegate.GC(context.Background(), conf.IPAM.Type, args); err != nil {
			errs = append(errs, err)
		}
	}
	if err := GCRules(conf.Name, conf.ValidAttachments, MasqChain, SpoofChain); err != nil {
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

// GCRules removes from chains the rules of network whose attachment is not
// in valid.
func GCRules(network string, valid []types.GCAttachment, chains ...nft.Chain) error {
	keep := map[string]bool{}
	for _, a := range valid {
		keep[nft.Tag(network, a.ContainerID, a.IfName)] = true
	}
	var errs []error
	for _, c := range chains {
		if _, err := nft.GC(c, nft.NetworkPrefix(network), func(t string) bool { return keep[t] }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	conf, err := parse(args)
	if err != nil {
		return err
	}
	if conf.L3() {
		return delegate.Status(context.Background(), conf.IPAM.Type, args)
	}
	return nil
}
