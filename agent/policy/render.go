package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Render prints rs as the nft script of table inet podnet-policy (the
// layout in the package comment), deterministically: a header naming the
// node and any problems; the four maps (each element commented with its
// pod); the forward chain; the peer address sets and the port sets with
// their elements; then every profile chain, preceded by a comment naming
// the policies it is made of, each rule commented with the policy rule it
// comes from. `podnet policy dump` prints it; the golden files hold it.
func Render(rs Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# node %s: %d isolated pods, %d profiles\n", rs.Node, len(rs.Pods), len(rs.Profiles))
	for _, p := range rs.Problems {
		fmt.Fprintf(&b, "# problem: %s\n", strings.ReplaceAll(p, "\n", " "))
	}
	b.WriteString("table inet podnet-policy {\n")
	renderMaps(&b, rs)
	b.WriteString("\tchain forward {\n" +
		"\t\ttype filter hook forward priority filter; policy accept;\n" +
		"\t\tct state established,related accept\n" +
		"\t\tip daddr vmap @ing4\n" +
		"\t\tip6 daddr vmap @ing6\n" +
		"\t\tip saddr vmap @egr4\n" +
		"\t\tip6 saddr vmap @egr6\n" +
		"\t}\n")
	for _, s := range rs.AddrSets {
		renderAddrSet(&b, s)
	}
	for _, s := range rs.PortSets {
		elems := make([]element, len(s.Ports))
		for i, p := range s.Ports {
			elems[i] = element{text: fmt.Sprintf("%s . %d", p.Proto, p.Port)}
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype inet_proto . inet_service\n", s.Name)
		writeElements(&b, elems)
		b.WriteString("\t}\n")
	}
	for _, p := range rs.Profiles {
		renderProfile(&b, &rs, p)
	}
	b.WriteString("}\n")
	return b.String()
}

// renderMaps prints ing4, ing6, egr4 and egr6: every isolated pod address
// of the family and direction, in address order, jumping to the pod's
// profile chain.
func renderMaps(b *strings.Builder, rs Ruleset) {
	for _, m := range []struct {
		name, typ   string
		v4, ingress bool
	}{
		{"ing4", "ipv4_addr", true, true},
		{"ing6", "ipv6_addr", false, true},
		{"egr4", "ipv4_addr", true, false},
		{"egr6", "ipv6_addr", false, false},
	} {
		type entry struct {
			a          netip.Addr
			chain, pod string
		}
		var entries []entry
		for _, p := range rs.Pods {
			chain := p.EgressChain
			if m.ingress {
				chain = p.IngressChain
			}
			if chain == "" {
				continue
			}
			for _, a := range p.IPs {
				if a.Is4() == m.v4 {
					entries = append(entries, entry{a, chain, p.Namespace + "/" + p.Name})
				}
			}
		}
		slices.SortFunc(entries, func(x, y entry) int { return x.a.Compare(y.a) })
		elems := make([]element, len(entries))
		for i, e := range entries {
			elems[i] = element{fmt.Sprintf("%s : jump %s", e.a, e.chain), e.pod}
		}
		fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : verdict\n", m.name, m.typ)
		writeElements(b, elems)
		b.WriteString("\t}\n")
	}
}

// renderAddrSet prints a peer set: addresses, or for an interval set
// ranges written as an address, a prefix or from-to.
func renderAddrSet(b *strings.Builder, s AddrSet) {
	typ := "ipv4_addr"
	if s.V6 {
		typ = "ipv6_addr"
	}
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.Name, typ)
	var elems []element
	if s.Interval {
		b.WriteString("\t\tflags interval\n")
		for _, r := range s.Ranges {
			elems = append(elems, element{text: r.String()})
		}
	} else {
		for _, a := range s.Addrs {
			elems = append(elems, element{text: a.String()})
		}
	}
	writeElements(b, elems)
	b.WriteString("\t}\n")
}

// renderProfile prints a profile chain: a comment naming its policies,
// then its rules in order, each commented with the policy rule it comes
// from, then the drop every packet no rule returns reaches.
func renderProfile(b *strings.Builder, rs *Ruleset, p Profile) {
	dir := "ingress"
	if p.Egress {
		dir = "egress"
	}
	fmt.Fprintf(b, "\n\t# policies: %s\n", strings.Join(p.Policies, ", "))
	fmt.Fprintf(b, "\tchain %s {\n", p.Name)
	for _, r := range p.Rules {
		src := fmt.Sprintf("%s %s[%d]", r.Policy, dir, r.Index)
		if r.Tier != "" {
			src = fmt.Sprintf("%s %s priority %d: %s %s[%d] %s", r.Tier, "ClusterNetworkPolicy", r.Priority, r.Policy, dir, r.Index, r.Action)
		}
		fmt.Fprintf(b, "\t\t%s  # %s\n", ruleString(rs, r, p), src)
	}
	switch {
	case p.Next != "":
		fmt.Fprintf(b, "\t\tgoto %s\n\t}\n", p.Next)
	case p.Open:
		b.WriteString("\t\t# no rule matched: allowed\n\t}\n")
	default:
		b.WriteString("\t\tcounter drop\n\t}\n")
	}
}

// ruleString is r as an nft rule of a profile chain: the peer match (the
// source address for ingress, the destination for egress), the port
// match, and the action's verdict: return (allow), counter drop (deny) or
// goto the profile's Next (pass; return when it has none).
func ruleString(rs *Ruleset, r Rule, p Profile) string {
	egress := p.Egress
	var parts []string
	if r.Peers != "" {
		fam, key := "ip", "saddr"
		if peersV6(rs, r.Peers) {
			fam = "ip6"
		}
		if egress {
			key = "daddr"
		}
		parts = append(parts, fmt.Sprintf("%s %s @%s", fam, key, r.Peers))
	}
	switch {
	case r.Ports != "":
		parts = append(parts, "meta l4proto . th dport @"+r.Ports)
	case r.Proto == 0:
	case r.Range == PortRange{0, 65535}:
		parts = append(parts, "meta l4proto "+r.Proto.String())
	default:
		parts = append(parts, fmt.Sprintf("meta l4proto %s th dport %s", r.Proto, portString(r.Range)))
	}
	verdict := "return"
	switch {
	case r.Action == Deny:
		verdict = "counter drop"
	case r.Action == Pass && p.Next != "":
		verdict = "goto " + p.Next
	}
	return strings.Join(append(parts, verdict), " ")
}

// peersV6 reports whether the peer set named name is of IPv6 addresses
// (from its name when rs lacks it).
func peersV6(rs *Ruleset, name string) bool {
	if s := rs.FindAddrSet(name); s != nil {
		return s.V6
	}
	return strings.HasPrefix(name, "pods6-") || strings.HasPrefix(name, "cidr6-")
}

// element is one line of a set's or map's elements, with an optional
// comment.
type element struct{ text, comment string }

// writeElements prints elements one per line.
func writeElements(b *strings.Builder, elems []element) {
	if len(elems) == 0 {
		return
	}
	b.WriteString("\t\telements = {\n")
	for i, e := range elems {
		b.WriteString("\t\t\t")
		b.WriteString(e.text)
		if i < len(elems)-1 {
			b.WriteByte(',')
		}
		if e.comment != "" {
			b.WriteString("  # ")
			b.WriteString(e.comment)
		}
		b.WriteByte('\n')
	}
	b.WriteString("\t\t}\n")
}

// String is the range as nft writes it: an address, a prefix, or from-to.
func (r AddrRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	for bits := r.From.BitLen() - 1; bits >= 0; bits-- {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked().Addr() != r.From {
			break
		}
		if pr := prefixRange(p); pr.To == r.To {
			return p.String()
		}
	}
	return r.From.String() + "-" + r.To.String()
}

func portString(r PortRange) string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}
