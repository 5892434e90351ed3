// Package tuning is the CNI "tuning" meta plugin: chained after a main
// plugin, it sets network sysctls inside the pod's namespace and changes
// attributes of the pod's interface (MAC, MTU, promiscuous and
// all-multicast mode, transmit queue length), with the reference plugin's
// configuration fields and result.
//
// Unlike the reference it saves every original value it changes, sysctls
// included, in a state file before changing anything (see state.go for the
// layout), restores them on DEL, rolls back on a failed ADD, and removes
// state files of vanished attachments on GC.
//
// It owns plugins/tuning and its state directory; sysctl file access is
// package sysctl, run inside the pod's namespace with netns.Do.
package tuning

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netns"
	"github.com/podnet/podnet/internal/sysctl"
)

const name = "tuning"

// Plugin is the tuning plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet tuning: sets pod network sysctls and interface attributes, restored on DEL",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     gc,
	Status: nil, // nothing external to depend on
}

func checkAttachment(args *skel.CmdArgs) error {
	if err := utils.ValidateContainerID(args.ContainerID); err != nil {
		return cnierr.Env(name, "CNI_CONTAINERID", "%s", err.Msg)
	}
	return validIfName(args.IfName)
}

func add(args *skel.CmdArgs) (_ types.Result, err error) {
	c, err := ParseConfig(args.StdinData, args.IfName, args.Args)
	if err != nil {
		return nil, err
	}
	prev, err := cniplugin.RequirePrevResult(name, &c.prev.NetConf)
	if err != nil {
		return nil, err
	}
	if err := checkAttachment(args); err != nil {
		return nil, err
	}
	if args.Netns == "" {
		return nil, cnierr.Env(name, "CNI_NETNS", "required for ADD")
	}
	if len(c.Sysctls) == 0 && !c.linkChanges() {
		return prev, nil
	}

	st, err := openStore(c.DataDir, c.Network, true)
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}
	defer st.Close()
	old, err := st.load(args.ContainerID, args.IfName)
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}

	err = netns.Do(args.Netns, func() error { return apply(st, old, c, args) })
	if err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	if c.Mac != nil {
		setResultMac(prev, args.IfName, c.Mac.String())
	}
	return prev, nil
}

// setResultMac updates the MAC of the pod's interface ifName in res: the
// entries with that name in a sandbox, or, when none says where it lives,
// every entry with that name (the reference's rule).
func setResultMac(res *current.Result, ifName, mac string) {
	inSandbox := false
	for _, i := range res.Interfaces {
		if i.Name == ifName && i.Sandbox != "" {
			i.Mac, inSandbox = mac, true
		}
	}
	if inSandbox {
		return
	}
	for _, i := range res.Interfaces {
		if i.Name == ifName {
			i.Mac = mac
		}
	}
}

