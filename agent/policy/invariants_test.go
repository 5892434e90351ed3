package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// invariantErrors lists what in rs the kernel would reject or what breaks
// the Ruleset contract.
func invariantErrors(rs Ruleset) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	owner := map[netip.Addr]string{}
	for i, p := range rs.Pods {
		if i > 0 && rs.Pods[i-1].ID >= p.ID {
			bad("pods not sorted by ID at %d", i)
		}
		if p.ID != PodID(p.Namespace, p.Name) {
			bad("%s/%s: ID %s", p.Namespace, p.Name, p.ID)
		}
		if p.Ingress == nil && p.Egress == nil {
			bad("%s: not isolated", p.ID)
		}
		for _, a := range p.IPs {
			if o, ok := owner[a]; ok {
				bad("%s: address %s also %s's", p.ID, a, o)
			}
			owner[a] = p.ID
		}
		for _, ch := range []*Chain{p.Ingress, p.Egress} {
			if ch == nil {
				continue
			}
			if !slices.IsSorted(ch.Policies) || len(slices.Compact(slices.Clone(ch.Policies))) != len(ch.Policies) {
				bad("%s: policies %v", p.ID, ch.Policies)
			}
			checkRanges(bad, p.ID+" any4", ch.Any4, true)
			checkRanges(bad, p.ID+" any6", ch.Any6, false)
			checkBoxes(bad, p.ID+" ports4", ch.Ports4, true)
			checkBoxes(bad, p.ID+" ports6", ch.Ports6, false)
		}
	}
	return errs
}

func checkRanges(bad func(string, ...any), what string, rs []AddrRange, v4 bool) {
	for i, r := range rs {
		if !r.From.IsValid() || r.From.Is4() != v4 || r.To.Is4() != v4 || r.To.Less(r.From) {
			bad("%s: bad range %v", what, r)
		}
		if i > 0 && (r.From.Compare(rs[i-1].To) <= 0 || r.From == rs[i-1].To.Next()) {
			bad("%s: %v and %v overlap or touch", what, rs[i-1], r)
		}
	}
}

func checkBoxes(bad func(string, ...any), what string, bs []PortBox, v4 bool) {
	for i, b := range bs {
		if !b.Addrs.From.IsValid() || b.Addrs.From.Is4() != v4 || b.Addrs.To.Is4() != v4 ||
			b.Addrs.To.Less(b.Addrs.From) || b.Ports.To < b.Ports.From {
			bad("%s: bad box %v", what, b)
		}
		if i > 0 && comparePortBox(bs[i-1], b) >= 0 {
			bad("%s: not sorted at %d", what, i)
		}
	}
	// Sorted by From: only boxes starting before bs[i] ends can overlap it.
	for i := range bs {
		for j := i + 1; j < len(bs) && bs[j].Addrs.From.Compare(bs[i].Addrs.To) <= 0; j++ {
			if boxesOverlap(bs[i], bs[j]) {
				bad("%s: %v and %v overlap", what, bs[i], bs[j])
			}
		}
	}
}

func boxesOverlap(a, b PortBox) bool {
	return a.Proto == b.Proto &&
		a.Addrs.From.Compare(b.Addrs.To) <= 0 && b.Addrs.From.Compare(a.Addrs.To) <= 0 &&
		a.Ports.From <= b.Ports.To && b.Ports.From <= a.Ports.To
}

func checkInvariants(t testing.TB, rs Ruleset) {
	t.Helper()
	for _, e := range invariantErrors(rs) {
		t.Error(e)
	}
}
