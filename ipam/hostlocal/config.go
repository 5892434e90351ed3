package hostlocal

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
	"github.com/podnet/podnet/internal/cniplugin"
	"github.com/podnet/podnet/ipam/internal/ipamconf"
)

const name = "host-local"

// DefaultDataDir is where reservations live unless ipam.dataDir says
// otherwise (the reference plugin's default, so data dirs are shared).
const DefaultDataDir = "/var/lib/cni/networks"

// rawRange is one range as written in JSON. Addresses stay strings so that
// a bad value is reported with its field name.
type rawRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

type rawIPAM struct {
	Type string `json:"type"`
	rawRange
	Ranges     [][]rawRange      `json:"ranges"`
	Routes     []json.RawMessage `json:"routes"`
	DataDir    string            `json:"dataDir"`
	ResolvConf string            `json:"resolvConf"`
}

type rawNet struct {
	CNIVersion    string   `json:"cniVersion"`
	Name          string   `json:"name"`
	IPAM          *rawIPAM `json:"ipam"`
	RuntimeConfig struct {
		IPRanges [][]rawRange `json:"ipRanges"`
		IPs      []string     `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
	// GC's list; libcni also sends it as "cni.dev/attachments" (a name
	// from an old spec draft) and marshals an empty list as null.
	ValidAttachments json.RawMessage `json:"cni.dev/valid-attachments"`
	OldAttachments   json.RawMessage `json:"cni.dev/attachments"`
}

// Range is one canonical pool: addresses Start..End (inclusive) of Subnet,
// Gateway excluded from allocation.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr
	End     netip.Addr
	Gateway netip.Addr
	// Field is the config path of this range, e.g. "ranges[1][0]".
	Field string
}

// Contains reports whether a is inside Start..End.
func (r *Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.Start.BitLen() && a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0
}

func (r *Range) String() string { return fmt.Sprintf("%s-%s", r.Start, r.End) }

// RangeSet is a list of ranges of one family; one address is allocated
// from each set.
type RangeSet []Range

// Find returns the index of the range holding a, or -1.
func (s RangeSet) Find(a netip.Addr) int {
	for i := range s {
		if s[i].Contains(a) {
			return i
		}
	}
	return -1
}

func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = s[i].Subnet.String()
	}
	return strings.Join(parts, ",")
}

// Request is an address the runtime asked for, with where it came from.
type Request struct {
	Addr  netip.Addr
	Field string // "args.cni.ips[0]", "runtimeConfig.ips[1]" or "CNI_ARGS IP"
}

// Config is the parsed, validated host-local configuration.
type Config struct {
	CNIVersion string
	Name       string
	DataDir    string // the base dir; reservations are in DataDir/Name
	Ranges     []RangeSet
	Routes     []*types.Route
	ResolvConf string
	// Requested[i] is the address asked for in range set i (invalid Addr if none).
	Requested []netip.Addr
	// Attachments is cni.dev/valid-attachments (GC only).
	Attachments []types.GCAttachment
}

// NetDir is the directory holding this network's reservations.
func (c *Config) NetDir() string { return filepath.Join(c.DataDir, c.Name) }

// decode reads the JSON and checks the fields every verb needs (name,
// dataDir).
func decode(stdin []byte) (*rawNet, string, error) {
	n := &rawNet{}
	if err := cniplugin.Decode(name, stdin, n); err != nil {
		return nil, "", err
	}
	if n.IPAM == nil {
		return nil, "", cnierr.Field(name, "ipam", "%v", ipamconf.ErrNoIPAM)
	}
	if err := validName(n.Name); err != nil {
		return nil, "", err
	}
	dir := n.IPAM.DataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	if !filepath.IsAbs(dir) {
		return nil, "", cnierr.Field(name, "dataDir", "%q is not an absolute path", dir)
	}
	return n, filepath.Clean(dir), nil
}

// LoadStoreConfig parses only what DEL and GC need: name, dataDir and the
// valid attachments. Range errors do not stop a DEL from releasing.
func LoadStoreConfig(stdin []byte) (*Config, error) {
	n, dir, err := decode(stdin)
	if err != nil {
		return nil, err
	}
	c := &Config{CNIVersion: n.CNIVersion, Name: n.Name, DataDir: dir}
	raw, field := n.ValidAttachments, "cni.dev/valid-attachments"
	if raw == nil {
		raw, field = n.OldAttachments, "cni.dev/attachments"
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &c.Attachments); err != nil {
			return nil, cnierr.New(cnierr.DecodingFailure, name, "field %q: expected a list of {\"containerID\", \"ifname\"}: %v", field, err)
		}
	}
	return c, nil
}

// LoadConfig parses and validates the full configuration. cniArgs is the
// CNI_ARGS string (may be empty).
func LoadConfig(stdin []byte, cniArgs string) (*Config, error) {
	n, dir, err := decode(stdin)
	if err != nil {
		return nil, err
	}
	c := &Config{
		CNIVersion: n.CNIVersion,
		Name:       n.Name,
		DataDir:    dir,
		ResolvConf: n.IPAM.ResolvConf,
	}
	c.Routes, err = ipamconf.ParseRoutes(name, "routes", n.IPAM.Routes)
	if err != nil {
		return nil, err
	}

	// Range sets: runtimeConfig.ipRanges replaces the configured ones;
	// otherwise the legacy single range (if any) comes first, then ranges.
	if len(n.RuntimeConfig.IPRanges) > 0 {
		for i, rs := range n.RuntimeConfig.IPRanges {
			set, err := parseRangeSet(rs, fmt.Sprintf("runtimeConfig.ipRanges[%d]", i))
			if err != nil {
				return nil, err
			}
			c.Ranges = append(c.Ranges, set)
		}
	} else {
		legacy := n.IPAM.rawRange
		if legacy.Subnet != "" {
			set, err := parseRangeSet([]rawRange{legacy}, "")
			if err != nil {
				return nil, err
			}
			c.Ranges = append(c.Ranges, set)
		} else if legacy.RangeStart != "" || legacy.RangeEnd != "" || legacy.Gateway != "" {
			return nil, cnierr.Field(name, "subnet", "missing: rangeStart, rangeEnd or gateway is set at ipam level without a subnet")
		}
		for i, rs := range n.IPAM.Ranges {
			set, err := parseRangeSet(rs, fmt.Sprintf("ranges[%d]", i))
			if err != nil {
				return nil, err
			}
			c.Ranges = append(c.Ranges, set)
		}
	}
	if len(c.Ranges) == 0 {
		return nil, cnierr.Field(name, "ranges", "missing: set ipam.ranges (or the single-range ipam.subnet)")
	}
	if err := checkOverlaps(c.Ranges); err != nil {
		return nil, err
	}
	var firsts []netip.Addr
	for _, s := range c.Ranges {
		firsts = append(firsts, s[0].Start)
	}
	if err := ipamconf.CheckFamilies(name, c.CNIVersion, firsts); err != nil {
		return nil, err
	}

	// Requested addresses, in the reference plugin's order: CNI_ARGS IP,
	// args.cni.ips, runtimeConfig.ips.
	var reqs []Request
	if v, ok := ipamconf.CNIArgs(cniArgs)["IP"]; ok {
		for _, s := range ipamconf.SplitList(v) {
			a, _, err := ipamconf.ParseAddrOrPrefix(s)
			if err != nil {
				return nil, cnierr.Env(name, "CNI_ARGS IP", "%v", err)
			}
			reqs = append(reqs, Request{a, "CNI_ARGS IP"})
		}
	}
	if n.Args != nil && n.Args.CNI != nil {
		for i, s := range n.Args.CNI.IPs {
			f := fmt.Sprintf("args.cni.ips[%d]", i)
			a, _, err := ipamconf.ParseAddrOrPrefix(s)
			if err != nil {
				return nil, cnierr.Field(name, f, "%v", err)
			}
			reqs = append(reqs, Request{a, f})
		}
	}
	for i, s := range n.RuntimeConfig.IPs {
		f := fmt.Sprintf("runtimeConfig.ips[%d]", i)
		a, _, err := ipamconf.ParseAddrOrPrefix(s)
		if err != nil {
			return nil, cnierr.Field(name, f, "%v", err)
		}
		reqs = append(reqs, Request{a, f})
	}
	c.Requested, err = assignRequests(c.Ranges, reqs)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func reqError(r Request, format string, a ...any) error {
	if strings.HasPrefix(r.Field, "CNI_ARGS") {
		return cnierr.Env(name, r.Field, format, a...)
	}
	return cnierr.Field(name, r.Field, format, a...)
}

// assignRequests maps each requested address to the range set holding it.
func assignRequests(sets []RangeSet, reqs []Request) ([]netip.Addr, error) {
	out := make([]netip.Addr, len(sets))
	from := make([]Request, len(sets))
	for _, r := range reqs {
		found := false
		for i, s := range sets {
			j := s.Find(r.Addr)
			if j < 0 {
				continue
			}
			found = true
			if r.Addr == s[j].Gateway {
				return nil, reqError(r, "requested IP %s is the gateway of %s", r.Addr, s[j].Subnet)
			}
			if out[i].IsValid() && out[i] != r.Addr {
				return nil, reqError(r, "requested IP %s and %s (from %s) are both in range set %d (%s); one address is allocated per range set", r.Addr, out[i], from[i].Field, i, s)
			}
			out[i], from[i] = r.Addr, r
			break
		}
		if !found {
			var all []string
			for i, s := range sets {
				for _, rg := range s {
					all = append(all, fmt.Sprintf("set %d: %s", i, rg.String()))
				}
			}
			return nil, reqError(r, "requested IP %s is not in any range (%s)", r.Addr, strings.Join(all, "; "))
		}
	}
	return out, nil
}

func rangeField(set string, j int, f string) string {
	if set == "" {
		return f // legacy ipam-level range
	}
	return fmt.Sprintf("%s[%d].%s", set, j, f)
}

func parseRangeSet(raw []rawRange, field string) (RangeSet, error) {
	if len(raw) == 0 {
		return nil, cnierr.Field(name, field, "is empty: a range set needs at least one range")
	}
	set := make(RangeSet, 0, len(raw))
	for j, rr := range raw {
		r, err := parseRange(rr, field, j)
		if err != nil {
			return nil, err
		}
		if j > 0 && r.Start.Is4() != set[0].Start.Is4() {
			return nil, cnierr.Field(name, rangeField(field, j, "subnet"), "%s is not the same address family as %s; a range set holds one family (use another range set for dual-stack)", r.Subnet, set[0].Subnet)
		}
		set = append(set, r)
	}
	return set, nil
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for k := 0; k < 8; k++ {
			if i*8+k >= bits {
				b[i] |= 0x80 >> k
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func parseRange(rr rawRange, set string, j int) (Range, error) {
	r := Range{Field: set}
	if set != "" {
		r.Field = fmt.Sprintf("%s[%d]", set, j)
	}
	sf := rangeField(set, j, "subnet")
	if rr.Subnet == "" {
		return r, cnierr.Field(name, sf, "missing: each range needs a subnet such as \"10.22.0.0/16\"")
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(rr.Subnet))
	if err != nil {
		return r, cnierr.Field(name, sf, "%q is not in CIDR notation", rr.Subnet)
	}
	if p.Addr().Is4In6() {
		return r, cnierr.Field(name, sf, "%q is an IPv4-mapped IPv6 subnet; write it as an IPv4 subnet", rr.Subnet)
	}
	if p.Masked() != p {
		return r, cnierr.Field(name, sf, "%s has host bits set; the network address is %s", p, p.Masked())
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return r, cnierr.Field(name, sf, "%s is too small to allocate from (at most /%d)", p, p.Addr().BitLen()-2)
	}
	r.Subnet = p
	network := p.Addr()
	last := lastAddr(p)
	is4 := network.Is4()

	parseIn := func(val, f string) (netip.Addr, error) {
		fld := rangeField(set, j, f)
		a, err := ipamconf.ParseAddr(val)
		if err != nil {
			return a, cnierr.Field(name, fld, "%v", err)
		}
		if !p.Contains(a) {
			return a, cnierr.Field(name, fld, "%s is not in subnet %s", a, p)
		}
		if is4 && a == network {
			return a, cnierr.Field(name, fld, "%s is the network address of %s", a, p)
		}
		if is4 && a == last {
			return a, cnierr.Field(name, fld, "%s is the broadcast address of %s", a, p)
		}
		return a, nil
	}

	r.Gateway = network.Next()
	if rr.Gateway != "" {
		// The reference v1.9.1 accepts a gateway outside the subnet (a
		// routed setup such as ptp reaches it on-link, e.g. 169.254.1.1),
		// so podnet does too; inside the subnet it must not be the
		// network or broadcast address, and it must be of the subnet's
		// family (no main plugin can use a gateway of the other one).
		gf := rangeField(set, j, "gateway")
		gw, err := ipamconf.ParseAddr(rr.Gateway)
		if err != nil {
			return r, cnierr.Field(name, gf, "%v", err)
		}
		if gw.Is4() != is4 {
			return r, cnierr.Field(name, gf, "%s is not in the address family of subnet %s", gw, p)
		}
		if p.Contains(gw) {
			if gw, err = parseIn(rr.Gateway, "gateway"); err != nil {
				return r, err
			}
		}
		r.Gateway = gw
	}
	r.Start = network.Next()
	if rr.RangeStart != "" {
		if r.Start, err = parseIn(rr.RangeStart, "rangeStart"); err != nil {
			return r, err
		}
	}
	r.End = last
	if is4 {
		r.End = last.Prev()
	}
	if rr.RangeEnd != "" {
		if r.End, err = parseIn(rr.RangeEnd, "rangeEnd"); err != nil {
			return r, err
		}
	}
	if r.End.Less(r.Start) {
		return r, cnierr.Field(name, rangeField(set, j, "rangeEnd"), "%s is before rangeStart %s", r.End, r.Start)
	}
	return r, nil
}

func rangeLabel(r *Range) string {
	if r.Field == "" {
		return "the ipam-level range"
	}
	return r.Field
}

// checkOverlaps refuses any two ranges (in one set or across sets) whose
// allocatable addresses overlap. It sorts the ranges by family and start
// and sweeps once, O(n log n): the pairwise check it replaces took minutes
// on a config with 100k ranges (found by test/hostile).
func checkOverlaps(sets []RangeSet) error {
	type ref struct {
		r   *Range
		pos int // order of appearance in the config
	}
	var all []ref
	for i := range sets {
		for j := range sets[i] {
			all = append(all, ref{&sets[i][j], len(all)})
		}
	}
	sort.SliceStable(all, func(a, b int) bool {
		x, y := all[a].r, all[b].r
		if x.Start.BitLen() != y.Start.BitLen() {
			return x.Start.BitLen() < y.Start.BitLen()
		}
		return x.Start.Less(y.Start)
	})
	// reach is the range reaching furthest among those already swept of
	// the current family: any later-starting range that starts at or
	// before its end overlaps it.
	var reach *ref
	for k := range all {
		cur := &all[k]
		if reach != nil && reach.r.Start.BitLen() == cur.r.Start.BitLen() && cur.r.Start.Compare(reach.r.End) <= 0 {
			x, y := reach.r, cur.r
			if cur.pos < reach.pos {
				x, y = y, x
			}
			f := y.Field
			if f == "" {
				f = "subnet"
			}
			return cnierr.Field(name, f, "range %s overlaps %s (%s)", y, rangeLabel(x), x)
		}
		if reach == nil || reach.r.Start.BitLen() != cur.r.Start.BitLen() || cur.r.End.Compare(reach.r.End) > 0 {
			reach = cur
		}
	}
	return nil
}

// validName checks the network name, which becomes a directory name.
func validName(n string) error {
	if n == "" {
		return cnierr.Field(name, "name", "missing: host-local keeps reservations per network name")
	}
	if err := safeComponent(n, 200); err != nil {
		return cnierr.Field(name, "name", "%q %v", n, err)
	}
	return nil
}

// safeComponent accepts the spec's identifier charset: a letter or digit
// followed by letters, digits, '_', '.', '-' (so never '/', never "." or
// "..", no whitespace or control characters).
func safeComponent(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("is %d characters long, at most %d are allowed", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("must start with a letter or digit")
		}
		if !alnum && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("contains %q; only letters, digits, '_', '.' and '-' are allowed", c)
		}
	}
	return nil
}

// validIDs checks CNI_CONTAINERID and CNI_IFNAME, which are written into
// reservation files.
func validIDs(args *skel.CmdArgs) error {
	if args.ContainerID == "" {
		return cnierr.Env(name, "CNI_CONTAINERID", "missing")
	}
	if err := safeComponent(args.ContainerID, 1024); err != nil {
		return cnierr.Env(name, "CNI_CONTAINERID", "%q %v", args.ContainerID, err)
	}
	if args.IfName == "" {
		return cnierr.Env(name, "CNI_IFNAME", "missing")
	}
	if len(args.IfName) > 15 {
		return cnierr.Env(name, "CNI_IFNAME", "%q is longer than 15 characters", args.IfName)
	}
	if args.IfName == "." || args.IfName == ".." {
		return cnierr.Env(name, "CNI_IFNAME", "%q is not a valid interface name", args.IfName)
	}
	for _, c := range args.IfName {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f || c > 0x7e {
			return cnierr.Env(name, "CNI_IFNAME", "%q contains %q, which is not allowed in an interface name", args.IfName, c)
		}
	}
	return nil
}
