// Package portmap is the CNI "portmap" meta plugin: chained after a main
// plugin, it forwards host ports to the pod (runtimeConfig.portMappings,
// the "portMappings" capability) with the reference plugin's fields and
// behaviour, programmed as nftables map elements rather than per-pod rules.
//
// # Datapath
//
// One table, `inet podnet-portmap`, is shared by every attachment on the
// node. Its chains are fixed; an attachment only adds elements to its
// sets and maps, so per-packet cost is a hash lookup whatever the number
// of pods or mappings:
//
//	map hostipports4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//	map hostipports6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
//	map hostports4   { type inet_proto . inet_service : ipv4_addr . inet_service }
//	map hostports6   { type inet_proto . inet_service : ipv6_addr . inet_service }
//	set snat4, snat6       { pod addresses whose hairpin and localhost traffic is masqueraded (snat) }
//	set masqall4, masqall6 { pod addresses all of whose host-port traffic is masqueraded (masqAll) }
//
//	chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump hostports }
//	chain output      { type nat hook output priority dstnat;      fib daddr type local jump hostports }
//	chain hostports {
//		meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @hostipports4
//		meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostipports6
//		meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4
//		meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hostports6
//	}
//	chain hairpin { type filter hook prerouting priority dstnat + 10;
//		ct state new ct status dnat ip daddr @snat4 fib daddr . iif oif != 0 meta mark set mark | MARK
//		(same for ip6 / @snat6)
//	}
//	chain postrouting { type nat hook postrouting priority srcnat;
//		ct status dnat ip daddr @masqall4 masquerade ; (ip6 / @masqall6)
//		meta mark & MARK == MARK ct status dnat masquerade
//		ct status dnat ip saddr 127.0.0.0/8 ip daddr @snat4 masquerade
//	}
//
// Hairpin is detected after DNAT as "the route to the new destination
// leaves by the interface the packet came in on" (a pod reaching itself, or
// another pod on the same bridge, through a host port): without SNAT the
// reply would bypass the node and never be un-DNATed. MARK is 1<<markMasqBit.
// Connections from 127.0.0.0/8 on the node need route_localnet on the
// interface towards the pod, which ADD sets, and are masqueraded too.
//
// # Ownership
//
// Every element carries its attachment's tag (package nft's Tag: network,
// interface, container) as its nftables comment. DEL and GC list the
// elements and delete those with their tags, in one batch, so they need
// neither prevResult nor runtimeConfig nor the pod's namespace. A host port
// already mapped by another attachment is taken over by the newer ADD; the
// older attachment's DEL then leaves it alone. Each ADD, DEL and GC holds
// an flock on <dataDir>/lock around its read-modify-write.
//
// It owns plugins/portmap and the podnet-portmap table; it never touches
// other tables.
package portmap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/nft"
	"github.com/podnet/podnet/internal/sysctl"
)

const name = "portmap"

// Plugin is the portmap plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet portmap: forwards host ports to pods with nftables maps",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

func checkAttachment(args *skel.CmdArgs) error {
	if err := utils.ValidateContainerID(args.ContainerID); err != nil {
		return cnierr.Env(name, "CNI_CONTAINERID", "%s", err.Msg)
	}
	if args.IfName == "" || strings.ContainsAny(args.IfName, "/:") || len(args.IfName) >= unix.IFNAMSIZ {
		return cnierr.Env(name, "CNI_IFNAME", "%q is not a valid interface name", args.IfName)
	}
	return nil
}

// lock takes the exclusive flock of dataDir, creating it.
func lock(dataDir string) (*os.File, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, cnierr.New(cnierr.IOFailure, name, "create %s: %v", dataDir, err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, "lock"), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, cnierr.New(cnierr.IOFailure, name, "open lock: %v", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, cnierr.New(cnierr.IOFailure, name, "lock %s: %v", f.Name(), err)
	}
	return f, nil
}

func add(args *skel.CmdArgs) (_ types.Result, err error) {
	c, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	if len(c.Mappings) == 0 {
		if c.Prev == nil {
			return cniplugin.EmptyResult(), nil
		}
		return c.Prev, nil
	}
	if c.Prev == nil {
		return nil, cnierr.Field(name, "prevResult", "required: portmap must be chained after a plugin that returns the pod's addresses")
	}
	if err := checkAttachment(args); err != nil {
		return nil, err
	}
	pod4, pod6 := PodAddrs(c.Prev, args.IfName)
	if pod4 == nil && pod6 == nil {
		return nil, cnierr.Field(name, "prevResult", "has no IP address on interface %q to forward ports to", args.IfName)
	}
	owner := nft.Tag(c.Network, args.ContainerID, args.IfName)
	want := Desired(c, pod4, pod6, owner)

	l, err := lock(c.DataDir)
	if err != nil {
		return nil, err
	}
	defer l.Close()

	if len(want) == 0 {
		// Every mapping is of a family the pod has no address in: nothing
		// to forward, but a repeated ADD must not leave older elements.
		if _, err := applyDel(func(o string) bool { return o == owner }); err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		return c.Prev, nil
	}
	if err := applyAdd(want, owner, c.Mark()); err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	defer func() {
		if err != nil {
			if _, rerr := applyDel(func(o string) bool { return o == owner }); rerr != nil {
				err = fmt.Errorf("%w; rolling back the map elements also failed: %v", err, rerr)
			}
		}
	}()

	var v4 bool
	var udp4, udp6 []uint16
	for _, e := range want {
		if !e.isMap() {
			continue
		}
		if !is6(e.Set) {
			v4 = true
		}
		if e.Proto == protoUDP {
			if is6(e.Set) {
				udp6 = append(udp6, e.HostPort)
			} else {
				udp4 = append(udp4, e.HostPort)
			}
		}
	}
	if c.SNAT && v4 {
		if err := enableRouteLocalnet(pod4); err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
		}
	}
	// Stale UDP conntrack entries (e.g. replies to a client that sent
	// before the mapping existed) would keep steering that flow past the
	// DNAT. Failing to flush them is not fatal: they time out.
	_ = flushUDP(netlink.FAMILY_V4, udp4)
	_ = flushUDP(netlink.FAMILY_V6, udp6)
	return c.Prev, nil
}

