// Package sbr is the CNI "sbr" (source-based routing) meta plugin. Chained
// after a main plugin, it makes traffic sourced from each of the pod's
// addresses on CNI_IFNAME leave through that interface, whatever the main
// table says (typically when a pod has several interfaces with a default
// route each):
//
//   - without "table": for each address, the first routing table from 100
//     up that no rule or route uses gets the interface's routes from the
//     main table (the subnet route, the default route via the address's
//     gateway, and routes without source or gateway), plus the default
//     route via the gateway; those routes are then removed from the main
//     table, and a rule "from <address>/32 lookup <table>" selects the
//     table. This is the reference plugin's behaviour.
//   - with "table": only the rules are added, pointing at that table, whose
//     routes someone else manages (the reference's behaviour too).
//
// DEL removes the rules for the interface's addresses and, for tables it
// chose itself, the routes through the interface left in them. Everything
// runs on a netlink handle opened in the pod's namespace, under a flock of
// the namespace file so that two sbr invocations for one pod (one per
// interface) cannot pick the same table.
//
// It owns plugins/sbr; it does not touch the node's namespace.
package sbr

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/internal/netlinkx"
	"github.com/podnet/podnet/internal/netns"
)

const name = "sbr"

// FirstTable is where the search for a free table starts when the config
// has no "table".
const FirstTable = 100

// Plugin is the sbr plugin.
var Plugin = &cniplugin.Plugin{
	Type:   name,
	About:  "podnet sbr: source-based routing tables and rules for a pod interface",
	Add:    add,
	Check:  check,
	Del:    del,
	GC:     nil, // everything sbr makes lives in the pod's namespace and dies with it
	Status: nil,
}

type netConf struct {
	types.NetConf
	Table   *int64 `json:"table,omitempty"`
	VRFName string `json:"vrfname,omitempty"`
}

// Config is the validated sbr configuration.
type Config struct {
	// Table is the user's table for "rules only" mode; 0 means choose
	// tables from FirstTable and fill them.
	Table int
	prev  *netConf
}

// ParseConfig decodes and validates stdin. forDel relaxes what DEL does
// not need: a DEL must succeed for a config whose ADD failed validation.
func ParseConfig(stdin []byte, forDel bool) (*Config, error) {
	conf := &netConf{}
	if err := cniplugin.Decode(name, stdin, conf); err != nil {
		return nil, err
	}
	c := &Config{prev: conf}
	if conf.VRFName != "" && !forDel {
		return nil, cnierr.Unsupported(name, "vrfname", "podnet's sbr does not put interfaces into VRFs (needs the kernel's vrf module, which podnet does not require); leave vrfname out to use routing tables and rules")
	}
	if conf.Table != nil {
		t := *conf.Table
		switch {
		case t <= 0 || t > math.MaxUint32:
			if !forDel {
				return nil, cnierr.Field(name, "table", "%d is out of range: a routing table ID is 1 to %d", t, uint32(math.MaxUint32))
			}
		case t >= unix.RT_TABLE_COMPAT && t <= unix.RT_TABLE_LOCAL:
			if !forDel {
				return nil, cnierr.Field(name, "table", "%d is a table reserved by the kernel (252 compat, 253 default, 254 main, 255 local); pick another", t)
			}
		default:
			c.Table = int(t)
		}
	}
	return c, nil
}

// podIPs returns the addresses of prev on ifName; an address without an
// interface index, or with one out of range, counts (the reference does so).
func podIPs(prev *current.Result, ifName string) []*current.IPConfig {
	var out []*current.IPConfig
	for _, ip := range prev.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(prev.Interfaces) && prev.Interfaces[i].Name != ifName {
				continue
			}
		}
		out = append(out, ip)
	}
	return out
}

// inPod opens a netlink handle in the namespace at path and runs fn with the
// namespace file flocked.
func inPod(path string, fn func(h *netlink.Handle) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock netns %s: %w", path, err)
	}
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlinkx.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}

func add(args *skel.CmdArgs) (types.Result, error) {
	c, err := ParseConfig(args.StdinData, false)
	if err != nil {
		return nil, err
	}
	prev, err := cniplugin.RequirePrevResult(name, &c.prev.NetConf)
	if err != nil {
		return nil, err
	}
	ips := podIPs(prev, args.IfName)
	if len(ips) == 0 {
		return nil, cnierr.Field(name, "prevResult", "has no IP address on interface %q; sbr routes by source address and needs at least one", args.IfName)
	}
	if args.Netns == "" {
		return nil, cnierr.Env(name, "CNI_NETNS", "required for ADD")
	}
	err = inPod(args.Netns, func(h *netlink.Handle) error {
		if c.Table != 0 {
			return addRules(h, ips, c.Table)
		}
		return moveToTables(h, ips, args.IfName)
	})
	if err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	return prev, nil
}

func listRules(h *netlink.Handle) ([]netlink.Rule, error) {
	return netlinkx.Retry(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
}

func listRoutes(h *netlink.Handle, table int) ([]netlink.Route, error) {
	return netlinkx.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	})
}

