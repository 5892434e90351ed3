package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// The address universes of the random tests: a few addresses at the start
// and at the very end of each family, to cover Next overflow.
func randAddr(r *rand.Rand, v4 bool) netip.Addr {
	n := byte(r.IntN(12))
	if v4 {
		if r.IntN(3) == 0 {
			return netip.AddrFrom4([4]byte{255, 255, 255, 255 - n})
		}
		return netip.AddrFrom4([4]byte{10, 0, 0, n})
	}
	if r.IntN(3) == 0 {
		b := full6.To.As16()
		b[15] -= n
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom16([16]byte{0xfd, 15: n})
}

func randRange(r *rand.Rand, v4 bool) AddrRange {
	a, b := randAddr(r, v4), randAddr(r, v4)
	if b.Less(a) {
		a, b = b, a
	}
	return AddrRange{a, b}
}

func randPorts(r *rand.Rand) PortRange {
	pick := func() uint16 {
		if r.IntN(3) == 0 {
			return uint16(65535 - r.IntN(5))
		}
		return uint16(r.IntN(12))
	}
	a, b := pick(), pick()
	return PortRange{min(a, b), max(a, b)}
}

func inRanges(rs []AddrRange, a netip.Addr) bool {
	return slices.ContainsFunc(rs, func(r AddrRange) bool { return r.Contains(a) })
}

func TestRangeOps(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		v4 := r.IntN(2) == 0
		var a, b []AddrRange
		for range r.IntN(5) {
			a = append(a, randRange(r, v4))
		}
		for range r.IntN(4) {
			b = append(b, randRange(r, v4))
		}
		ma, mb := mergeRanges(slices.Clone(a)), mergeRanges(slices.Clone(b))
		diff := subtractRanges(ma, mb)
		var bad []string
		badf := func(f string, args ...any) { bad = append(bad, f) }
		checkRanges(badf, "merged", ma, v4)
		checkRanges(badf, "diff", diff, v4)
		if bad != nil {
			t.Fatalf("%v: a=%v b=%v merged=%v diff=%v", bad, a, b, ma, diff)
		}
		for range 20 {
			x := randAddr(r, v4)
			if inRanges(a, x) != inRanges(ma, x) || inRanges(ma, x) != rangesContain(ma, x) {
				t.Fatalf("%s: a=%v merged=%v", x, a, ma)
			}
			if want := inRanges(a, x) && !inRanges(b, x); inRanges(diff, x) != want || rangesContain(diff, x) != want {
				t.Fatalf("%s: a=%v b=%v diff=%v", x, a, b, diff)
			}
		}
	}
}

func TestRangeString(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		r    AddrRange
		want string
	}{
		{AddrRange{a("10.0.0.1"), a("10.0.0.1")}, "10.0.0.1"},
		{AddrRange{a("10.0.0.0"), a("10.0.0.255")}, "10.0.0.0/24"},
		{AddrRange{a("10.0.0.1"), a("10.0.0.2")}, "10.0.0.1-10.0.0.2"},
		{AddrRange{a("10.0.0.2"), a("10.0.0.3")}, "10.0.0.2/31"},
		{full4, "0.0.0.0/0"},
		{full6, "::/0"},
		{AddrRange{a("fd00::"), a("fd00::ffff")}, "fd00::/112"},
		{prefixRange(netip.MustParsePrefix("10.1.2.3/20")), "10.1.0.0/20"},
		{prefixRange(netip.MustParsePrefix("fd00:1::7/127")), "fd00:1::6/127"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%v: got %s, want %s", tc.r, got, tc.want)
		}
	}
}