// apply runs in the pod's namespace: read the originals, save them, then
// change sysctls in config order followed by the link attributes. On
// failure everything changed so far is set back, in reverse order, and the
// state file returns to what it was before this ADD.
func apply(st *store, old *state, c *Config, args *skel.CmdArgs) (err error) {
	saved := &state{ContainerID: args.ContainerID, IfName: args.IfName}
	for _, s := range c.Sysctls {
		v, err := sysctl.Get(s.Key)
		if errors.Is(err, os.ErrNotExist) {
			return cnierr.Field(name, "sysctl", "key %q: /proc/sys/%s does not exist in the pod's network namespace", s.Orig, s.Key)
		}
		if err != nil {
			return cnierr.Wrap(cnierr.IOFailure, name, err, "read original value")
		}
		saved.Sysctls = append(saved.Sysctls, savedSysctl{Key: s.Key, Value: v})
	}
	var link netlink.Link
	if c.linkChanges() {
		link, err = netlink.LinkByName(args.IfName)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "find interface %q in %s", args.IfName, args.Netns)
		}
		a := link.Attrs()
		sl := &savedLink{}
		if c.Mac != nil {
			sl.Mac = a.HardwareAddr.String()
		}
		if c.MTU != 0 {
			sl.MTU = ptr(a.MTU)
		}
		if c.Promisc != nil {
			sl.Promisc = ptr(a.Promisc != 0)
		}
		if c.Allmulti != nil {
			sl.Allmulti = ptr(a.RawFlags&unix.IFF_ALLMULTI != 0)
		}
		if c.TxQLen != nil {
			sl.TxQLen = ptr(a.TxQLen)
		}
		saved.Link = sl
	}

	toSave := saved
	if old != nil {
		m := *old
		m.merge(saved)
		toSave = &m
	}
	if err := st.save(toSave); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "save original values")
	}

	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		var rerrs []error
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				rerrs = append(rerrs, uerr)
			}
		}
		var serr error
		if len(rerrs) > 0 {
			// Keep the originals on disk so DEL can try again.
		} else if old == nil {
			serr = st.remove(args.ContainerID, args.IfName)
		} else {
			serr = st.save(old)
		}
		if len(rerrs) > 0 || serr != nil {
			err = withRollbackError(err, errors.Join(append(rerrs, serr)...))
		}
	}()

	for i, s := range c.Sysctls {
		orig := saved.Sysctls[i].Value
		if sameValue(orig, s.Value) {
			continue
		}
		if err := sysctl.Set(s.Key, s.Value); err != nil {
			return cnierr.Field(name, "sysctl", "key %q: the kernel refused %q: %v", s.Orig, s.Value, unwrapSys(err))
		}
		key := s.Key
		undo = append(undo, func() error { return sysctl.Set(key, orig) })
	}
	if link == nil {
		return nil
	}
	sl := saved.Link
	if c.Mac != nil {
		if err := netlink.LinkSetHardwareAddr(link, c.Mac); err != nil {
			return cnierr.Field(name, "mac", "set %s on %s: %v", c.Mac, args.IfName, err)
		}
		orig, _ := net.ParseMAC(sl.Mac)
		undo = append(undo, func() error { return netlink.LinkSetHardwareAddr(link, orig) })
	}
	if c.Promisc != nil {
		if err := setPromisc(link, *c.Promisc); err != nil {
			return cnierr.Field(name, "promisc", "set %v on %s: %v", *c.Promisc, args.IfName, err)
		}
		orig := *sl.Promisc
		undo = append(undo, func() error { return setPromisc(link, orig) })
	}
	if c.MTU != 0 {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return cnierr.Field(name, "mtu", "set %d on %s: %v", c.MTU, args.IfName, err)
		}
		orig := *sl.MTU
		undo = append(undo, func() error { return netlink.LinkSetMTU(link, orig) })
	}
	if c.Allmulti != nil {
		if err := setAllmulti(link, *c.Allmulti); err != nil {
			return cnierr.Field(name, "allmulti", "set %v on %s: %v", *c.Allmulti, args.IfName, err)
		}
		orig := *sl.Allmulti
		undo = append(undo, func() error { return setAllmulti(link, orig) })
	}
	if c.TxQLen != nil {
		if err := netlink.LinkSetTxQLen(link, *c.TxQLen); err != nil {
			return cnierr.Field(name, "txQLen", "set %d on %s: %v", *c.TxQLen, args.IfName, err)
		}
		orig := *sl.TxQLen
		undo = append(undo, func() error { return netlink.LinkSetTxQLen(link, orig) })
	}
	return nil
}

// withRollbackError appends a failed rollback to err's message, keeping
// err's CNI code.
func withRollbackError(err, rerr error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return types.NewError(te.Code, te.Msg+"; rolling back also failed (DEL will retry from the saved state): "+rerr.Error(), te.Details)
	}
	return fmt.Errorf("%w; rolling back also failed (DEL will retry from the saved state): %w", err, rerr)
}

func ptr[T any](v T) *T { return &v }

func setPromisc(link netlink.Link, on bool) error {
	if on {
		return netlink.SetPromiscOn(link)
	}
	return netlink.SetPromiscOff(link)
}

func setAllmulti(link netlink.Link, on bool) error {
	if on {
		return netlink.LinkSetAllmulticastOn(link)
	}
	return netlink.LinkSetAllmulticastOff(link)
}

