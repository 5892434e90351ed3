package hostlocal

import (
	"net/netip"
	"reflect"
	"testing"
)

func mkSet(t *testing.T, rr ...rawRange) RangeSet {
	t.Helper()
	s, err := parseRangeSet(rr, "ranges[0]")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func collect(it *Iter) []string {
	var out []string
	for {
		_, a, ok := it.Next()
		if !ok {
			return out
		}
		out = append(out, a.String())
	}
}

func TestIterFromStart(t *testing.T) {
	// 10.0.0.0/29: gateway .1 skipped, .2-.6 offered.
	set := mkSet(t, rawRange{Subnet: "10.0.0.0/29"})
	got := collect(NewIter(set, netip.Addr{}))
	if want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestIterRoundRobinAcrossRanges(t *testing.T) {
	set := mkSet(t,
		rawRange{Subnet: "10.0.0.0/29", RangeStart: "10.0.0.4"},
		rawRange{Subnet: "10.0.1.0/29", RangeEnd: "10.0.1.3", Gateway: "10.0.1.6"},
	)
	// After 10.0.0.5: .6, then the second range .1-.3, then wrap to .4, .5.
	got := collect(NewIter(set, netip.MustParseAddr("10.0.0.5")))
	want := []string{"10.0.0.6", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.0.4", "10.0.0.5"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	// Cursor at the end of the last range wraps to the first.
	got = collect(NewIter(set, netip.MustParseAddr("10.0.1.3")))
	want = []string{"10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1", "10.0.1.2", "10.0.1.3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	// A cursor outside the set (ranges changed) restarts at the first range.
	got = collect(NewIter(set, netip.MustParseAddr("192.168.0.1")))
	want = []string{"10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1", "10.0.1.2", "10.0.1.3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestIterGatewayAtCursorAndSingleAddress(t *testing.T) {
	// Range of one address which is the gateway: nothing to offer.
	set := mkSet(t, rawRange{Subnet: "10.0.0.0/29", RangeStart: "10.0.0.1", RangeEnd: "10.0.0.1"})
	if got := collect(NewIter(set, netip.Addr{})); len(got) != 0 {
		t.Fatal(got)
	}
	set = mkSet(t, rawRange{Subnet: "10.0.0.0/29", RangeStart: "10.0.0.3", RangeEnd: "10.0.0.3"})
	if got := collect(NewIter(set, netip.MustParseAddr("10.0.0.3"))); !reflect.DeepEqual(got, []string{"10.0.0.3"}) {
		t.Fatal(got)
	}
}

func TestIterIPv6(t *testing.T) {
	set := mkSet(t, rawRange{Subnet: "fd00::/124", RangeStart: "fd00::e"})
	got := collect(NewIter(set, netip.MustParseAddr("fd00::e")))
	if want := []string{"fd00::f", "fd00::e"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
}

type mapReserver map[netip.Addr]bool

func (m mapReserver) Reserve(a netip.Addr) (bool, error) {
	if m[a] {
		return false, nil
	}
	m[a] = true
	return true, nil
}

func TestAllocate(t *testing.T) {
	set := mkSet(t, rawRange{Subnet: "10.0.0.0/29"})
	m := mapReserver{netip.MustParseAddr("10.0.0.3"): true}
	last := netip.Addr{}
	var got []string
	for {
		_, a, ok, err := Allocate(set, last, netip.Addr{}, nil, m)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, a.String())
		last = a
	}
	if want := []string{"10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	// Requested: free, taken, gateway, outside.
	m = mapReserver{}
	if r, a, ok, _ := Allocate(set, last, netip.MustParseAddr("10.0.0.5"), nil, m); !ok || a.String() != "10.0.0.5" || r.Subnet.String() != "10.0.0.0/29" {
		t.Fatal(a, ok)
	}
	for _, s := range []string{"10.0.0.5", "10.0.0.1", "10.0.0.9"} {
		if _, _, ok, _ := Allocate(set, last, netip.MustParseAddr(s), nil, m); ok {
			t.Fatal(s)
		}
	}
	// The taken filter skips without asking the reserver.
	m = mapReserver{}
	_, a, ok, _ := Allocate(set, netip.Addr{}, netip.Addr{}, func(a netip.Addr) bool { return a.String() == "10.0.0.2" }, m)
	if !ok || a.String() != "10.0.0.3" || m[netip.MustParseAddr("10.0.0.2")] {
		t.Fatal(a, ok)
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{"10.0.0.0/24": "10.0.0.255", "10.0.0.0/13": "10.7.255.255", "fd00::/64": "fd00::ffff:ffff:ffff:ffff", "fd00::/127": "fd00::1"} {
		if got := lastAddr(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("%s: %s want %s", p, got, want)
		}
	}
}