// enableRouteLocalnet sets route_localnet on the interface the node routes
// pod4 through, so that 127.0.0.1:hostPort can be forwarded (the
// reference's behaviour). It is left on at DEL: other pods share it. A node
// with no route to the pod (e.g. a bridge without isGateway whose subnet
// the node does not route) has no such interface: nothing to enable, and
// the mapping is still installed, as the reference plugin does.
func enableRouteLocalnet(pod4 net.IP) error {
	routes, err := netlink.RouteGet(pod4)
	if err != nil || len(routes) == 0 {
		return nil
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("find the interface towards %s: %w", pod4, err)
	}
	if link.Attrs().Flags&net.FlagLoopback != 0 {
		return nil
	}
	key := "net/ipv4/conf/" + link.Attrs().Name + "/route_localnet"
	if _, err := sysctl.Ensure(key, "1"); err != nil {
		return err
	}
	return nil
}

func flushUDP(family netlink.InetFamily, ports []uint16) error {
	if len(ports) == 0 {
		return nil
	}
	var filters []netlink.CustomConntrackFilter
	for _, p := range ports {
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(protoUDP); err != nil {
			return err
		}
		if err := f.AddPort(netlink.ConntrackOrigDstPort, p); err != nil {
			return err
		}
		filters = append(filters, f)
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, filters...)
	return err
}

// parseLenient decodes what DEL and GC need: the network name and data
// dir. Options ADD would reject do not block the removal of elements.
func parseLenient(stdin []byte) (*netConf, string, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, "", err
	}
	dir := conf.DataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	// A relative dataDir would put the lock in whatever directory the
	// runtime happens to run the plugin from.
	if !filepath.IsAbs(dir) {
		return nil, "", cnierr.Field(name, "dataDir", "%q is not an absolute path", dir)
	}
	return conf, filepath.Clean(dir), nil
}

// del removes the attachment's elements, found by their tag: it needs
// neither prevResult, runtimeConfig nor the pod's namespace.
func del(args *skel.CmdArgs) error {
	conf, dir, err := parseLenient(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkAttachment(args); err != nil {
		return err
	}
	owner := nft.Tag(conf.Name, args.ContainerID, args.IfName)
	l, err := lock(dir)
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := applyDel(func(o string) bool { return o == owner }); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	return nil
}

func check(args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if c.Prev == nil {
		return cnierr.Field(name, "prevResult", "required for CHECK")
	}
	if len(c.Mappings) == 0 {
		return nil
	}
	if err := checkAttachment(args); err != nil {
		return err
	}
	pod4, pod6 := PodAddrs(c.Prev, args.IfName)
	owner := nft.Tag(c.Network, args.ContainerID, args.IfName)
	want := Desired(c, pod4, pod6, owner)
	if err := checkBase(c.Mark()); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	cur, err := ListElems()
	if err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	if m := missing(cur, want); len(m) > 0 {
		var lines []string
		for _, e := range m {
			lines = append(lines, e.String())
		}
		return cnierr.New(cnierr.Internal, name, "%d of %d elements missing: %s", len(m), len(want), strings.Join(lines, "; "))
	}
	return nil
}

// gc removes the elements of this network's attachments that are not in
// cni.dev/valid-attachments.
func gc(args *skel.CmdArgs) error {
	conf, dir, err := parseLenient(args.StdinData)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		keep[nft.Tag(conf.Name, a.ContainerID, a.IfName)] = true
	}
	prefix := nft.NetworkPrefix(conf.Name)
	l, err := lock(dir)
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := applyDel(func(o string) bool { return strings.HasPrefix(o, prefix) && !keep[o] }); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "GC")
	}
	return nil
}

func status(args *skel.CmdArgs) error {
	if _, _, err := parseLenient(args.StdinData); err != nil {
		return err
	}
	if err := usable(); err != nil {
		return cnierr.New(cnierr.NotAvailable, name, "nftables is not usable: %v", err)
	}
	return nil
}
