package netlinkx

// Detach now, reap off the critical path.
//
// Deleting a veth is the most expensive step of a bridge or ptp DEL: the
// kernel unregisters the device synchronously inside the netlink request
// (unregister_netdevice, then rcu_barrier and friends in netdev_run_todo),
// 18-20 ms on a quiet node and much more under load; moving the device to
// another namespace costs the same. The runtime waits for all of it.
//
// So DEL only makes the attachment inert, in two cheap requests: the host
// veth is set down (carrier off on both ends, no frame crosses, the kernel
// removes the IPv4 and IPv6 routes through it) and its alias (IFLA_IFALIAS)
// is set to ReapMarker. The IP can be handed out again at once. A detached reaper
// process (StartReaper: this executable again, with the argv registered by
// SetReaper, stdio on /dev/null, its own session, not waited for) deletes
// the marked links in its namespace, which it inherits from the caller, and
// exits. Every reaper sweeps every marked link, so one that was killed
// leaves nothing behind for long: the next DEL's reaper, a GC (ReapMarked)
// or an ADD that finds the marked pod interface in its way
// (ReapPodLinkIfMarked) removes it.
//
// One reaper per namespace at a time. Starting a reaper is a process start
// (~20 ms of CPU on a small VM); with 50 DELs at once a reaper each cost
// more CPU than the deletions' own waiting and halved DEL throughput. So a
// running reaper holds an abstract unix socket name (abstract names belong
// to the network namespace, and the kernel releases them when the process
// dies, killed or not); a DEL that finds the name held starts no reaper.
// The one at work reaps until a sweep finds nothing marked, lets go of the
// name and looks once more: a DEL marks before it looks at the name, so its
// link is either seen by that last look or finds the name free and starts
// a reaper itself. The name is bound by the DEL and handed to the reaper as
// an inherited descriptor, so it is held from the first look on.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/netns"
)

// ReapMarker starts the alias of a host veth whose attachment was deleted
// and that waits for a reaper. Nothing else may use aliases starting with it:
// reapers delete every link so marked.
const ReapMarker = "podnet-reap"

// reapArgv is the argv (argv[0] included) that makes /proc/self/exe a
// reaper; nil when this executable has none.
var reapArgv atomic.Pointer[[]string]

// SetReaper registers the arguments with which this executable
// (/proc/self/exe) runs as a reaper: it must call ReapMarked in the
// namespace it starts in and exit. The argument "--first=INDEX" is appended
// for the link to delete first. Without a registered reaper (test binaries
// of other packages, programs that embed the plugins), DetachPodLink's
// callers delete synchronously. A nil argv unregisters.
func SetReaper(argv ...string) {
	if argv == nil {
		reapArgv.Store(nil)
		return
	}
	a := append([]string(nil), argv...)
	reapArgv.Store(&a)
}

// reaperEnv is set in every reaper's environment.
const reaperEnv = "PODNET_REAPER"

// ErrNoReaper is returned by StartReaper when no reaper is registered.
var ErrNoReaper = errors.New("no reaper registered for this executable")

// StartReaper starts a reaper process in the calling thread's network
// namespace (the child inherits it: call it from the node namespace, never
// from inside a closure run in a pod's namespace) and does not wait for it.
// first, when non-zero, is the index of the link to delete before sweeping.
// Its standard streams are /dev/null, so it never holds a runtime's pipe
// open, and it runs in a session of its own.
func StartReaper(first int) error {
	argv := reapArgv.Load()
	if argv == nil {
		return ErrNoReaper
	}
	if os.Getenv(reaperEnv) != "" {
		// A reaper never starts reapers: a misregistered argv (one that
		// does not make this executable reap) must not multiply.
		return fmt.Errorf("start reaper: %w", ErrNoReaper)
	}
	args := append([]string(nil), (*argv)...)
	if first > 0 {
		args = append(args, "--first="+strconv.Itoa(first))
	}
	name, err := holdReaperName()
	if errors.Is(err, unix.EADDRINUSE) {
		return nil // the reaper at work here looks again before it leaves
	}
	if err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	defer name.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	defer null.Close()
	p, err := os.StartProcess("/proc/self/exe", args, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{reaperEnv + "=1", reaperFDEnv + "=3"},
		Files: []*os.File{null, null, null, name},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	// Not waited for by the caller. In a short-lived plugin process the
	// goroutine dies with it (the reaper is re-parented); in a long-lived
	// one it collects the exit status so no zombie is left.
	go func() { _, _ = p.Wait() }()
	return nil
}

// reaperName is the abstract unix socket name (see the top of this file)
// that says "a reaper is at work in this network namespace".
const reaperName = "@podnet-reaper"

// reaperFDEnv names, in a reaper's environment, the inherited descriptor
// that holds reaperName.
const reaperFDEnv = "PODNET_REAPER_FD"

// holdReaperName binds reaperName in the calling thread's network
// namespace; unix.EADDRINUSE means a reaper holds it.
func holdReaperName() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: reaperName}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), reaperName), nil
}

