// Package bandwidth is the CNI "bandwidth" plugin: chained after a plugin
// that gives the pod a veth, it limits the pod's traffic with token buckets,
// with the fields, result and device names of the reference plugin v1.9.1.
//
//   - ingress (to the pod): a tbf root qdisc on the host end of the veth,
//     whose egress is the pod's ingress;
//   - egress (from the pod): the host veth's ingress hook redirects every
//     packet to an ifb device ("bwp" + hash) whose root qdisc is a tbf; the
//     ifb is added to the result's interfaces.
//
// DEL removes the ifb (the veth's qdiscs go with the veth, which the main
// plugin deletes); it needs neither the netns nor a prevResult. GC removes
// podnet's ifbs of the network whose attachment is no longer valid,
// recognising them by their alias (see config.go). STATUS builds the whole
// arrangement in a throwaway namespace.
//
// It owns the ifb devices it names and the tc objects it puts on the host
// veth (root qdisc, ingress qdisc, the redirect filter at tc.RedirectPriority);
// it never touches the pod's namespace except to read its interface.
package bandwidth

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/tc"
)

const name = "bandwidth"

// Plugin is the bandwidth plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet bandwidth: limits a pod's ingress and egress rate with tbf and an ifb",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: status,
}

// testHookAfterIfb, when set by a test, runs after the ifb is created and
// shaped; an error from it makes ADD fail and roll back.
var testHookAfterIfb func() error

func add(args *skel.CmdArgs) (_ types.Result, err error) {
	conf, err := parseConfig(args.StdinData, tc.TicksPerUsec())
	if err != nil {
		return nil, err
	}
	prev, err := cniplugin.PrevResult(name, &conf.NetConf)
	if err != nil {
		return nil, err
	}
	if !conf.Shaped() {
		if prev == nil {
			return cniplugin.EmptyResult(), nil
		}
		return prev, nil
	}
	if prev == nil {
		return nil, cnierr.Field(name, "prevResult", "required: bandwidth must be chained after a plugin that creates the pod's veth")
	}
	host, err := hostVeth(args, prev)
	if err != nil {
		return nil, err
	}
	hostIdx := host.Attrs().Index

	// Rollback: undo what this ADD made, newest first, when it fails.
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		var uerrs []error
		for i := len(undo) - 1; i >= 0; i-- {
			uerrs = append(uerrs, undo[i]())
		}
		if uerr := errors.Join(uerrs...); uerr != nil {
			err = cnierr.Wrap(cnierr.Internal, name, errors.Join(err, fmt.Errorf("rollback: %w", uerr)), "")
		}
	}()

	if conf.Ingress != nil {
		if err = tc.SetRootTBF(hostIdx, conf.Ingress.TBF); err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "shape ingress on %s", host.Attrs().Name)
		}
		undo = append(undo, func() error { return tc.DelRootQdisc(hostIdx) })
	}

	res := prev
	if conf.Egress != nil {
		// No := below: err is the named result the rollback looks at.
		var ifbName string
		var ifb netlink.Link
		var created bool
		if ifbName, err = pickIfbName(conf.Name, args.ContainerID, args.IfName); err != nil {
			return nil, err
		}
		ifb, err = tc.CreateIfb(ifbName, aliasFor(conf.Name, args.ContainerID, args.IfName), host.Attrs().MTU)
		if err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		undo = append(undo, func() error { return tc.DelLink(ifb) })
		ifbIdx := ifb.Attrs().Index
		if err = tc.SetRootTBF(ifbIdx, conf.Egress.TBF); err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "shape egress on %s", ifbName)
		}
		if testHookAfterIfb != nil {
			if err = testHookAfterIfb(); err != nil {
				return nil, err
			}
		}
		created, err = tc.EnsureIngressQdisc(hostIdx)
		if err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "redirect %s to %s", host.Attrs().Name, ifbName)
		}
		if created {
			undo = append(undo, func() error { return tc.DelIngressQdisc(hostIdx) })
		} else {
			undo = append(undo, func() error { return tc.DelRedirect(hostIdx) })
		}
		if err = tc.SetRedirect(hostIdx, ifbIdx); err != nil {
			return nil, cnierr.Wrap(cnierr.Internal, name, err, "redirect %s to %s", host.Attrs().Name, ifbName)
		}
		res = withIfb(prev, ifb)
	}
	return res, nil
}

// withIfb returns a copy of prev with the ifb appended to its interfaces.
func withIfb(prev *current.Result, ifb netlink.Link) *current.Result {
	r := *prev
	r.Interfaces = append(append([]*current.Interface(nil), prev.Interfaces...), &current.Interface{
		Name: ifb.Attrs().Name,
		Mac:  ifb.Attrs().HardwareAddr.String(),
	})
	return &r
}

