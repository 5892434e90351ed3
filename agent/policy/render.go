package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Render prints rs as the nft script of table inet podnet-policy (the
// layout in the package comment), deterministically: a header naming the
// node and any problems; the four maps; the forward chain; the eight
// shared sets with their elements; then per pod, a comment naming it, its
// selecting policies and its resolved rules, and its chains. `podnet policy dump` prints
// it; the golden files hold it.
func Render(rs Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# node %s: %d isolated pods\n", rs.Node, len(rs.Pods))
	for _, p := range rs.Problems {
		fmt.Fprintf(&b, "# problem: %s\n", strings.ReplaceAll(p, "\n", " "))
	}
	b.WriteString("table inet podnet-policy {\n")
	for _, m := range []struct {
		name, typ, prefix string
		v4, ingress       bool
	}{
		{"ing4", "ipv4_addr", "in", true, true},
		{"ing6", "ipv6_addr", "in", false, true},
		{"egr4", "ipv4_addr", "eg", true, false},
		{"egr6", "ipv6_addr", "eg", false, false},
	} {
		type elem struct {
			a  netip.Addr
			id string
		}
		var elems []elem
		for _, p := range rs.Pods {
			if (m.ingress && p.Ingress == nil) || (!m.ingress && p.Egress == nil) {
				continue
			}
			for _, a := range p.IPs {
				if a.Is4() == m.v4 {
					elems = append(elems, elem{a, p.ID})
				}
			}
		}
		slices.SortFunc(elems, func(x, y elem) int { return x.a.Compare(y.a) })
		lines := make([]string, len(elems))
		for i, e := range elems {
			lines[i] = fmt.Sprintf("%s : jump %s-%s", e.a, m.prefix, e.id)
		}
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", m.name, m.typ)
		writeElements(&b, lines)
		b.WriteString("\t}\n")
	}
	b.WriteString("\tchain forward {\n" +
		"\t\ttype filter hook forward priority filter; policy accept;\n" +
		"\t\tct state established,related accept\n" +
		"\t\tip daddr vmap @ing4\n" +
		"\t\tip6 daddr vmap @ing6\n" +
		"\t\tip saddr vmap @egr4\n" +
		"\t\tip6 saddr vmap @egr6\n" +
		"\t}\n")
	renderSets(&b, rs)
	for _, p := range rs.Pods {
		renderPod(&b, p)
	}
	b.WriteString("}\n")
	return b.String()
}

// renderSets prints the eight shared sets: each element is an isolated
// pod's own address, then what it allows (peer range, or peer range,
// protocol and port range), in address order.
func renderSets(b *strings.Builder, rs Ruleset) {
	type row struct {
		a     netip.Addr
		elems []string
	}
	for _, d := range []struct {
		prefix  string
		ingress bool
	}{{"in", true}, {"eg", false}} {
		for _, s := range []struct {
			suffix, typ string
			v4, ports   bool
		}{
			{"a4", "ipv4_addr . ipv4_addr", true, false},
			{"p4", "ipv4_addr . ipv4_addr . inet_proto . inet_service", true, true},
			{"a6", "ipv6_addr . ipv6_addr", false, false},
			{"p6", "ipv6_addr . ipv6_addr . inet_proto . inet_service", false, true},
		} {
			var rows []row
			for _, p := range rs.Pods {
				ch := p.Egress
				if d.ingress {
					ch = p.Ingress
				}
				if ch == nil {
					continue
				}
				var own []string
				switch {
				case s.v4 && !s.ports:
					own = rangeStrings(ch.Any4)
				case s.v4:
					own = boxStrings(ch.Ports4)
				case !s.ports:
					own = rangeStrings(ch.Any6)
				default:
					own = boxStrings(ch.Ports6)
				}
				for _, a := range p.IPs {
					if a.Is4() == s.v4 && len(own) > 0 {
						rows = append(rows, row{a, own})
					}
				}
			}
			slices.SortStableFunc(rows, func(x, y row) int { return x.a.Compare(y.a) })
			var elems []string
			for _, r := range rows {
				for _, e := range r.elems {
					elems = append(elems, r.a.String()+" . "+e)
				}
			}
			fmt.Fprintf(b, "\tset %s-%s {\n\t\ttype %s\n\t\tflags interval\n", d.prefix, s.suffix, s.typ)
			writeElements(b, elems)
			b.WriteString("\t}\n")
		}
	}
}

func renderPod(b *strings.Builder, p PodRules) {
	ips := make([]string, len(p.IPs))
	for i, a := range p.IPs {
		ips[i] = a.String()
	}
	fmt.Fprintf(b, "\n\t# pod %s/%s %s [%s]\n", p.Namespace, p.Name, p.ID, strings.Join(ips, " "))
	for _, d := range []struct {
		ch           *Chain
		name, prefix string
		key4, key6   string
	}{
		{p.Ingress, "ingress", "in", "ip daddr . ip saddr", "ip6 daddr . ip6 saddr"},
		{p.Egress, "egress", "eg", "ip saddr . ip daddr", "ip6 saddr . ip6 daddr"},
	} {
		if d.ch == nil {
			continue
		}
		fmt.Fprintf(b, "\t# %s isolated by %s\n", d.name, strings.Join(d.ch.Policies, ", "))
		if len(d.ch.Rules) == 0 {
			fmt.Fprintf(b, "\t#   (no rule allows anything)\n")
		}
		for _, a := range d.ch.Rules {
			fmt.Fprintf(b, "\t#   %s %s[%d]: %s\n", a.Policy, d.name, a.Rule, allowString(a))
		}
		fmt.Fprintf(b, "\tchain %s-%s {\n", d.prefix, p.ID)
		fmt.Fprintf(b, "\t\t%s @%s-a4 return\n", d.key4, d.prefix)
		fmt.Fprintf(b, "\t\t%s . meta l4proto . th dport @%s-p4 return\n", d.key4, d.prefix)
		fmt.Fprintf(b, "\t\t%s @%s-a6 return\n", d.key6, d.prefix)
		fmt.Fprintf(b, "\t\t%s . meta l4proto . th dport @%s-p6 return\n", d.key6, d.prefix)
		b.WriteString("\t\tcounter drop\n\t}\n")
	}
}

func writeElements(b *strings.Builder, elems []string) {
	if len(elems) == 0 {
		return
	}
	b.WriteString("\t\telements = {\n")
	for i, e := range elems {
		b.WriteString("\t\t\t")
		b.WriteString(e)
		if i < len(elems)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("\t\t}\n")
}

// maxCommentPeers bounds the peer ranges a rule's comment lists (the sets
// list them all).
const maxCommentPeers = 16

// allowString is a one-line description of an Allow: its peers and ports.
func allowString(a Allow) string {
	peers := "all addresses"
	if a.Peers != nil {
		rs := a.Peers
		if len(rs) > maxCommentPeers {
			rs = rs[:maxCommentPeers]
		}
		peers = strings.Join(rangeStrings(rs), ", ")
		if n := len(a.Peers) - len(rs); n > 0 {
			peers += fmt.Sprintf(" and %d more", n)
		}
	}
	ports := "all ports"
	if a.Ports != nil {
		ps := make([]string, len(a.Ports))
		for i, p := range a.Ports {
			ps[i] = p.Proto.String() + " " + portString(p.Ports)
		}
		ports = strings.Join(ps, ", ")
	}
	return "peers " + peers + "; " + ports
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

// String is the box as an nft set element: addresses . protocol . ports.
func (b PortBox) String() string {
	return b.Addrs.String() + " . " + b.Proto.String() + " . " + portString(b.Ports)
}

func rangeStrings(rs []AddrRange) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func boxStrings(bs []PortBox) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.String()
	}
	return out
}