// sourceRule returns the rule "from ip/32 (or /128) lookup ..." in rules
// (for any table when table is 0), or nil.
func sourceRule(rules []netlink.Rule, ip net.IP, table int) *netlink.Rule {
	for i := range rules {
		r := &rules[i]
		if r.Src == nil || !r.Src.IP.Equal(ip) || r.Dst != nil || r.Invert {
			continue
		}
		if ones, bits := r.Src.Mask.Size(); ones != bits {
			continue
		}
		if table != 0 && r.Table != table {
			continue
		}
		return r
	}
	return nil
}

func newSourceRule(ip net.IP, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Src = netlinkx.HostNet(ip)
	r.Family = netlinkx.Family(ip)
	r.Table = table
	return r
}

// addRules is "table" mode: one rule per address, none added twice.
func addRules(h *netlink.Handle, ips []*current.IPConfig, table int) (err error) {
	rules, err := listRules(h)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	var added []*netlink.Rule
	defer func() {
		if err != nil {
			for _, r := range added {
				_ = h.RuleDel(r)
			}
		}
	}()
	for _, ip := range ips {
		if sourceRule(rules, ip.Address.IP, table) != nil {
			continue
		}
		r := newSourceRule(ip.Address.IP, table)
		if err := h.RuleAdd(r); err != nil {
			return fmt.Errorf("add rule from %s lookup %d: %w", ip.Address.IP, table, err)
		}
		added = append(added, r)
	}
	return nil
}

// reserved tables are never chosen.
func reserved(t int) bool {
	return t == unix.RT_TABLE_UNSPEC || (t >= unix.RT_TABLE_COMPAT && t <= unix.RT_TABLE_LOCAL)
}

// moveToTables is the default mode; see the package comment.
func moveToTables(h *netlink.Handle, ips []*current.IPConfig, ifName string) (err error) {
	link, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find interface %q: %w", ifName, err)
	}
	idx := link.Attrs().Index
	rules, err := listRules(h)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	all, err := listRoutes(h, unix.RT_TABLE_UNSPEC)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	used := map[int]bool{}
	for _, r := range rules {
		used[r.Table] = true
	}
	var mainRoutes []netlink.Route
	for _, r := range all {
		used[r.Table] = true
		if r.Table == unix.RT_TABLE_MAIN && r.LinkIndex == idx {
			mainRoutes = append(mainRoutes, r)
		}
	}
	next := FirstTable

	// Undo, in reverse, on failure: rules and table routes added, main
	// routes removed.
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				_ = undo[i]()
			}
		}
	}()

	moved := make([]bool, len(mainRoutes))
	for _, ipc := range ips {
		ip := ipc.Address.IP
		if r := sourceRule(rules, ip, 0); r != nil {
			continue // a repeated ADD: this address already has its table
		}
		for used[next] || reserved(next) {
			next++
		}
		table := next
		used[table] = true
		fam := netlinkx.Family(ip)

		for i, r := range mainRoutes {
			if r.Family != fam {
				continue
			}
			if !(ipc.Address.Contains(r.Src) || ipc.Address.Contains(r.Gw) || (r.Src == nil && r.Gw == nil)) {
				continue
			}
			nr := r
			nr.Table = table
			nr.Flags = 0
			if err := h.RouteReplace(&nr); err != nil {
				return fmt.Errorf("copy route %s to table %d: %w", r, table, err)
			}
			undo = append(undo, func() error { return h.RouteDel(&nr) })
			moved[i] = true
		}
		if ipc.Gateway != nil {
			def := &netlink.Route{
				Dst:       netlinkx.DefaultNet(ip),
				Gw:        ipc.Gateway,
				LinkIndex: idx,
				Table:     table,
			}
			if err := h.RouteReplace(def); err != nil {
				return fmt.Errorf("add default route via %s to table %d: %w", ipc.Gateway, table, err)
			}
			undo = append(undo, func() error { return h.RouteDel(def) })
		}
		rule := newSourceRule(ip, table)
		if err := h.RuleAdd(rule); err != nil {
			return fmt.Errorf("add rule from %s lookup %d: %w", ip, table, err)
		}
		undo = append(undo, func() error { return h.RuleDel(rule) })
	}
	// Remove the moved routes from the main table only now: two addresses
	// in one subnet both need the subnet route while their tables fill.
	for i, r := range mainRoutes {
		if !moved[i] {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("remove route %s from the main table: %w", r, err)
		}
		undo = append(undo, func() error { return h.RouteAdd(&r) })
	}
	return nil
}

