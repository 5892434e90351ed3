// Package hostlocal is the CNI "host-local" IPAM plugin: it allocates
// addresses from configured ranges and records each reservation as a file
// in a per-network directory on the host (default /var/lib/cni/networks),
// in the same format as the reference plugin so data dirs keep working.
//
// Reservations appear atomically (temp file + link), every operation holds
// an flock on the directory, and anything a killed process leaves behind is
// reclaimed by DEL of the same attachment or by GC. See
// docs/ipam-host-local.md for the on-disk format.
package hostlocal

import (
	"errors"
	"net/netip"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/delegate"
	"github.com/podnet/podnet/internal/trace"
	"github.com/podnet/podnet/ipam/internal/ipamconf"
)

// Plugin is the host-local IPAM plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet host-local: allocates addresses from ranges, reservations on local disk",
	Add:    cmdAdd,
	Check:  cmdCheck,
	Del:    cmdDel,
	GC:     cmdGC,
	Status: cmdStatus,
}

type storeReserver struct {
	s *Store
	o Owner
}

func (r storeReserver) Reserve(a netip.Addr) (bool, error) { return r.s.Reserve(a, r.o) }

func ioErr(err error, format string, a ...any) error {
	if errors.Is(err, ErrLocked) {
		return cnierr.Wrap(cnierr.TryAgainLater, name, err, format, a...)
	}
	return cnierr.Wrap(cnierr.IOFailure, name, err, format, a...)
}

func cmdAdd(args *skel.CmdArgs) (types.Result, error) {
	t := trace.Begin()
	conf, err := LoadConfig(args.StdinData, args.Args)
	trace.End("host-local: config parse", t)
	if err != nil {
		return nil, err
	}
	if err := validIDs(args); err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: conf.Routes}
	if conf.ResolvConf != "" {
		dns, err := ipamconf.ResolvConf(conf.ResolvConf)
		if err != nil {
			return nil, cnierr.New(cnierr.IOFailure, name, "field %q: %v", "resolvConf", err)
		}
		res.DNS = dns
	}
	ips, err := allocate(conf, Owner{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return nil, err
	}
	res.IPs = ips
	return res, nil
}

// allocate reserves one address per range set for o, all or nothing.
func allocate(conf *Config, o Owner) (ips []*current.IPConfig, err error) {
	t := trace.Begin()
	s, err := OpenStore(conf.NetDir(), true)
	trace.End("host-local: lock (mkdir, open, flock, temp sweep)", t)
	if err != nil {
		return nil, ioErr(err, "open reservation directory %s", conf.NetDir())
	}
	defer func() {
		t := trace.Begin()
		if cerr := s.Close(); cerr != nil && err == nil {
			err = ioErr(cerr, "close reservation directory %s", conf.NetDir())
		}
		trace.End("host-local: close (temp remove, unlock)", t)
	}()
	t = trace.Begin()
	ents, err := s.Entries()
	trace.End("host-local: read reservations", t)
	if err != nil {
		return nil, ioErr(err, "read reservation directory %s", conf.NetDir())
	}
	for i, set := range conf.Ranges {
		for a, ow := range ents {
			if !ow.Legacy && ow.matches(o) && set.Find(a) >= 0 {
				return nil, cnierr.New(cnierr.Internal, name, "%s already holds %s in range set %d (%s) of network %q; a second ADD for the same container and interface is not allowed (DEL it first)", o.ContainerID+"/"+o.IfName, a, i, set, conf.Name)
			}
		}
	}
	var got []netip.Addr
	defer func() {
		if err == nil {
			return
		}
		// Roll back what this ADD reserved. If this process dies first,
		// DEL of the same attachment or GC releases them.
		for _, a := range got {
			if rerr := s.Release(a); rerr != nil {
				err = errors.Join(err, ioErr(rerr, "roll back reservation of %s", a))
			}
		}
		ips = nil
	}()
	taken := func(a netip.Addr) bool { _, ok := ents[a]; return ok }
	for i, set := range conf.Ranges {
		req := conf.Requested[i]
		t := trace.Begin()
		r, a, ok, err := Allocate(set, s.LastReserved(i), req, taken, storeReserver{s, o})
		trace.End("host-local: reserve (cursor read, temp write, link)", t)
		if err != nil {
			return nil, ioErr(err, "reserve an address in range set %d (%s)", i, set)
		}
		if !ok {
			if req.IsValid() {
				holder := "another attachment"
				if ow, found, _ := s.Owner(req); found {
					holder = ow.ContainerID
					if !ow.Legacy {
						holder += "/" + ow.IfName
					}
				}
				return nil, cnierr.New(cnierr.Internal, name, "requested IP %s is already allocated (to %s) in network %q", req, holder, conf.Name)
			}
			return nil, cnierr.New(cnierr.Internal, name, "no free address in range set %d (subnet %s) of network %q: every address of %s (gateway excluded) is allocated", i, set, conf.Name, rangesText(set))
		}
		got = append(got, a)
		t = trace.Begin()
		err = s.SetLastReserved(i, a)
		trace.End("host-local: cursor write (temp, rename)", t)
		if err != nil {
			return nil, ioErr(err, "record last reserved address of range set %d", i)
		}
		ips = append(ips, &current.IPConfig{
			Address: ipamconf.IPNet(netip.PrefixFrom(a, r.Subnet.Bits())),
			Gateway: ipamconf.IP(r.Gateway),
		})
	}
	return ips, nil
}

func rangesText(set RangeSet) string {
	parts := make([]string, len(set))
	for i := range set {
		parts[i] = set[i].String()
	}
	return strings.Join(parts, ",")
}

