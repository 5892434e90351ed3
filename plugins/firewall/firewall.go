// Package firewall is the CNI "firewall" meta plugin: chained after a main
// plugin (usually bridge), it lets the pod's forwarded traffic through —
// everything the pod sends, and replies to it — and, with ingressPolicy
// "same-bridge" or "isolated", drops traffic between pods on different
// bridges (and, for "isolated", on the same bridge), with the reference
// plugin's configuration fields.
//
// Where the reference programs iptables chains (or firewalld zones), podnet
// has one nftables table, inet podnet-firewall, whose rules are fixed and
// whose sets hold the pods' addresses; an attachment owns only set elements
// tagged with it, added and removed in one netlink batch (model.go describes
// the datapath, kernel.go applies it). The "backend" field selects nothing:
// "iptables" and "firewalld" configs are both served by the table.
//
// It owns plugins/firewall and the table inet podnet-firewall, except the
// table's "admin" chain, which belongs to the operator.
package firewall

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/nft"
)

const name = "firewall"

// Plugin is the firewall plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet firewall: accepts pods' forwarded traffic and isolates bridges, with one nftables table",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

func attachmentTag(c *Config, args *skel.CmdArgs) (string, error) {
	if err := utils.ValidateContainerID(args.ContainerID); err != nil {
		return "", cnierr.Env(name, "CNI_CONTAINERID", "%s", err.Msg)
	}
	if args.IfName == "" {
		return "", cnierr.Env(name, "CNI_IFNAME", "required")
	}
	return nft.Tag(c.Network, args.ContainerID, args.IfName), nil
}

func add(args *skel.CmdArgs) (types.Result, error) {
	c, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, err
	}
	prev, err := cniplugin.RequirePrevResult(name, &c.conf.NetConf)
	if err != nil {
		return nil, err
	}
	tag, err := attachmentTag(c, args)
	if err != nil {
		return nil, err
	}
	a, err := Compile(c, tag, prev)
	if err != nil {
		return nil, err
	}
	// Even with no address the batch runs: it removes what an earlier ADD
	// of this attachment left and makes the table exist for operators.
	if err := Apply(tag, a.Elements()); err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	return prev, nil
}

// del removes the attachment's elements. It needs neither the netns nor
// prevResult nor a valid ingressPolicy, and succeeds when there is nothing
// to remove.
func del(args *skel.CmdArgs) error {
	c, err := Decode(args.StdinData)
	if err != nil {
		return err
	}
	tag, err := attachmentTag(c, args)
	if err != nil {
		return err
	}
	if _, err := Remove(func(t string) bool { return t == tag }); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "DEL")
	}
	return nil
}

// check verifies that the table holds podnet's rules and exactly the
// elements prevResult and the config call for, tagged with the attachment.
func check(args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &c.conf.NetConf)
	if err != nil {
		return err
	}
	tag, err := attachmentTag(c, args)
	if err != nil {
		return err
	}
	a, err := Compile(c, tag, prev)
	if err != nil {
		return err
	}
	have, rulesOK, err := Read()
	if err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "CHECK")
	}
	fail := func(format string, a ...any) error {
		return cnierr.New(cnierr.Internal, name, "CHECK: "+format, a...)
	}
	want := a.Elements()
	if len(want) > 0 && !rulesOK {
		return fail("the forward chain of inet %s does not hold podnet's rules (someone changed them; the next ADD restores them)", Table)
	}
	mine := map[string]bool{}
	for _, h := range have {
		if h.Tag == tag {
			mine[h.id()] = true
		}
	}
	var missing []string
	for _, w := range want {
		if !mine[w.id()] {
			missing = append(missing, strings.TrimSpace(RenderElements([]Element{w})))
		}
		delete(mine, w.id())
	}
	if len(missing) > 0 {
		return fail("missing from inet %s: %s", Table, strings.Join(missing, "; "))
	}
	if len(mine) > 0 {
		return fail("inet %s holds %d elements of this attachment that the config and prevResult do not call for", Table, len(mine))
	}
	return nil
}

// gc removes the elements of this network's attachments that are not in
// cni.dev/valid-attachments.
func gc(args *skel.CmdArgs) error {
	c, err := Decode(args.StdinData)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, v := range c.conf.ValidAttachments {
		keep[nft.Tag(c.Network, v.ContainerID, v.IfName)] = true
	}
	prefix := nft.NetworkPrefix(c.Network)
	if _, err := Remove(func(t string) bool { return strings.HasPrefix(t, prefix) && !keep[t] }); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "GC")
	}
	return nil
}

// status reports code 50 when nftables cannot be used in this namespace.
func status(args *skel.CmdArgs) error {
	if _, err := ParseConfig(args.StdinData); err != nil {
		return err
	}
	if err := Usable(); err != nil {
		return cnierr.New(cnierr.NotAvailable, name, "%v", fmt.Errorf("nftables is not usable (kernel without nf_tables, or no CAP_NET_ADMIN): %w", err))
	}
	return nil
}