// pickIfbName chooses the name for a new ifb: the primary name unless
// another attachment holds it, else the alternate. An ifb left by an
// earlier ADD of the same attachment (a runtime retrying ADD) is replaced.
func pickIfbName(network, containerID, ifname string) (string, error) {
	alias := aliasFor(network, containerID, ifname)
	primary, alternate := ifbNames(network, containerID, ifname)
	for _, n := range []string{primary, alternate} {
		l, err := tc.Ifb(n)
		if err != nil {
			return "", cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		if l == nil {
			return n, nil
		}
		if l.Attrs().Alias == alias {
			if err := tc.DelLink(l); err != nil {
				return "", cnierr.Wrap(cnierr.Internal, name, err, "replace stale ifb")
			}
			return n, nil
		}
	}
	return "", cnierr.New(cnierr.Internal, name, "ifb names %s and %s are both held by other attachments", primary, alternate)
}

// ownIfbs finds the ifbs of an attachment: the primary or alternate name
// labelled for it, then an unlabelled primary (made by the reference
// plugin). The labelled one, if any, comes first.
func ownIfbs(network, containerID, ifname string) ([]netlink.Link, error) {
	alias := aliasFor(network, containerID, ifname)
	primary, alternate := ifbNames(network, containerID, ifname)
	var labelled, unlabelled []netlink.Link
	for _, n := range []string{primary, alternate} {
		l, err := tc.Ifb(n)
		if err != nil {
			return nil, err
		}
		switch {
		case l == nil:
		case l.Attrs().Alias == alias:
			labelled = append(labelled, l)
		case n == primary && l.Attrs().Alias == "":
			unlabelled = append(unlabelled, l)
		}
	}
	return append(labelled, unlabelled...), nil
}

// hostVeth finds the host end of the pod's veth: the peer of args.IfName in
// the pod's namespace, which must be listed in prev as a host interface.
func hostVeth(args *skel.CmdArgs, prev *current.Result) (netlink.Link, error) {
	if len(prev.Interfaces) == 0 {
		return nil, cnierr.Field(name, "prevResult", "lists no interfaces; bandwidth needs the main plugin's veth")
	}
	if args.Netns == "" {
		return nil, cnierr.Env(name, "CNI_NETNS", "required to find the pod's veth")
	}
	var peer int
	err := netns.Do(args.Netns, func() error {
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return err
		}
		v, ok := l.(*netlink.Veth)
		if !ok {
			return fmt.Errorf("%s is a %s, not a veth", args.IfName, l.Type())
		}
		peer, err = netlink.VethPeerIndex(v)
		return err
	})
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, name, "find the veth peer of %s in %s: %v", args.IfName, args.Netns, err)
	}
	l, err := netlink.LinkByIndex(peer)
	if err != nil {
		return nil, cnierr.New(cnierr.Internal, name, "the veth peer (ifindex %d) of %s is not in the host namespace: %v", peer, args.IfName, err)
	}
	for _, i := range prev.Interfaces {
		if i.Sandbox == "" && i.Name == l.Attrs().Name {
			return l, nil
		}
	}
	return nil, cnierr.New(cnierr.Internal, name, "the veth peer %s of %s is not among prevResult's host interfaces", l.Attrs().Name, args.IfName)
}

func check(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData, tc.TicksPerUsec())
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &conf.NetConf)
	if err != nil {
		return err
	}
	if !conf.Shaped() {
		return nil
	}
	host, err := hostVeth(args, prev)
	if err != nil {
		return err
	}
	hostIdx := host.Attrs().Index
	if conf.Ingress != nil {
		got, ok, err := tc.RootTBF(hostIdx)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		if !ok {
			return cnierr.New(cnierr.Internal, name, "%s has no tbf root qdisc (ingress shaping missing)", host.Attrs().Name)
		}
		if !conf.Ingress.TBF.Equal(got) {
			return cnierr.New(cnierr.Internal, name, "tbf on %s is %s, want %s", host.Attrs().Name, got, conf.Ingress.TBF)
		}
	}
	if conf.Egress != nil {
		ifbs, err := ownIfbs(conf.Name, args.ContainerID, args.IfName)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		if len(ifbs) == 0 {
			p, _ := ifbNames(conf.Name, args.ContainerID, args.IfName)
			return cnierr.New(cnierr.Internal, name, "ifb %s of this attachment is missing (egress shaping)", p)
		}
		ifb := ifbs[0]
		iname := ifb.Attrs().Name
		listed := false
		for _, i := range prev.Interfaces {
			listed = listed || i.Name == iname
		}
		if !listed {
			return cnierr.New(cnierr.Internal, name, "ifb %s is not in prevResult's interfaces", iname)
		}
		got, ok, err := tc.RootTBF(ifb.Attrs().Index)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		if !ok {
			return cnierr.New(cnierr.Internal, name, "ifb %s has no tbf root qdisc", iname)
		}
		if !conf.Egress.TBF.Equal(got) {
			return cnierr.New(cnierr.Internal, name, "tbf on %s is %s, want %s", iname, got, conf.Egress.TBF)
		}
		to, ok, err := tc.Redirect(hostIdx)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "")
		}
		if !ok || to != ifb.Attrs().Index {
			return cnierr.New(cnierr.Internal, name, "%s does not redirect its received traffic to %s", host.Attrs().Name, iname)
		}
	}
	return nil
}

func del(args *skel.CmdArgs) error {
	conf, err := decode(args.StdinData)
	if err != nil {
		return err
	}
	ifbs, err := ownIfbs(conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	var errs []error
	for _, l := range ifbs {
		errs = append(errs, tc.DelLink(l))
	}
	if err := errors.Join(errs...); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	return nil
}

func gc(args *skel.CmdArgs) error {
	conf, err := decode(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[aliasFor(conf.Name, a.ContainerID, a.IfName)] = true
	}
	ifbs, err := tc.Ifbs()
	if err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	var errs []error
	for _, l := range ifbs {
		alias := l.Attrs().Alias
		if !aliasNetwork(alias, conf.Name) || valid[alias] {
			continue
		}
		errs = append(errs, tc.DelLink(l))
	}
	if err := errors.Join(errs...); err != nil {
		return cnierr.Wrap(cnierr.Internal, name, err, "gc")
	}
	return nil
}

func status(args *skel.CmdArgs) error {
	if _, err := decode(args.StdinData); err != nil {
		return err
	}
	if err := tc.Probe(); err != nil {
		return cnierr.New(cnierr.NotAvailable, name, "traffic control is not usable on this node: %v", err)
	}
	return nil
}