// ReaperBusy reports whether a reaper is at work in the calling thread's
// network namespace (holds the reaper name).
func ReaperBusy() (bool, error) {
	f, err := holdReaperName()
	if errors.Is(err, unix.EADDRINUSE) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, f.Close()
}

// RunReaper is what a reaper process does in its namespace (h's): delete
// every marked link, first the one with index first, and sweep again while
// DELs keep marking links; then let go of the reaper name and look once
// more, taking the name back and going on if a link was marked meanwhile
// and no other reaper took over. It returns how many links it deleted.
// Run by hand (no inherited name) it sweeps all the same.
func RunReaper(h *netlink.Handle, first int) (int, error) {
	var name *os.File
	if fd, err := strconv.Atoi(os.Getenv(reaperFDEnv)); err == nil && fd > 2 {
		name = os.NewFile(uintptr(fd), reaperName)
	} else if f, err := holdReaperName(); err == nil {
		name = f
	}
	total := 0
	for {
		for {
			n, err := ReapMarked(h, first)
			first = 0
			total += n
			if err != nil {
				if name != nil {
					name.Close()
				}
				return total, err
			}
			if n == 0 {
				break
			}
		}
		if name != nil {
			name.Close()
		}
		links, err := Retry(func() ([]netlink.Link, error) { return h.LinkList() })
		if err != nil {
			return total, fmt.Errorf("list links: %w", err)
		}
		if !slices.ContainsFunc(links, Marked) {
			return total, nil
		}
		if name, err = holdReaperName(); err != nil {
			return total, nil // another reaper is at work and will see them
		}
	}
}

// Marked reports whether l waits for a reaper.
func Marked(l netlink.Link) bool {
	return strings.HasPrefix(l.Attrs().Alias, ReapMarker)
}

// ReapMarked deletes every link marked with ReapMarker in h's namespace,
// first the one with index first (if non-zero and marked). Links that
// vanish meanwhile (another reaper, the namespace of their peer being torn
// down) are not an error; unmarked links are never touched. It returns how
// many links it deleted.
func ReapMarked(h *netlink.Handle, first int) (int, error) {
	n := 0
	var errs []error
	del := func(l netlink.Link) {
		// Re-read: the index may have been deleted (and in theory reused)
		// since the dump.
		cur, err := h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			if !IsNotFound(err) {
				errs = append(errs, fmt.Errorf("look up %d: %w", l.Attrs().Index, err))
			}
			return
		}
		if !Marked(cur) {
			return
		}
		if err := h.LinkDel(cur); err != nil {
			if !IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s: %w", cur.Attrs().Name, err))
			}
			return
		}
		n++
	}
	if first > 0 {
		attrs := netlink.NewLinkAttrs()
		attrs.Index = first
		del(&netlink.Device{LinkAttrs: attrs})
	}
	links, err := Retry(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	for _, l := range links {
		if Marked(l) && l.Attrs().Index != first {
			del(l)
		}
	}
	return n, errors.Join(errs...)
}

// Detach says how DetachPodLink recognises the host end of an attachment
// and what it cleans up.
type Detach struct {
	// Path is the pod namespace (CNI_NETNS), IfName the pod interface.
	Path, IfName string
	// Bridge, when set, is the bridge the host veth must be a port of;
	// empty requires a host veth that is no bridge port (ptp).
	Bridge string
	// Info is appended to ReapMarker in the alias (e.g. the attachment's
	// tag), for an operator who wonders what the link was.
	Info string
}

