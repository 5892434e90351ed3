// Package static is the CNI "static" IPAM plugin: it returns the addresses,
// routes and DNS settings written in the config (or passed by the runtime
// through runtimeConfig.ips, args.cni.ips or CNI_ARGS IP=/GATEWAY=). It
// keeps no state: CHECK validates the config against prevResult, DEL and
// GC succeed without reading it.
package static

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/ipam/internal/ipamconf"
)

const name = "static"

// Plugin is the static IPAM plugin.
var Plugin = &cniplugin.Plugin{
	Type:  name,
	About: "podnet static: returns the configured addresses, routes and DNS",
	Add:   cmdAdd,
	Check: cmdCheck,
	// static keeps no state: DEL and GC have nothing to find or remove,
	// so they succeed whatever the config says (the reference's DEL does
	// not read it either; docs/del.md).
	Del: func(*skel.CmdArgs) error { return nil },
	GC:  func(*skel.CmdArgs) error { return nil },
	// Status: static depends on nothing that can be unavailable.
	Status: nil,
}

type rawAddress struct {
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
}

type rawIPAM struct {
	Type      string            `json:"type"`
	Addresses []rawAddress      `json:"addresses"`
	Routes    []json.RawMessage `json:"routes"`
	DNS       types.DNS         `json:"dns"`
}

type rawNet struct {
	CNIVersion    string   `json:"cniVersion"`
	Name          string   `json:"name"`
	IPAM          *rawIPAM `json:"ipam"`
	RuntimeConfig struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// Address is one interface address with its optional gateway.
type Address struct {
	Prefix  netip.Prefix // host bits kept: 10.0.0.5/24
	Gateway netip.Addr   // zero if none
	Field   string       // where it came from, e.g. "addresses[0].address"
}

// Config is the parsed static configuration.
type Config struct {
	CNIVersion string
	Addresses  []Address
	Routes     []*types.Route
	DNS        types.DNS
}

func parseList(list []string, field string, env bool) ([]Address, error) {
	var out []Address
	for i, s := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		if env {
			f = field
		}
		p, err := ipamconf.ParseCIDR(s)
		if err != nil {
			if env {
				return nil, cnierr.Env(name, f, "%v", err)
			}
			return nil, cnierr.Field(name, f, "%v", err)
		}
		out = append(out, Address{Prefix: p, Field: f})
	}
	return out, nil
}

