package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// Decomposition of a union of ports-set boxes into pairwise disjoint
// boxes, as the kernel's concatenated interval sets need them.

// u128 is an address as a number (IPv4 as its IPv4-mapped IPv6 form), for
// fast comparisons.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(v4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	a := netip.AddrFrom16(b)
	if v4 {
		return a.Unmap()
	}
	return a
}

func (u u128) cmp(v u128) int { return cmp.Or(cmp.Compare(u.hi, v.hi), cmp.Compare(u.lo, v.lo)) }

// next is u+1 (callers never pass the family's last address).
func (u u128) next() u128 {
	if u.lo == ^uint64(0) {
		return u128{u.hi + 1, 0}
	}
	return u128{u.hi, u.lo + 1}
}

func (u u128) prev() u128 {
	if u.lo == 0 {
		return u128{u.hi - 1, ^uint64(0)}
	}
	return u128{u.hi, u.lo - 1}
}

// ubox is a box of one protocol with numeric addresses.
type ubox struct {
	from, to u128
	ports    PortRange
}

// comparePortBox orders boxes by address, protocol, then port.
func comparePortBox(a, b PortBox) int {
	return cmp.Or(compareRange(a.Addrs, b.Addrs), cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Ports.From, b.Ports.From), cmp.Compare(a.Ports.To, b.Ports.To))
}

// boxSet collects the boxes of one family as runs sorted by address,
// per protocol, to be decomposed into pairwise disjoint boxes.
type boxSet struct {
	v4     bool
	protos []Proto
	runs   map[Proto][][]ubox
}

func newBoxSet(v4 bool) *boxSet { return &boxSet{v4: v4, runs: map[Proto][][]ubox{}} }

// addRun adds the boxes rs x proto x ports; rs sorted and disjoint.
func (s *boxSet) addRun(rs []AddrRange, proto Proto, ports PortRange) {
	s.add(proto, toRun(rs, ports))
}

// add adds a run made by toRun (not modified).
func (s *boxSet) add(proto Proto, run []ubox) {
	if len(run) == 0 {
		return
	}
	if _, ok := s.runs[proto]; !ok {
		s.protos = append(s.protos, proto)
	}
	s.runs[proto] = append(s.runs[proto], run)
}

// toRun is the run of boxes rs x ports; rs sorted and disjoint.
func toRun(rs []AddrRange, ports PortRange) []ubox {
	if len(rs) == 0 {
		return nil
	}
	run := make([]ubox, len(rs))
	for i, r := range rs {
		run[i] = ubox{toU128(r.From), toU128(r.To), ports}
	}
	return run
}

// disjointBoxes decomposes the union of boxes (all of one family) into
// pairwise disjoint boxes, sorted by comparePortBox.
func disjointBoxes(boxes []PortBox) []PortBox {
	if len(boxes) == 0 {
		return nil
	}
	s := newBoxSet(boxes[0].Addrs.From.Is4())
	for _, b := range boxes {
		s.addRun([]AddrRange{b.Addrs}, b.Proto, b.Ports)
	}
	return s.disjoint()
}

// disjoint decomposes the union of the boxes into pairwise disjoint
// boxes, sorted by comparePortBox: per protocol, when some address ranges
// overlap without being equal, the boundaries of all ranges cut the
// addresses into elementary intervals; each interval (or distinct range)
// gets the union of the port ranges of the boxes covering it; then
// neighbouring intervals with equal port lists are merged again.
func (s *boxSet) disjoint() []PortBox {
	if len(s.protos) == 0 {
		return nil
	}
	last := toU128(full6.To)
	if s.v4 {
		last = toU128(full4.To)
	}
	slices.Sort(s.protos)
	var out []PortBox
	for _, proto := range s.protos {
		items := mergeRuns(s.runs[proto])
		var groups []ugroup
		if nested(items) {
			groups = elementary(items, last)
		} else {
			groups = sameRanges(items)
		}
		out = emit(out, groups, proto, s.v4)
	}
	if len(s.protos) > 1 {
		slices.SortFunc(out, comparePortBox)
	}
	return out
}