// ErrNotOurs is returned (wrapped) by DetachPodLink when the pod interface
// exists but its peer is not a host veth it may detach: the caller should
// delete the pod interface synchronously instead.
var ErrNotOurs = errors.New("peer is not this attachment's host veth")

// DetachPodLink makes the attachment of d.IfName in the pod namespace inert
// without deleting anything: its peer in node's namespace (the caller's) is
// marked with ReapMarker and set down. Setting it down also removes every
// route through it, IPv4 and IPv6 alike (fib_sync_down_dev, fib6_ifdown),
// so a new attachment can route the same pod address at once. It returns the host veth's index, 0
// when there is nothing to detach (no namespace, no interface).
func DetachPodLink(node *netlink.Handle, d Detach) (int, error) {
	podNS, gone, err := OpenNS(d.Path)
	if err != nil {
		return 0, err
	}
	if gone {
		return 0, nil
	}
	defer podNS.Close()
	pod, err := NewHandleAt(podNS)
	if err != nil {
		return 0, err
	}
	defer pod.Close()
	pl, err := pod.LinkByName(d.IfName)
	if err != nil {
		if IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("look up %q in %s: %w", d.IfName, d.Path, err)
	}
	host, err := hostPeer(node, pl)
	if err != nil {
		return 0, err
	}
	if err := checkMaster(node, host, d.Bridge); err != nil {
		return 0, err
	}
	if err := MarkForReap(node, host, d.Info); err != nil {
		return 0, err
	}
	return host.Attrs().Index, nil
}

// checkMaster verifies that host is a port of bridge (no bridge port at
// all when bridge is empty).
func checkMaster(node *netlink.Handle, host netlink.Link, bridge string) error {
	m := host.Attrs().MasterIndex
	if bridge == "" {
		if m != 0 {
			return fmt.Errorf("%s has master %d, want none: %w", host.Attrs().Name, m, ErrNotOurs)
		}
		return nil
	}
	if m == 0 {
		return fmt.Errorf("%s is not a port of %q: %w", host.Attrs().Name, bridge, ErrNotOurs)
	}
	br, err := node.LinkByName(bridge)
	if err != nil {
		if IsNotFound(err) {
			return fmt.Errorf("bridge %q: %v: %w", bridge, err, ErrNotOurs)
		}
		return fmt.Errorf("look up bridge %q: %w", bridge, err)
	}
	if br.Attrs().Index != m {
		return fmt.Errorf("%s is not a port of %q: %w", host.Attrs().Name, bridge, ErrNotOurs)
	}
	return nil
}

// MarkForReap sets l's alias to ReapMarker (plus " "+info) and l down. A
// link that vanishes meanwhile (a concurrent reaper) is not an error.
func MarkForReap(h *netlink.Handle, l netlink.Link, info string) error {
	alias := ReapMarker
	if info != "" {
		alias += " " + info
	}
	if len(alias) > 255 {
		alias = alias[:255]
	}
	// Once marked, any running reaper may delete the link: gone is fine.
	if err := h.LinkSetAlias(l, alias); err != nil && !IsNotFound(err) {
		return fmt.Errorf("mark %s for reaping: %w", l.Attrs().Name, err)
	}
	if err := h.LinkSetDown(l); err != nil && !IsNotFound(err) {
		return fmt.Errorf("set %s down: %w", l.Attrs().Name, err)
	}
	return nil
}

// hostPeer returns the peer of the pod veth pl in node's namespace: a veth
// whose own peer index is pl's. For a veth, the pod end's IFLA_LINK is its
// peer's index in the peer's namespace; the cross-check makes sure node's
// namespace is that one.
func hostPeer(node *netlink.Handle, pl netlink.Link) (netlink.Link, error) {
	if _, ok := pl.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("%q is a %s link, not a veth: %w", pl.Attrs().Name, pl.Type(), ErrNotOurs)
	}
	idx := pl.Attrs().ParentIndex
	if idx == 0 {
		return nil, fmt.Errorf("%q has no peer index: %w", pl.Attrs().Name, ErrNotOurs)
	}
	host, err := node.LinkByIndex(idx)
	if err != nil {
		if IsNotFound(err) {
			return nil, fmt.Errorf("peer %d of %q not in this namespace: %w", idx, pl.Attrs().Name, ErrNotOurs)
		}
		return nil, fmt.Errorf("look up peer %d of %q: %w", idx, pl.Attrs().Name, err)
	}
	if _, ok := host.(*netlink.Veth); !ok || host.Attrs().ParentIndex != pl.Attrs().Index {
		return nil, fmt.Errorf("link %d (%s) is not the peer of %q: %w", idx, host.Attrs().Name, pl.Attrs().Name, ErrNotOurs)
	}
	return host, nil
}

