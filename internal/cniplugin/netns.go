package cniplugin

import (
	"fmt"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/trace"
)

// The plugin's own namespace as CNI_NETNS.
//
// A runtime (or a person with cnitool) that passes the namespace the plugin
// itself runs in — the node's — as CNI_NETNS, e.g. /proc/self/ns/net, asks
// for the pod's interface, addresses and routes in the node namespace.
// Done, it gave the node an eth0 with a pod address and routes and took a
// reservation, then failed (the spec library refuses a result whose
// sandbox is the plugin's own namespace) and left all of it behind. A DEL
// so called deleted the node's own interface named CNI_IFNAME.
//
// Every verb a runtime runs goes through the Cmd* methods below (Funcs
// wraps them, and the in-process test helpers call them), so the check is
// made in this one place, before a plugin parses or touches anything:
//
//   - ADD and CHECK are refused with code 4 naming CNI_NETNS.
//   - DEL runs as if the namespace were gone (CNI_NETNS empty, which every
//     plugin's DEL already handles): it releases the attachment's
//     reservation and node-side state keyed by container ID, deletes
//     nothing in the node namespace by CNI_IFNAME, and succeeds. Refusing
//     it instead would leave a runtime retrying a DEL that can never
//     succeed, and no ADD so called can have made anything for it to
//     remove. In a plugin process Main also unsets CNI_NETNS before the
//     spec library runs: the library would otherwise fail the DEL with
//     code 8 after the plugin ran, and an IPAM plugin exec'd from it
//     inherits the environment.
//
// Namespaces are compared by identity (device and inode of the nsfs file),
// so any path naming the same namespace (a bind mount under /run/netns,
// /proc/PID/ns/net) is caught. "Own" is the calling thread's namespace
// (/proc/thread-self/ns/net): a plugin process has one namespace for all
// its threads, and in-process callers (tests) run the verb on a thread
// locked into the node namespace.

// ownNetnsPath is the calling thread's network namespace.
const ownNetnsPath = "/proc/thread-self/ns/net"

// IsOwnNetns reports whether path names the calling thread's network
// namespace. A path that cannot be stat'ed (gone, not there) is not the
// own namespace: the plugin reports that itself.
func IsOwnNetns(path string) (bool, error) {
	var target, own unix.Stat_t
	if err := unix.Stat(path, &target); err != nil {
		return false, nil
	}
	runtime.LockOSThread()
	err := unix.Stat(ownNetnsPath, &own)
	runtime.UnlockOSThread()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", ownNetnsPath, err)
	}
	return target.Dev == own.Dev && target.Ino == own.Ino, nil
}

// ownNetns is the check of ADD and CHECK: a code-4 error when CNI_NETNS is
// the plugin's own namespace.
func (p *Plugin) ownNetns(args *skel.CmdArgs) (own bool, err error) {
	if args.Netns == "" {
		return false, nil
	}
	own, err = IsOwnNetns(args.Netns)
	if err != nil {
		return false, cnierr.New(cnierr.Internal, p.Type, "cannot tell whether CNI_NETNS %q is the plugin's own network namespace: %v", args.Netns, err)
	}
	return own, nil
}

func (p *Plugin) refuseOwnNetns(args *skel.CmdArgs) error {
	own, err := p.ownNetns(args)
	if err != nil {
		return err
	}
	if own {
		return cnierr.Env(p.Type, "CNI_NETNS", "%q is the plugin's own network namespace (the node's), not a pod's: "+
			"pass the path of the pod's network namespace; nothing was done", args.Netns)
	}
	return nil
}

// CmdAdd is ADD as a runtime runs it: p.Add after the CNI_NETNS check.
func (p *Plugin) CmdAdd(args *skel.CmdArgs) (types.Result, error) {
	t := trace.Begin()
	err := p.refuseOwnNetns(args)
	trace.End("own-netns check", t)
	if err != nil {
		return nil, err
	}
	return p.Add(args)
}

// CmdCheck is CHECK as a runtime runs it: p.Check after the CNI_NETNS
// check.
func (p *Plugin) CmdCheck(args *skel.CmdArgs) error {
	if err := p.refuseOwnNetns(args); err != nil {
		return err
	}
	if p.Check == nil {
		return nil
	}
	return p.Check(args)
}

// CmdDel is DEL as a runtime runs it: with CNI_NETNS the plugin's own
// namespace, p.Del runs as for a namespace that is gone.
func (p *Plugin) CmdDel(args *skel.CmdArgs) error {
	t := trace.Begin()
	own, err := p.ownNetns(args)
	trace.End("own-netns check", t)
	if err != nil {
		return err
	}
	if own {
		a := *args
		a.Netns = ""
		args = &a
	}
	if p.Del == nil {
		return nil
	}
	return p.Del(args)
}

// unsetOwnNetnsForDel is Main's half of DEL's rule: in a DEL whose
// CNI_NETNS is the plugin's own namespace, CNI_NETNS is removed from the
// environment (optional for DEL in every spec version).
func unsetOwnNetnsForDel() {
	if os.Getenv("CNI_COMMAND") != "DEL" {
		return
	}
	if p := os.Getenv("CNI_NETNS"); p != "" {
		if own, err := IsOwnNetns(p); err == nil && own {
			os.Unsetenv("CNI_NETNS")
		}
	}
}
