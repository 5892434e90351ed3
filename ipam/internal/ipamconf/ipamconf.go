// Package ipamconf holds the config pieces shared by podnet's IPAM plugins
// (host-local and static): routes, CNI_ARGS, address strings, resolv.conf
// and the one-address-per-family rule of old spec versions. Every error
// names the config field (or CNI_ARGS key) it comes from.
package ipamconf

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/internal/cnierr"
)

// ParseAddr parses a single address ("10.1.2.3", "fd00::1") and returns it
// in canonical form (IPv4-mapped IPv6 becomes IPv4). Zones are refused.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone; zones are not allowed here", s)
	}
	return a.Unmap(), nil
}

// ParseAddrOrPrefix parses "10.1.2.3" or "10.1.2.3/24" and returns the
// address (the prefix length, if any, is returned as -1 when absent).
func ParseAddrOrPrefix(s string) (netip.Addr, int, error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("%q is neither an IP address nor an address/prefix-length", s)
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a = a.Unmap()
			bits -= 96
			if bits < 0 {
				return netip.Addr{}, 0, fmt.Errorf("%q: prefix length too short for an IPv4-mapped address", s)
			}
		}
		return a, bits, nil
	}
	a, err := ParseAddr(t)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%q is neither an IP address nor an address/prefix-length", s)
	}
	return a, -1, nil
}

// ParseCIDR parses "10.1.2.3/24" keeping the host bits (the interface
// address form).
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not in CIDR notation (address/prefix-length)", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: prefix length too short for an IPv4-mapped address", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// IPNet converts a prefix (host bits kept) to a net.IPNet.
func IPNet(p netip.Prefix) net.IPNet {
	a := p.Addr()
	return net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// IP converts an address to net.IP (nil for the zero Addr).
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.AsSlice())
}

// ParseRoutes decodes the "routes" list. Each entry keeps every field
// types.Route knows (mtu, advmss, priority, table, scope); dst and gw are
// checked first so a bad value names the entry.
func ParseRoutes(plugin, field string, raw []json.RawMessage) ([]*types.Route, error) {
	var out []*types.Route
	for i, r := range raw {
		f := fmt.Sprintf("%s[%d]", field, i)
		var s struct {
			Dst *string `json:"dst"`
			GW  *string `json:"gw"`
		}
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, cnierr.New(cnierr.DecodingFailure, plugin, "field %q: %v", f, err)
		}
		if s.Dst == nil || *s.Dst == "" {
			return nil, cnierr.Field(plugin, f+".dst", "missing: a route needs a destination such as \"0.0.0.0/0\"")
		}
		dst, err := netip.ParsePrefix(*s.Dst)
		if err != nil {
			return nil, cnierr.Field(plugin, f+".dst", "%q is not in CIDR notation", *s.Dst)
		}
		if s.GW != nil && *s.GW != "" {
			gw, err := ParseAddr(*s.GW)
			if err != nil {
				return nil, cnierr.Field(plugin, f+".gw", "%v", err)
			}
			if gw.Is4() != dst.Addr().Unmap().Is4() {
				return nil, cnierr.Field(plugin, f+".gw", "%s is not in the same address family as dst %s", gw, dst)
			}
		}
		rt := &types.Route{}
		if err := json.Unmarshal(r, rt); err != nil {
			return nil, cnierr.New(cnierr.DecodingFailure, plugin, "field %q: %v", f, err)
		}
		out = append(out, rt)
	}
	return out, nil
}

// CNIArgs parses a CNI_ARGS string ("K1=V1;K2=V2") into a map. Entries
// without '=' are ignored, as are empty keys; later keys win.
func CNIArgs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// SplitList splits a comma-separated CNI_ARGS value, dropping empty items.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// CheckFamilies refuses more than one address per family for cniVersion
// below 0.3.0, whose result format cannot carry them.
func CheckFamilies(plugin, cniVersion string, addrs []netip.Addr) error {
	v4, v6 := 0, 0
	for _, a := range addrs {
		if a.Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 <= 1 && v6 <= 1 {
		return nil
	}
	ver := cniVersion
	if ver == "" {
		ver = "0.1.0"
	}
	if ok, _ := version.GreaterThanOrEqualTo(ver, "0.3.0"); ok {
		return nil
	}
	return cnierr.Field(plugin, "cniVersion", "%s results carry at most one IPv4 and one IPv6 address, but %d IPv4 and %d IPv6 addresses are configured; use cniVersion 0.3.0 or later", ver, v4, v6)
}

// ResolvConf reads nameserver, domain, search and options lines from a
// resolv.conf-format file.
func ResolvConf(path string) (types.DNS, error) {
	var dns types.DNS
	f, err := os.Open(path)
	if err != nil {
		return dns, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fs[1])
		case "domain":
			dns.Domain = fs[1]
		case "search":
			dns.Search = append(dns.Search, fs[1:]...)
		case "options":
			dns.Options = append(dns.Options, fs[1:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return dns, err
	}
	return dns, nil
}

// ErrNoIPAM is returned (wrapped in a code-7 error) when the "ipam" object
// is missing.
var ErrNoIPAM = errors.New("missing: an IPAM plugin reads its settings from the network config's \"ipam\" object")