// sameValue compares sysctl values the way the kernel prints them: fields
// separated by any whitespace ("4096 87380 6291456" equals the tab-separated
// read-back).
func sameValue(a, b string) bool {
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

// unwrapSys drops package sysctl's "sysctl name=value:" prefix, which the
// caller's message already says.
func unwrapSys(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func check(args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, args.IfName, args.Args)
	if err != nil {
		return err
	}
	if _, err := cniplugin.RequirePrevResult(name, &c.prev.NetConf); err != nil {
		return err
	}
	if args.Netns == "" {
		return cnierr.Env(name, "CNI_NETNS", "required for CHECK")
	}
	return netns.Do(args.Netns, func() error {
		for _, s := range c.Sysctls {
			v, err := sysctl.Get(s.Key)
			if err != nil {
				return cnierr.Wrap(cnierr.Internal, name, err, "check sysctl %q", s.Orig)
			}
			if !sameValue(v, s.Value) {
				return cnierr.New(cnierr.Internal, name, "sysctl %s is %q, configured %q", s.Key, v, s.Value)
			}
		}
		if !c.linkChanges() {
			return nil
		}
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "find interface %q", args.IfName)
		}
		a := link.Attrs()
		if c.Mac != nil && !bytes.Equal(a.HardwareAddr, c.Mac) {
			return cnierr.New(cnierr.Internal, name, "%s has MAC %s, configured %s", args.IfName, a.HardwareAddr, c.Mac)
		}
		if c.Promisc != nil && (a.Promisc != 0) != *c.Promisc {
			return cnierr.New(cnierr.Internal, name, "%s has promisc %v, configured %v", args.IfName, a.Promisc != 0, *c.Promisc)
		}
		if c.MTU != 0 && a.MTU != c.MTU {
			return cnierr.New(cnierr.Internal, name, "%s has MTU %d, configured %d", args.IfName, a.MTU, c.MTU)
		}
		if am := a.RawFlags&unix.IFF_ALLMULTI != 0; c.Allmulti != nil && am != *c.Allmulti {
			return cnierr.New(cnierr.Internal, name, "%s has allmulti %v, configured %v", args.IfName, am, *c.Allmulti)
		}
		if c.TxQLen != nil && a.TxQLen != *c.TxQLen {
			return cnierr.New(cnierr.Internal, name, "%s has txQLen %d, configured %d", args.IfName, a.TxQLen, *c.TxQLen)
		}
		return nil
	})
}

// del restores the saved values if the pod's namespace still exists and
// removes the state. It succeeds when there is nothing to do. A value that
// cannot be restored because its object is gone (the interface, or an
// interface's sysctl) is skipped; any other failure keeps the state file
// and is returned, so the runtime's retry of DEL can finish the job.
func del(args *skel.CmdArgs) error {
	conf, err := parseBase(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkAttachment(args); err != nil {
		return err
	}
	st, err := openStore(conf.DataDir, conf.Name, false)
	if err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}
	if st == nil {
		return nil
	}
	defer st.Close()
	s, err := st.load(args.ContainerID, args.IfName)
	if err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}
	if s == nil {
		return nil
	}
	if args.Netns != "" && netns.Exists(args.Netns) {
		err := netns.Do(args.Netns, func() error { return restore(s) })
		if err != nil && netns.Exists(args.Netns) {
			return cnierr.Wrap(cnierr.Internal, name, err, "restore original values of %s", args.IfName)
		}
	}
	if err := st.remove(args.ContainerID, args.IfName); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "remove state")
	}
	return nil
}

// restore sets back, in the reverse of apply's order, what s saved.
func restore(s *state) error {
	var errs []error
	if !s.Link.empty() {
		errs = append(errs, restoreLink(s.IfName, s.Link))
	}
	for i := len(s.Sysctls) - 1; i >= 0; i-- {
		v := s.Sysctls[i]
		cur, err := sysctl.Get(v.Key)
		if errors.Is(err, os.ErrNotExist) {
			continue // e.g. net/ipv4/conf/<ifname>/... of a deleted interface
		}
		if err == nil && sameValue(cur, v.Value) {
			continue
		}
		if err := sysctl.Set(v.Key, v.Value); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func restoreLink(ifName string, l *savedLink) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil // the interface is gone and its attributes with it
		}
		return err
	}
	var errs []error
	if l.TxQLen != nil {
		errs = append(errs, wrap("txQLen", netlink.LinkSetTxQLen(link, *l.TxQLen)))
	}
	if l.Allmulti != nil {
		errs = append(errs, wrap("allmulti", setAllmulti(link, *l.Allmulti)))
	}
	if l.MTU != nil {
		errs = append(errs, wrap("mtu", netlink.LinkSetMTU(link, *l.MTU)))
	}
	if l.Promisc != nil {
		errs = append(errs, wrap("promisc", setPromisc(link, *l.Promisc)))
	}
	if l.Mac != "" {
		hw, err := net.ParseMAC(l.Mac)
		if err == nil {
			err = netlink.LinkSetHardwareAddr(link, hw)
		}
		errs = append(errs, wrap("mac", err))
	}
	return errors.Join(errs...)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("restore %s: %w", what, err)
}

// gc removes the state of attachments the runtime no longer knows. Their
// namespaces are gone (or about to be), so there is nothing to restore.
func gc(args *skel.CmdArgs) error {
	conf, err := parseBase(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[[2]string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
	}
	st, err := openStore(conf.DataDir, conf.Name, false)
	if err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "")
	}
	if st == nil {
		return nil
	}
	defer st.Close()
	if _, err := st.gc(valid); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, name, err, "garbage-collect state")
	}
	return nil
}
