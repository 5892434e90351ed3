package policy

import (
	"cmp"
	"net/netip"
	"slices"
)

// Address range arithmetic. Ranges of both families may share a slice:
// netip.Addr.Compare orders every IPv4 address before every IPv6 one and
// Next never crosses families, so merging never joins them.

var (
	full4 = AddrRange{netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})}
	full6 = AddrRange{netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
		255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})}
)

// Contains reports whether a is in r (false for another family).
func (r AddrRange) Contains(a netip.Addr) bool {
	return a.Is4() == r.From.Is4() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// Contains reports whether port is in r.
func (r PortRange) Contains(port uint16) bool { return r.From <= port && port <= r.To }

func compareRange(a, b AddrRange) int {
	if c := a.From.Compare(b.From); c != 0 {
		return c
	}
	return a.To.Compare(b.To)
}

// prefixRange is the range of addresses of p (host bits ignored).
func prefixRange(p netip.Prefix) AddrRange {
	p = p.Masked()
	from := p.Addr()
	b := from.As16()
	host := from.BitLen() - p.Bits() // host bits, from the low end
	for i := 15; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	to := netip.AddrFrom16(b)
	if from.Is4() {
		to = to.Unmap()
	}
	return AddrRange{from, to}
}

// addrRange is the single-address range of a.
func addrRange(a netip.Addr) AddrRange { return AddrRange{a, a} }

// mergeRanges sorts rs and merges overlapping and adjacent ranges, in
// place; the result is sorted, disjoint and not adjacent.
func mergeRanges(rs []AddrRange) []AddrRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, compareRange)
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.From.Compare(last.To) <= 0 || r.From == last.To.Next() {
			if r.To.Compare(last.To) > 0 {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtractRanges is a minus b; both sorted and merged, as is the result.
func subtractRanges(a, b []AddrRange) []AddrRange {
	if len(b) == 0 {
		return a
	}
	var out []AddrRange
	j := 0
	for _, r := range a {
		for j < len(b) && b[j].To.Less(r.From) {
			j++
		}
		cur, done := r.From, false
		for k := j; k < len(b) && b[k].From.Compare(r.To) <= 0; k++ {
			if b[k].From.Compare(cur) > 0 {
				out = append(out, AddrRange{cur, b[k].From.Prev()})
			}
			if b[k].To.Compare(r.To) >= 0 {
				done = true
				break
			}
			cur = b[k].To.Next()
		}
		if !done {
			out = append(out, AddrRange{cur, r.To})
		}
	}
	return out
}

// rangesContain reports whether a is in the sorted, disjoint rs.
func rangesContain(rs []AddrRange, a netip.Addr) bool {
	i, _ := slices.BinarySearchFunc(rs, a, func(r AddrRange, a netip.Addr) int {
		if r.To.Less(a) {
			return -1
		}
		if a.Less(r.From) {
			return 1
		}
		return 0
	})
	return i < len(rs) && rs[i].Contains(a)
}

// splitFamilies splits sorted ranges into the IPv4 and IPv6 ones (IPv4
// sort first).
func splitFamilies(rs []AddrRange) (v4, v6 []AddrRange) {
	i := 0
	for i < len(rs) && rs[i].From.Is4() {
		i++
	}
	return rs[:i:i], rs[i:]
}

// mergePorts sorts and merges overlapping and adjacent protocol port
// ranges, in place.
func mergePorts(ps []ProtoPorts) []ProtoPorts {
	if len(ps) < 2 {
		return ps
	}
	slices.SortFunc(ps, func(a, b ProtoPorts) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Ports.From, b.Ports.From),
			cmp.Compare(a.Ports.To, b.Ports.To))
	})
	out := ps[:1]
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if p.Proto == last.Proto && int(p.Ports.From) <= int(last.Ports.To)+1 {
			last.Ports.To = max(last.Ports.To, p.Ports.To)
			continue
		}
		out = append(out, p)
	}
	return out
}

// mergePortRanges sorts and merges port ranges, in place.
func mergePortRanges(ps []PortRange) []PortRange {
	if len(ps) < 2 {
		return ps
	}
	slices.SortFunc(ps, func(a, b PortRange) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	out := ps[:1]
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if int(p.From) <= int(last.To)+1 {
			last.To = max(last.To, p.To)
			continue
		}
		out = append(out, p)
	}
	return out
}