// StartReleasePodLink is DEL's part for the pod veth. With a reaper
// registered it detaches the attachment (DetachPodLink) before it returns
// and starts a reaper for the host veth in the background, in the caller's
// namespace; wait waits for the start. Otherwise, or when the interface cannot be detached (its peer is
// not recognisably ours), it deletes the pod interface in the background
// as StartDelPodLink does, and wait waits for that. If the reaper cannot be
// started, wait deletes the host veth itself. Call it from the node
// namespace (see StartReaper); wait must be called.
func StartReleasePodLink(d Detach) (wait func() error) {
	if reapArgv.Load() == nil {
		return StartDelPodLink(d.Path, d.IfName)
	}
	node, err := NewHandle()
	if err != nil {
		return func() error { return err }
	}
	defer node.Close()
	idx, err := DetachPodLink(node, d)
	if errors.Is(err, ErrNotOurs) {
		return StartDelPodLink(d.Path, d.IfName)
	}
	if idx == 0 {
		return func() error { return err }
	}
	// Starting a process returns only once it has exec'd (a millisecond,
	// more on a busy node): let that overlap the caller's other work. The
	// goroutine enters the caller's namespace explicitly, whichever thread
	// it runs on.
	here, nerr := vns.Get()
	if nerr != nil {
		return func() error {
			if derr := delHost(idx); derr != nil {
				return errors.Join(err, fmt.Errorf("start reaper: %w", nerr), derr)
			}
			return err
		}
	}
	done := make(chan error, 1)
	go func() {
		defer here.Close()
		done <- netns.DoHandle(here, func() error {
			if serr := StartReaper(idx); serr != nil {
				if derr := delHost(idx); derr != nil {
					return errors.Join(serr, derr)
				}
			}
			return nil
		})
	}()
	return func() error {
		if serr := <-done; serr != nil {
			return errors.Join(err, serr)
		}
		return err
	}
}

// delHost is the fallback when no reaper starts: delete link index in the
// calling thread's namespace now.
func delHost(index int) error {
	h, err := NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	_, err = DelLinkByIndex(h, index)
	return err
}

// DelLinkByIndex deletes link index if it is there; it reports whether it was.
func DelLinkByIndex(h *netlink.Handle, index int) (bool, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Index = index
	if err := h.LinkDel(&netlink.Device{LinkAttrs: attrs}); err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return true, fmt.Errorf("delete link %d: %w", index, err)
	}
	return true, nil
}

// ReapPodLinkIfMarked handles an ADD that found ifName already in the pod
// namespace: if that interface is a veth whose peer in node's namespace is
// marked for reaping (a deleted attachment whose reaper has not run yet),
// it deletes it synchronously and reports true, so the caller can retry.
func ReapPodLinkIfMarked(node, pod *netlink.Handle, ifName string) (bool, error) {
	pl, err := pod.LinkByName(ifName)
	if err != nil {
		if IsNotFound(err) {
			return true, nil // gone meanwhile: retry
		}
		return false, err
	}
	host, err := hostPeer(node, pl)
	if err != nil {
		if errors.Is(err, ErrNotOurs) {
			return false, nil
		}
		return false, err
	}
	if !Marked(host) {
		return false, nil
	}
	if _, err := DelLinkByIndex(node, host.Attrs().Index); err != nil {
		return false, err
	}
	return true, nil
}

// ReapInfo is the text DEL puts after ReapMarker: which attachment the
// link belonged to.
func ReapInfo(network, containerID, ifName string) string {
	return "net=" + network + " if=" + ifName + " id=" + containerID
}