// LoadConfig parses and validates the config. Addresses come from
// ipam.addresses plus CNI_ARGS IP=; args.cni.ips, then runtimeConfig.ips,
// replace the list when present (as in the reference plugin). CNI_ARGS
// GATEWAY= sets the gateway of every final address whose subnet contains
// it. needAddr makes an empty address list an error.
func LoadConfig(stdin []byte, cniArgs string, needAddr bool) (*Config, error) {
	n := &rawNet{}
	if err := cniplugin.Decode(name, stdin, n); err != nil {
		return nil, err
	}
	if n.IPAM == nil {
		return nil, cnierr.Field(name, "ipam", "%v", ipamconf.ErrNoIPAM)
	}
	c := &Config{CNIVersion: n.CNIVersion, DNS: n.IPAM.DNS}
	var err error
	if c.Routes, err = ipamconf.ParseRoutes(name, "routes", n.IPAM.Routes); err != nil {
		return nil, err
	}
	for i, ns := range c.DNS.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			return nil, cnierr.Field(name, fmt.Sprintf("dns.nameservers[%d]", i), "%q is not an IP address", ns)
		}
	}

	for i, ra := range n.IPAM.Addresses {
		f := fmt.Sprintf("addresses[%d]", i)
		if ra.Address == "" {
			return nil, cnierr.Field(name, f+".address", "missing: an address in CIDR notation such as \"10.10.0.5/24\"")
		}
		p, err := ipamconf.ParseCIDR(ra.Address)
		if err != nil {
			return nil, cnierr.Field(name, f+".address", "%v", err)
		}
		a := Address{Prefix: p, Field: f + ".address"}
		if ra.Gateway != "" {
			gw, err := ipamconf.ParseAddr(ra.Gateway)
			if err != nil {
				return nil, cnierr.Field(name, f+".gateway", "%v", err)
			}
			if gw.Is4() != p.Addr().Is4() {
				return nil, cnierr.Field(name, f+".gateway", "%s is not in the same address family as %s", gw, p)
			}
			a.Gateway = gw
		}
		c.Addresses = append(c.Addresses, a)
	}

	env := ipamconf.CNIArgs(cniArgs)
	if v, ok := env["IP"]; ok {
		l, err := parseList(ipamconf.SplitList(v), "CNI_ARGS IP", true)
		if err != nil {
			return nil, err
		}
		c.Addresses = append(c.Addresses, l...)
	}
	if n.Args != nil && n.Args.CNI != nil && len(n.Args.CNI.IPs) > 0 {
		if c.Addresses, err = parseList(n.Args.CNI.IPs, "args.cni.ips", false); err != nil {
			return nil, err
		}
	}
	if len(n.RuntimeConfig.IPs) > 0 {
		if c.Addresses, err = parseList(n.RuntimeConfig.IPs, "runtimeConfig.ips", false); err != nil {
			return nil, err
		}
	}
	if v, ok := env["GATEWAY"]; ok {
		for _, s := range ipamconf.SplitList(v) {
			gw, err := ipamconf.ParseAddr(s)
			if err != nil {
				return nil, cnierr.Env(name, "CNI_ARGS GATEWAY", "%v", err)
			}
			used := false
			for i := range c.Addresses {
				if c.Addresses[i].Prefix.Masked().Contains(gw) {
					c.Addresses[i].Gateway = gw
					used = true
				}
			}
			if !used {
				return nil, cnierr.Env(name, "CNI_ARGS GATEWAY", "%s is in the subnet of none of the addresses", gw)
			}
		}
	}

	seen := map[netip.Addr]string{}
	var addrs []netip.Addr
	for _, a := range c.Addresses {
		if prev, dup := seen[a.Prefix.Addr()]; dup {
			return nil, cnierr.Field(name, a.Field, "%s is already given by %s", a.Prefix.Addr(), prev)
		}
		seen[a.Prefix.Addr()] = a.Field
		addrs = append(addrs, a.Prefix.Addr())
	}
	if needAddr && len(c.Addresses) == 0 {
		return nil, cnierr.Field(name, "addresses", "missing: set ipam.addresses or pass runtimeConfig.ips, args.cni.ips or CNI_ARGS IP=")
	}
	if err := ipamconf.CheckFamilies(name, c.CNIVersion, addrs); err != nil {
		return nil, err
	}
	return c, nil
}

func cmdAdd(args *skel.CmdArgs) (types.Result, error) {
	c, err := LoadConfig(args.StdinData, args.Args, true)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.Routes, DNS: c.DNS}
	for _, a := range c.Addresses {
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: ipamconf.IPNet(a.Prefix),
			Gateway: ipamconf.IP(a.Gateway),
		})
	}
	return res, nil
}

// cmdCheck validates the config and, when a prevResult is given, that it
// lists every configured address (with the configured gateway).
func cmdCheck(args *skel.CmdArgs) error {
	c, err := LoadConfig(args.StdinData, args.Args, true)
	if err != nil {
		return err
	}
	pc := &types.NetConf{}
	if err := cniplugin.Decode(name, args.StdinData, pc); err != nil {
		return err
	}
	prev, err := cniplugin.PrevResult(name, pc)
	if err != nil || prev == nil {
		return err
	}
	for _, a := range c.Addresses {
		found := false
		for _, ipc := range prev.IPs {
			pa, ok := netip.AddrFromSlice(ipc.Address.IP)
			if !ok || pa.Unmap() != a.Prefix.Addr() {
				continue
			}
			found = true
			if a.Gateway.IsValid() {
				g, ok := netip.AddrFromSlice(ipc.Gateway)
				if !ok || g.Unmap() != a.Gateway {
					return cnierr.New(cnierr.Internal, name, "prevResult has %s with gateway %v, config (%s) says %s", pa.Unmap(), ipc.Gateway, a.Field, a.Gateway)
				}
			}
			break
		}
		if !found {
			return cnierr.New(cnierr.Internal, name, "configured address %s (%s) is not in prevResult on interface %s", a.Prefix, a.Field, args.IfName)
		}
	}
	return nil
}

// Plugins that delegate IPAM run this one in-process.
func init() { delegate.Register(Plugin) }