func cmdDel(args *skel.CmdArgs) error {
	t := trace.Begin()
	conf, err := LoadStoreConfig(args.StdinData)
	trace.End("host-local: config decode", t)
	if err != nil {
		return err
	}
	if err := validIDs(args); err != nil {
		return err
	}
	t = trace.Begin()
	s, err := OpenStore(conf.NetDir(), false)
	trace.End("host-local: lock (open, flock, temp sweep)", t)
	if errors.Is(err, ErrNoStore) {
		return nil
	}
	if err != nil {
		return ioErr(err, "open reservation directory %s", conf.NetDir())
	}
	t = trace.Begin()
	_, rerr := s.ReleaseOwner(Owner{ContainerID: args.ContainerID, IfName: args.IfName})
	trace.End("host-local: release (read all, remove)", t)
	t = trace.Begin()
	cerr := s.Close()
	trace.End("host-local: close (unlock)", t)
	if rerr != nil {
		return ioErr(rerr, "release addresses of %s/%s", args.ContainerID, args.IfName)
	}
	if cerr != nil {
		return ioErr(cerr, "close reservation directory %s", conf.NetDir())
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := LoadConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if err := validIDs(args); err != nil {
		return err
	}
	pc := &types.NetConf{}
	if err := cniplugin.Decode(name, args.StdinData, pc); err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, pc)
	if err != nil {
		return err
	}
	o := Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	s, err := OpenStore(conf.NetDir(), false)
	if errors.Is(err, ErrNoStore) {
		return cnierr.New(cnierr.Internal, name, "%s/%s holds no address in network %q (no directory %s)", o.ContainerID, o.IfName, conf.Name, conf.NetDir())
	}
	if err != nil {
		return ioErr(err, "open reservation directory %s", conf.NetDir())
	}
	defer s.Close()
	ents, err := s.Entries()
	if err != nil {
		return ioErr(err, "read reservation directory %s", conf.NetDir())
	}
	inRanges := func(a netip.Addr) int {
		for i, set := range conf.Ranges {
			if set.Find(a) >= 0 {
				return i
			}
		}
		return -1
	}
	held := map[netip.Addr]bool{}
	for a, ow := range ents {
		if ow.matches(o) && inRanges(a) >= 0 {
			held[a] = true
		}
	}
	inPrev := map[netip.Addr]bool{}
	for _, ipc := range prev.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if inRanges(a) < 0 {
			continue // not ours (another plugin's address)
		}
		inPrev[a] = true
		if !held[a] {
			holder := "nobody"
			if ow, ok := ents[a]; ok {
				holder = ow.ContainerID + "/" + ow.IfName
			}
			return cnierr.New(cnierr.Internal, name, "prevResult address %s is not reserved for %s/%s in network %q (held by %s)", a, o.ContainerID, o.IfName, conf.Name, holder)
		}
	}
	if len(inPrev) == 0 {
		return cnierr.New(cnierr.Internal, name, "prevResult has no address from the ranges of network %q", conf.Name)
	}
	var extra []string
	for a := range held {
		if !inPrev[a] {
			extra = append(extra, a.String())
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return cnierr.New(cnierr.Internal, name, "%s/%s also holds %s in network %q, which prevResult does not list", o.ContainerID, o.IfName, strings.Join(extra, ", "), conf.Name)
	}
	return nil
}

// cmdGC releases every reservation of the network whose attachment is not
// in cni.dev/valid-attachments (temp files are removed by OpenStore). An
// absent list is an empty one.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := LoadStoreConfig(args.StdinData)
	if err != nil {
		return err
	}
	// A missing list means no attachment is valid: libcni omits the key
	// when its caller passes no GCArgs (cnitool gc does), after it has
	// already DELeted every cached attachment of the network. The
	// reference plugin treats it the same way.
	s, err := OpenStore(conf.NetDir(), false)
	if errors.Is(err, ErrNoStore) {
		return nil
	}
	if err != nil {
		return ioErr(err, "open reservation directory %s", conf.NetDir())
	}
	defer s.Close()
	valid := map[Owner]bool{}
	validID := map[string]bool{}
	for _, at := range conf.Attachments {
		valid[Owner{ContainerID: at.ContainerID, IfName: at.IfName}] = true
		validID[at.ContainerID] = true
	}
	ents, err := s.Entries()
	if err != nil {
		return ioErr(err, "read reservation directory %s", conf.NetDir())
	}
	var errs []error
	for a, ow := range ents {
		keep := valid[Owner{ContainerID: ow.ContainerID, IfName: ow.IfName}]
		if ow.Legacy {
			keep = validID[ow.ContainerID]
		}
		if keep {
			continue
		}
		if err := s.Release(a); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ioErr(err, "release stale reservations")
	}
	return nil
}

// cmdStatus reports whether reservations can be recorded. Only name and
// dataDir are checked: ranges may legitimately come from runtimeConfig,
// which STATUS does not receive.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := LoadStoreConfig(args.StdinData)
	if err != nil {
		return err
	}
	s, err := OpenStore(conf.NetDir(), true)
	if err != nil {
		return cnierr.New(cnierr.NotAvailable, name, "reservation directory %s is not usable: %v", conf.NetDir(), err)
	}
	defer s.Close()
	if err := s.Probe(); err != nil {
		return cnierr.New(cnierr.NotAvailable, name, "reservation directory %s is not writable: %v", conf.NetDir(), err)
	}
	return nil
}

// Plugins that delegate IPAM run this one in-process.
func init() { delegate.Register(Plugin) }
