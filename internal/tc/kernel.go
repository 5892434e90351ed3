package tc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RedirectPriority is the filter priority of the redirect on the ingress
// hook. A whole priority is ours, so the redirect can be replaced or removed
// without touching other filters on the device.
const RedirectPriority = 1

// ingressHandle is the handle of the ingress (or clsact) qdisc, "ffff:".
var ingressHandle = netlink.MakeHandle(0xffff, 0)

// rootHandle is the handle podnet gives a root tbf, "1:".
var rootHandle = netlink.MakeHandle(1, 0)

// TicksPerUsec is the kernel's scheduler tick length, from /proc/net/psched.
func TicksPerUsec() float64 { return netlink.TickInUsec() }

// dumpRetries bounds retries of netlink dumps interrupted by a concurrent
// change (NLM_F_DUMP_INTR).
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// SetRootTBF installs (or replaces) a tbf as the root qdisc of the link.
func SetRootTBF(linkIndex int, p TBF) error {
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: rootHandle, Parent: netlink.HANDLE_ROOT},
		Rate:       p.Rate,
		Buffer:     p.Buffer,
		Limit:      p.Limit,
	}
	if err := netlink.QdiscReplace(q); err != nil {
		return fmt.Errorf("add tbf root qdisc (%s) to ifindex %d: %w", p, linkIndex, err)
	}
	return nil
}

// DelRootQdisc removes the link's root qdisc, which puts the device's
// default back. A device without one (or gone) is not an error.
func DelRootQdisc(linkIndex int) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Parent: netlink.HANDLE_ROOT}, QdiscType: "tbf"}
	err := netlink.QdiscDel(q)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("delete root qdisc of ifindex %d: %w", linkIndex, err)
}

// RootTBF reads back the link's root tbf. ok is false when the root qdisc is
// not a tbf (or there is none).
func RootTBF(linkIndex int) (p TBF, ok bool, err error) {
	qs, err := retryDump(func() ([]netlink.Qdisc, error) {
		return netlink.QdiscList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: linkIndex}})
	})
	if err != nil {
		return TBF{}, false, fmt.Errorf("list qdiscs of ifindex %d: %w", linkIndex, err)
	}
	for _, q := range qs {
		if q.Attrs().Parent != netlink.HANDLE_ROOT {
			continue
		}
		if t, isTbf := q.(*netlink.Tbf); isTbf {
			return TBF{Rate: t.Rate, Buffer: t.Buffer, Limit: t.Limit}, true, nil
		}
		return TBF{}, false, nil
	}
	return TBF{}, false, nil
}

// EnsureIngressQdisc makes sure the link has an ingress hook for filters:
// an ingress qdisc is added unless an ingress or clsact qdisc is already
// there. created tells the caller whether it should remove it on rollback.
func EnsureIngressQdisc(linkIndex int) (created bool, err error) {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	err = netlink.QdiscAdd(q)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return false, fmt.Errorf("add ingress qdisc to ifindex %d: %w", linkIndex, err)
}

// DelIngressQdisc removes the link's ingress qdisc and with it every
// ingress filter. Missing is not an error.
func DelIngressQdisc(linkIndex int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	err := netlink.QdiscDel(q)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("delete ingress qdisc of ifindex %d: %w", linkIndex, err)
}

// SetRedirect makes every packet the link receives go to the egress of the
// device toIndex (a u32 match-all filter with a mirred egress redirect at
// RedirectPriority on the ingress hook), replacing an earlier redirect at
// that priority. The link needs an ingress hook (EnsureIngressQdisc).
func SetRedirect(linkIndex, toIndex int) error {
	if err := DelRedirect(linkIndex); err != nil {
		return err
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: linkIndex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Priority:  RedirectPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		// Sel nil: netlink encodes a match-all selector.
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      toIndex,
		}},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("add redirect filter ifindex %d -> %d: %w", linkIndex, toIndex, err)
	}
	return nil
}

// DelRedirect removes the filters at RedirectPriority on the link's ingress
// hook. Missing (no hook, no filter, no link) is not an error.
func DelRedirect(linkIndex int) error {
	f := &netlink.U32{FilterAttrs: netlink.FilterAttrs{
		LinkIndex: linkIndex,
		Parent:    netlink.HANDLE_MIN_INGRESS,
		Priority:  RedirectPriority,
		Protocol:  unix.ETH_P_ALL,
	}}
	err := netlink.FilterDel(f)
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("delete redirect filter of ifindex %d: %w", linkIndex, err)
}