// mergeRuns merges sorted runs into one sorted slice, pairwise.
func mergeRuns(runs [][]ubox) []ubox {
	for len(runs) > 1 {
		next := runs[:0:0]
		for i := 0; i < len(runs); i += 2 {
			if i+1 == len(runs) {
				next = append(next, runs[i])
				break
			}
			a, b := runs[i], runs[i+1]
			m := make([]ubox, 0, len(a)+len(b))
			for len(a) > 0 && len(b) > 0 {
				if compareUbox(b[0], a[0]) < 0 {
					m, b = append(m, b[0]), b[1:]
				} else {
					m, a = append(m, a[0]), a[1:]
				}
			}
			next = append(next, append(append(m, a...), b...))
		}
		runs = next
	}
	return runs[0]
}

func compareUbox(a, b ubox) int {
	switch {
	case a.from.hi != b.from.hi:
		return cmp.Compare(a.from.hi, b.from.hi)
	case a.from.lo != b.from.lo:
		return cmp.Compare(a.from.lo, b.from.lo)
	case a.to.hi != b.to.hi:
		return cmp.Compare(a.to.hi, b.to.hi)
	case a.to.lo != b.to.lo:
		return cmp.Compare(a.to.lo, b.to.lo)
	}
	return cmp.Compare(a.ports.From, b.ports.From)
}

// ugroup is an address range with its merged port ranges.
type ugroup struct {
	from, to u128
	ports    []PortRange
}

// nested reports whether two of the sorted items have different but
// overlapping address ranges (the general case).
func nested(items []ubox) bool {
	end := items[0].to
	for i := 1; i < len(items); i++ {
		it := items[i]
		if it.from == items[i-1].from && it.to == items[i-1].to {
			continue
		}
		if it.from.cmp(end) <= 0 {
			return true
		}
		end = it.to
	}
	return false
}

// sameRanges groups sorted items whose ranges are equal or disjoint.
func sameRanges(items []ubox) []ugroup {
	groups := make([]ugroup, 0, len(items))
	all := make([]PortRange, len(items)) // the groups' port lists share it
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].from == items[i].from && items[j].to == items[i].to {
			j++
		}
		ports := all[i:j:j]
		for k, it := range items[i:j] {
			ports[k] = it.ports
		}
		groups = append(groups, ugroup{items[i].from, items[i].to, mergePortRanges(ports)})
		i = j
	}
	return groups
}

// elementary cuts the addresses at every boundary of the sorted items.
func elementary(items []ubox, last u128) []ugroup {
	starts := make([]u128, 0, 2*len(items))
	for _, it := range items {
		starts = append(starts, it.from)
		if it.to != last {
			starts = append(starts, it.to.next())
		}
	}
	slices.SortFunc(starts, u128.cmp)
	starts = slices.Compact(starts)
	cover := make([][]PortRange, len(starts))
	for _, it := range items {
		i, _ := slices.BinarySearchFunc(starts, it.from, u128.cmp)
		end := len(starts)
		if it.to != last {
			end, _ = slices.BinarySearchFunc(starts[i:], it.to.next(), u128.cmp)
			end += i
		}
		for k := i; k < end; k++ {
			cover[k] = append(cover[k], it.ports)
		}
	}
	groups := make([]ugroup, 0, len(starts))
	for k, ports := range cover {
		if len(ports) == 0 {
			continue
		}
		to := last
		if k+1 < len(starts) {
			to = starts[k+1].prev()
		}
		groups = append(groups, ugroup{starts[k], to, mergePortRanges(ports)})
	}
	return groups
}

// emit merges neighbouring groups with equal port lists and appends
// their boxes.
func emit(out []PortBox, groups []ugroup, proto Proto, v4 bool) []PortBox {
	for k := 0; k < len(groups); {
		g := groups[k]
		j := k + 1
		for j < len(groups) && groups[j].from == groups[j-1].to.next() && slices.Equal(groups[j].ports, g.ports) {
			j++
		}
		r := AddrRange{g.from.addr(v4), groups[j-1].to.addr(v4)}
		for _, pr := range g.ports {
			out = append(out, PortBox{r, proto, pr})
		}
		k = j
	}
	return out
}
