// Package loopback is the CNI "loopback" plugin: it brings the pod's lo up
// on ADD and down on DEL, like the reference plugin, and reports lo with its
// 127.0.0.1/8 and ::1/128 addresses.
package loopback

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netns"
)

const name = "loopback"

// Plugin is the loopback plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet loopback: brings up the pod's lo",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     nil,
	Status: nil,
}

func parse(args *skel.CmdArgs) (*types.NetConf, error) {
	conf := &types.NetConf{}
	if err := cniplugin.Decode(name, args.StdinData, conf); err != nil {
		return nil, err
	}
	return conf, nil
}

func add(args *skel.CmdArgs) (types.Result, error) {
	conf, err := parse(args)
	if err != nil {
		return nil, err
	}
	prev, err := cniplugin.PrevResult(name, conf)
	if err != nil {
		return nil, err
	}
	var addrs []netlink.Addr
	err = netns.Do(args.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		addrs, err = netlink.AddrList(lo, netlink.FAMILY_ALL)
		return err
	})
	if err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, name, err, "bring up lo in %s", args.Netns)
	}
	if prev != nil {
		// Chained after another plugin: pass its result through.
		return prev, nil
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: args.Netns}},
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0), Address: net.IPNet{IP: a.IP, Mask: a.Mask}})
	}
	return res, nil
}

func check(args *skel.CmdArgs) error {
	if _, err := parse(args); err != nil {
		return err
	}
	return netns.Do(args.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("%s: lo is down in %s", name, args.Netns)
		}
		return nil
	})
}

func del(args *skel.CmdArgs) error {
	if _, err := parse(args); err != nil {
		return err
	}
	if args.Netns == "" {
		return nil
	}
	err := netns.Do(args.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetDown(lo)
	})
	if err != nil && !netns.Exists(args.Netns) {
		// The namespace is already gone: nothing left to undo.
		return nil
	}
	if err != nil {
		return errors.Join(fmt.Errorf("%s: set lo down", name), err)
	}
	return nil
}