// Redirect reads back the target of the link's redirect at
// RedirectPriority; ok is false when there is none.
func Redirect(linkIndex int) (toIndex int, ok bool, err error) {
	fs, err := retryDump(func() ([]netlink.Filter, error) {
		return netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: linkIndex}}, netlink.HANDLE_MIN_INGRESS)
	})
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return 0, false, nil // no ingress hook
		}
		return 0, false, fmt.Errorf("list ingress filters of ifindex %d: %w", linkIndex, err)
	}
	for _, f := range fs {
		u, isU32 := f.(*netlink.U32)
		if !isU32 || u.Priority != RedirectPriority {
			continue
		}
		for _, a := range u.Actions {
			if m, isMirred := a.(*netlink.MirredAction); isMirred && m.MirredAction == netlink.TCA_EGRESS_REDIR {
				return m.Ifindex, true, nil
			}
		}
		if u.RedirIndex != 0 {
			return u.RedirIndex, true, nil
		}
	}
	return 0, false, nil
}

// CreateIfb adds an ifb device, up, with the given MTU and alias (the
// alias is set in the same request, so an ifb never exists unlabelled).
func CreateIfb(name, alias string, mtu int) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.Alias = alias
	attrs.MTU = mtu
	attrs.Flags = net.FlagUp
	// txqueuelen 0, as the reference plugin: the tbf on the ifb is the queue.
	attrs.TxQLen = 0
	if err := netlink.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil {
		return nil, fmt.Errorf("add ifb %q: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("read back ifb %q: %w", name, err)
	}
	if l.Attrs().Alias != alias {
		// Kernels that ignore IFLA_IFALIAS on create: set it now.
		if err := netlink.LinkSetAlias(l, alias); err != nil {
			_ = netlink.LinkDel(l)
			return nil, fmt.Errorf("set alias of ifb %q: %w", name, err)
		}
		l.Attrs().Alias = alias
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			_ = netlink.LinkDel(l)
			return nil, fmt.Errorf("set ifb %q up: %w", name, err)
		}
	}
	return l, nil
}

// Ifb returns the ifb device called name, or nil if there is none (a
// device of that name that is not an ifb is an error).
func Ifb(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up %q: %w", name, err)
	}
	if l.Type() != "ifb" {
		return nil, fmt.Errorf("device %q exists and is a %s, not an ifb", name, l.Type())
	}
	return l, nil
}

// Ifbs lists every ifb device in the namespace.
func Ifbs() ([]netlink.Link, error) {
	ls, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range ls {
		if l.Type() == "ifb" {
			out = append(out, l)
		}
	}
	return out, nil
}

// DelLink deletes the link by index; a link already gone is not an error.
func DelLink(l netlink.Link) error {
	err := netlink.LinkDel(l)
	if err == nil || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("delete %s %q: %w", l.Type(), l.Attrs().Name, err)
}

// Probe checks that this kernel can do what the bandwidth plugin needs (ifb
// devices, tbf, the ingress qdisc, u32 and mirred) by building it all in a
// throwaway network namespace, on a thread that exits afterwards, so the
// node's namespace is never touched. It returns nil when the throwaway
// namespace cannot be made (no evidence either way), after checking that
// the scheduler clock is readable.
func Probe() error {
	if _, err := os.ReadFile("/proc/net/psched"); err != nil {
		return fmt.Errorf("read scheduler clock: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread dies with this goroutine, and its
		// namespace with it.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- nil
			return
		}
		errc <- probeHere()
	}()
	return <-errc
}

func probeHere() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	ifb, err := CreateIfb("podnetprobe0", "podnet probe", 1500)
	if err != nil {
		return err
	}
	p, err := Params(8_000_000, 80_000, TicksPerUsec())
	if err != nil {
		return err
	}
	if err := SetRootTBF(ifb.Attrs().Index, p); err != nil {
		return err
	}
	if _, err := EnsureIngressQdisc(lo.Attrs().Index); err != nil {
		return err
	}
	return SetRedirect(lo.Attrs().Index, ifb.Attrs().Index)
}
