package hostlocal

import (
	"net/netip"
)

// Iter walks the addresses of a range set round-robin: it starts just after
// the last reserved address (or at the first range's start when that
// address is not in the set), goes to the end of each range, continues with
// the next range (wrapping to the first), and stops once it is back where it
// began. Gateways are skipped. It touches no storage.
type Iter struct {
	set   RangeSet
	idx   int
	cur   netip.Addr
	first struct {
		idx int
		a   netip.Addr
	}
	done bool
}

// NewIter returns an iterator over set starting after last (which may be the
// zero Addr).
func NewIter(set RangeSet, last netip.Addr) *Iter {
	it := &Iter{set: set}
	if len(set) == 0 {
		it.done = true
		return it
	}
	if i := set.Find(last); last.IsValid() && i >= 0 {
		it.idx, it.cur = it.advance(i, last)
	} else {
		it.idx, it.cur = 0, set[0].Start
	}
	it.first.idx, it.first.a = it.idx, it.cur
	return it
}

// advance returns the position after (i, a).
func (it *Iter) advance(i int, a netip.Addr) (int, netip.Addr) {
	if a == it.set[i].End {
		i = (i + 1) % len(it.set)
		return i, it.set[i].Start
	}
	return i, a.Next()
}

// Next returns the next candidate address and the range holding it, or
// ok=false when every address has been offered once.
func (it *Iter) Next() (r *Range, a netip.Addr, ok bool) {
	for !it.done {
		i, cur := it.idx, it.cur
		it.idx, it.cur = it.advance(i, cur)
		if it.idx == it.first.idx && it.cur == it.first.a {
			it.done = true
		}
		if cur == it.set[i].Gateway {
			continue
		}
		return &it.set[i], cur, true
	}
	return nil, netip.Addr{}, false
}

// Reserver claims an address atomically; ok=false means it is taken.
type Reserver interface {
	Reserve(a netip.Addr) (ok bool, err error)
}

// Allocate picks one address from set. If requested is valid, only that
// address is tried; otherwise candidates come from NewIter(set, last) and
// taken (which may be nil) filters known-taken ones before Reserve is tried.
// It returns the range and address reserved, or ok=false when no address
// was free (or the requested one is taken).
func Allocate(set RangeSet, last, requested netip.Addr, taken func(netip.Addr) bool, res Reserver) (*Range, netip.Addr, bool, error) {
	if requested.IsValid() {
		i := set.Find(requested)
		if i < 0 || requested == set[i].Gateway {
			return nil, netip.Addr{}, false, nil
		}
		ok, err := res.Reserve(requested)
		if err != nil || !ok {
			return nil, netip.Addr{}, false, err
		}
		return &set[i], requested, true, nil
	}
	it := NewIter(set, last)
	for {
		r, a, more := it.Next()
		if !more {
			return nil, netip.Addr{}, false, nil
		}
		if taken != nil && taken(a) {
			continue
		}
		ok, err := res.Reserve(a)
		if err != nil {
			return nil, netip.Addr{}, false, err
		}
		if ok {
			return r, a, true, nil
		}
	}
}