func check(args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, false)
	if err != nil {
		return err
	}
	prev, err := cniplugin.RequirePrevResult(name, &c.prev.NetConf)
	if err != nil {
		return err
	}
	if args.Netns == "" {
		return cnierr.Env(name, "CNI_NETNS", "required for CHECK")
	}
	ips := podIPs(prev, args.IfName)
	return inPod(args.Netns, func(h *netlink.Handle) error {
		rules, err := listRules(h)
		if err != nil {
			return cnierr.Wrap(cnierr.Internal, name, err, "list rules")
		}
		var link netlink.Link
		if c.Table == 0 {
			if link, err = h.LinkByName(args.IfName); err != nil {
				return cnierr.Wrap(cnierr.Internal, name, err, "find interface %q", args.IfName)
			}
		}
		for _, ipc := range ips {
			r := sourceRule(rules, ipc.Address.IP, c.Table)
			if r == nil {
				want := "a table"
				if c.Table != 0 {
					want = fmt.Sprintf("table %d", c.Table)
				}
				return cnierr.New(cnierr.Internal, name, "no rule from %s lookup %s", ipc.Address.IP, want)
			}
			if c.Table != 0 {
				continue
			}
			routes, err := listRoutes(h, r.Table)
			if err != nil {
				return cnierr.Wrap(cnierr.Internal, name, err, "list table %d", r.Table)
			}
			var viaLink, def bool
			for _, rt := range routes {
				if rt.Table != r.Table || rt.LinkIndex != link.Attrs().Index {
					continue
				}
				viaLink = true
				if ipc.Gateway != nil && netlinkx.IsDefault(rt.Dst) && rt.Gw.Equal(ipc.Gateway) {
					def = true
				}
			}
			if !viaLink {
				return cnierr.New(cnierr.Internal, name, "table %d (for %s) has no route through %s", r.Table, ipc.Address.IP, args.IfName)
			}
			if ipc.Gateway != nil && !def {
				return cnierr.New(cnierr.Internal, name, "table %d (for %s) has no default route via %s", r.Table, ipc.Address.IP, ipc.Gateway)
			}
		}
		return nil
	})
}

// del removes the rules from the interface's addresses (those in
// prevResult and those still on the interface) and, in the default mode,
// the routes through the interface left in their tables, and in tables
// from FirstTable up that no rule uses any more and that hold a default
// route through the interface via one of prevResult's gateways (a table
// whose rule was removed by hand). It does not put routes back into the
// main table (the reference does not either; the main plugin's DEL removes
// the interface next). It succeeds when the namespace or the interface is
// gone.
func del(args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, true)
	if err != nil {
		return err
	}
	if args.Netns == "" || !netns.Exists(args.Netns) {
		return nil
	}
	var ips, gws []net.IP
	if prev, err := cniplugin.PrevResult(name, &c.prev.NetConf); err == nil && prev != nil {
		for _, ipc := range podIPs(prev, args.IfName) {
			ips = append(ips, ipc.Address.IP)
			if ipc.Gateway != nil {
				gws = append(gws, ipc.Gateway)
			}
		}
	}
	err = inPod(args.Netns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(args.IfName)
		if err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("find interface %q: %w", args.IfName, err)
		}
		if link != nil {
			addrs, err := netlinkx.Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", args.IfName, err)
			}
			for _, a := range addrs {
				ips = append(ips, a.IP)
			}
		}
		rules, err := listRules(h)
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		var errs []error
		tables := map[int]bool{}
		deleted := make([]bool, len(rules))
		for i := range rules {
			r := &rules[i]
			match := false
			for _, ip := range ips {
				if sourceRule(rules[i:i+1], ip, c.Table) != nil {
					match = true
					break
				}
			}
			if !match {
				continue
			}
			if err := h.RuleDel(r); err != nil && !netlinkx.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete rule from %s lookup %d: %w", r.Src.IP, r.Table, err))
				continue
			}
			deleted[i] = true
			tables[r.Table] = true
		}
		if c.Table != 0 || link == nil {
			// The user's table is theirs; a deleted link took its routes.
			return errors.Join(errs...)
		}
		// Tables whose rule someone removed by hand are found by their
		// look: no rule uses them and they hold a default route through
		// this interface via one of its gateways.
		all, err := listRoutes(h, unix.RT_TABLE_UNSPEC)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("list routes: %w", err))...)
		}
		byTable := map[int][]netlink.Route{}
		for _, rt := range all {
			if rt.LinkIndex == link.Attrs().Index && !reserved(rt.Table) {
				byTable[rt.Table] = append(byTable[rt.Table], rt)
			}
		}
		for t, routes := range byTable {
			if t < FirstTable || referenced(rules, deleted, t) || tables[t] {
				continue
			}
			for _, rt := range routes {
				if netlinkx.IsDefault(rt.Dst) && containsIP(gws, rt.Gw) {
					tables[t] = true
					break
				}
			}
		}
		for t := range tables {
			if reserved(t) || referenced(rules, deleted, t) {
				continue
			}
			for _, rt := range byTable[t] {
				if err := h.RouteDel(&rt); err != nil && !netlinkx.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("delete route %s from table %d: %w", rt, t, err))
				}
			}
		}
		return errors.Join(errs...)
	})
	if err != nil && netns.Exists(args.Netns) {
		return cnierr.Wrap(cnierr.Internal, name, err, "")
	}
	return nil
}

// referenced reports whether a rule that del kept looks up table t.
func referenced(rules []netlink.Rule, deleted []bool, t int) bool {
	for i, r := range rules {
		if r.Table == t && !deleted[i] {
			return true
		}
	}
	return false
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
