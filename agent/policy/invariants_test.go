package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// invariantErrors lists what in rs the kernel would reject or what breaks
// the Ruleset contract.
func invariantErrors(rs Ruleset) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	owner := map[netip.Addr]string{}
	usedProfiles, usedSets, usedPorts := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, p := range rs.Pods {
		if i > 0 && rs.Pods[i-1].ID >= p.ID {
			bad("pods not sorted by ID at %d", i)
		}
		if p.ID != PodID(p.Namespace, p.Name) {
			bad("%s/%s: ID %s", p.Namespace, p.Name, p.ID)
		}
		if p.IngressChain == "" && p.EgressChain == "" {
			bad("%s: not isolated", p.ID)
		}
		for _, a := range p.IPs {
			if o, ok := owner[a]; ok {
				bad("%s: address %s also %s's", p.ID, a, o)
			}
			owner[a] = p.ID
		}
		for _, ch := range []struct {
			name   string
			egress bool
		}{{p.IngressChain, false}, {p.EgressChain, true}} {
			if ch.name == "" {
				continue
			}
			usedProfiles[ch.name] = true
			if pr := rs.FindProfile(ch.name); pr == nil || pr.Egress != ch.egress {
				bad("%s: chain %s missing or of the other direction", p.ID, ch.name)
			}
		}
	}
	for _, pr := range rs.Profiles {
		if pr.Next != "" {
			usedProfiles[pr.Next] = true
			if n := rs.FindProfile(pr.Next); n == nil || n.Egress != pr.Egress || n.Next != "" || pr.Open {
				bad("%s: next %s missing, of the other direction, open or chained further", pr.Name, pr.Next)
			}
		}
		for _, r := range pr.Rules {
			if (r.Tier == "") != (r.Action == Allow && r.Priority == 0) && r.Tier == "" {
				bad("%s: NetworkPolicy rule with an action or priority", pr.Name)
			}
		}
	}
	sortedAndUsed(bad, "profile", rs.Profiles, func(p Profile) string { return p.Name }, usedProfiles)
	for _, pr := range rs.Profiles {
		if prefix := map[bool]string{false: "ingress-", true: "egress-"}[pr.Egress]; !strings.HasPrefix(pr.Name, prefix) || len(pr.Name) != len(prefix)+12 {
			bad("profile %s: bad name", pr.Name)
		}
		if !slices.IsSorted(pr.Policies) || len(slices.Compact(slices.Clone(pr.Policies))) != len(pr.Policies) {
			bad("%s: policies %v", pr.Name, pr.Policies)
		}
		for _, r := range pr.Rules {
			if !slices.Contains(pr.Policies, r.Policy) {
				bad("%s: rule of %s, not among its policies", pr.Name, r.Policy)
			}
			if r.Peers != "" {
				usedSets[r.Peers] = true
				if rs.FindAddrSet(r.Peers) == nil {
					bad("%s: set %s missing", pr.Name, r.Peers)
				}
			}
			switch {
			case r.Ports != "":
				usedPorts[r.Ports] = true
				if rs.FindPortSet(r.Ports) == nil || r.Proto != 0 || r.Range != (PortRange{}) {
					bad("%s: port set %s missing or with a protocol", pr.Name, r.Ports)
				}
			case r.Proto == 0 && r.Range != (PortRange{}):
				bad("%s: range without protocol", pr.Name)
			case r.Proto != 0 && r.Range.To < r.Range.From:
				bad("%s: bad range %v", pr.Name, r.Range)
			}
		}
	}
	sortedAndUsed(bad, "set", rs.AddrSets, func(s AddrSet) string { return s.Name }, usedSets)
	for _, s := range rs.AddrSets {
		fam := map[bool]string{false: "4", true: "6"}[s.V6]
		kind := map[bool]string{false: "pods", true: "cidr"}[s.Interval]
		if !strings.HasPrefix(s.Name, kind+fam+"-") {
			bad("set %s: bad name", s.Name)
		}
		if s.Interval {
			checkRanges(bad, s.Name, s.Ranges, !s.V6)
			if len(s.Addrs) > 0 || len(s.Ranges) == 0 {
				bad("set %s: interval set with addresses or empty", s.Name)
			}
			continue
		}
		if len(s.Ranges) > 0 || len(s.Addrs) == 0 {
			bad("set %s: hash set with ranges or empty", s.Name)
		}
		for j, a := range s.Addrs {
			if !a.IsValid() || a.Is4() == s.V6 || (j > 0 && s.Addrs[j-1].Compare(a) >= 0) {
				bad("set %s: address %v bad or not sorted", s.Name, a)
			}
		}
	}
	sortedAndUsed(bad, "port set", rs.PortSets, func(s PortSet) string { return s.Name }, usedPorts)
	for _, s := range rs.PortSets {
		if len(s.Ports) < 2 || !slices.IsSortedFunc(s.Ports, compareProtoPort) || len(slices.Compact(slices.Clone(s.Ports))) != len(s.Ports) {
			bad("port set %s: %v", s.Name, s.Ports)
		}
	}
	return errs
}

// sortedAndUsed checks that items are sorted by name, distinct, and
// each used.
func sortedAndUsed[T any](bad func(string, ...any), what string, items []T, name func(T) string, used map[string]bool) {
	for i, it := range items {
		if i > 0 && name(items[i-1]) >= name(it) {
			bad("%ss not sorted at %s", what, name(it))
		}
		if !used[name(it)] {
			bad("%s %s: nothing uses it", what, name(it))
		}
	}
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

func checkInvariants(t testing.TB, rs Ruleset) {
	t.Helper()
	for _, e := range invariantErrors(rs) {
		t.Error(e)
	}
}
