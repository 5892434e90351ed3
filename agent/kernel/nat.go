package kernel

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/overlay"
)

// natConn opens an nftables connection in the node's namespace.
func (n *Node) natConn() (*nftables.Conn, error) {
	if n.ns >= 0 {
		return nftables.New(nftables.WithNetNSFd(int(n.ns)))
	}
	return nftables.New()
}

var natTable = &nftables.Table{Family: nftables.TableFamilyINet, Name: overlay.NATTable}

type natSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

func natSets(nat overlay.NAT) []natSet {
	id := uint32(0)
	mk := func(name string, v6, interval bool) *nftables.Set {
		kt := nftables.TypeIPAddr
		if v6 {
			kt = nftables.TypeIP6Addr
		}
		// Our own batch-local IDs: with ID 0, AddSet bumps a package
		// global without a lock, a data race between agents in one
		// process.
		id++
		return &nftables.Set{Table: natTable, Name: name, KeyType: kt, Interval: interval, ID: id}
	}
	return []natSet{
		{mk(overlay.SetCl4, false, true), intervalElems(nat.Cluster4)},
		{mk(overlay.SetCl6, true, true), intervalElems(nat.Cluster6)},
		{mk(overlay.SetNode4, false, false), addrElems(nat.Nodes4)},
		{mk(overlay.SetNode6, true, false), addrElems(nat.Nodes6)},
	}
}

func addrElems(l []netip.Addr) []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range l {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

// intervalElems encodes prefixes as [start, end) pairs, the way nft does.
func intervalElems(l []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range l {
		start := p.Masked().Addr()
		out = append(out, nftables.SetElement{Key: start.AsSlice()})
		end := lastAddr(p).Next()
		if end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func elemKeys(l []nftables.SetElement) []string {
	var out []string
	for _, e := range l {
		out = append(out, fmt.Sprintf("%x/%t", e.Key, e.IntervalEnd))
	}
	slices.Sort(out)
	return out
}

// natRules returns the chain's rules, each tagged with its nft text (the
// same text overlay.NATRules renders).
func natRules(chain *nftables.Chain) []*nftables.Rule {
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
		}
	}
	lookup := func(off, ln uint32, set string) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: ln},
			&expr.Lookup{SourceRegister: 1, SetName: set},
		}
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	masq := &expr.Masq{}
	cat := func(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }
	v4, v6 := nfproto(unix.NFPROTO_IPV4), nfproto(unix.NFPROTO_IPV6)
	exprs := [][]expr.Any{
		cat(v4, lookup(12, 4, overlay.SetCl4), lookup(16, 4, overlay.SetCl4), []expr.Any{ret}),
		cat(v4, lookup(12, 4, overlay.SetCl4), lookup(16, 4, overlay.SetNode4), []expr.Any{ret}),
		cat(v4, lookup(12, 4, overlay.SetCl4), []expr.Any{masq}),
		cat(v6, lookup(8, 16, overlay.SetCl6), lookup(24, 16, overlay.SetCl6), []expr.Any{ret}),
		cat(v6, lookup(8, 16, overlay.SetCl6), lookup(24, 16, overlay.SetNode6), []expr.Any{ret}),
		cat(v6, lookup(8, 16, overlay.SetCl6), []expr.Any{masq}),
	}
	var out []*nftables.Rule
	for i, e := range exprs {
		out = append(out, &nftables.Rule{Table: natTable, Chain: chain, Exprs: e,
			UserData: userdata.AppendString(nil, userdata.TypeComment, overlay.NATRules[i])})
	}
	return out
}

func ruleTag(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return strings.TrimRight(s, "\x00")
}

// ApplyNAT makes the podnet-nat table match nat in one atomic batch: new
// rules are added before the old ones are deleted, and set contents are
// replaced (flush + add) inside the same transaction, so no packet ever
// sees a half-built table. It reports whether anything changed.
func (n *Node) ApplyNAT(nat overlay.NAT) (changed bool, err error) {
	c, err := n.natConn()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	sets := natSets(nat)
	chain := &nftables.Chain{Name: overlay.NATChain, Table: natTable, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	want := natRules(chain)

	// Read back what is there.
	var haveRules []*nftables.Rule
	setsOK := make([]bool, len(sets))
	tableThere := false
	if t, err := c.ListTableOfFamily(overlay.NATTable, nftables.TableFamilyINet); err == nil && t != nil {
		tableThere = true
		for i, s := range sets {
			cur, err := c.GetSetByName(natTable, s.set.Name)
			if err != nil || cur.Interval != s.set.Interval || cur.KeyType.Name != s.set.KeyType.Name {
				continue
			}
			el, err := c.GetSetElements(cur)
			setsOK[i] = err == nil && slices.Equal(elemKeys(el), elemKeys(s.elems))
		}
		if ch, err := c.ListChain(natTable, overlay.NATChain); err == nil && ch != nil {
			haveRules, _ = c.GetRules(natTable, chain)
		}
	}
	rulesOK := len(haveRules) == len(want)
	for i := 0; rulesOK && i < len(want); i++ {
		rulesOK = ruleTag(haveRules[i]) == overlay.NATRules[i] && sameExprs(haveRules[i], want[i])
	}
	if tableThere && rulesOK && !slices.Contains(setsOK, false) {
		return false, nil
	}

	c.AddTable(natTable)
	for i, s := range sets {
		if setsOK[i] {
			continue
		}
		if err := c.AddSet(s.set, nil); err != nil {
			return false, fmt.Errorf("nftables: set %s: %w", s.set.Name, err)
		}
		c.FlushSet(s.set)
		if len(s.elems) > 0 {
			if err := c.SetAddElements(s.set, s.elems); err != nil {
				return false, fmt.Errorf("nftables: set %s elements: %w", s.set.Name, err)
			}
		}
	}
	c.AddChain(chain)
	if !rulesOK {
		for _, r := range want {
			c.AddRule(r)
		}
		for _, r := range haveRules {
			c.DelRule(r)
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("nftables: apply table %s: %w", overlay.NATTable, err)
	}
	return true, nil
}

// sameExprs compares the kernel's read-back of a rule with ours by their
// verdict-relevant parts: the rule tag already names the text, this catches
// a rule edited behind our back with the same comment.
func sameExprs(have, want *nftables.Rule) bool {
	if len(have.Exprs) != len(want.Exprs) {
		return false
	}
	for i := range want.Exprs {
		switch w := want.Exprs[i].(type) {
		case *expr.Lookup:
			h, ok := have.Exprs[i].(*expr.Lookup)
			if !ok || h.SetName != w.SetName || h.Invert != w.Invert {
				return false
			}
		case *expr.Payload:
			h, ok := have.Exprs[i].(*expr.Payload)
			if !ok || h.Offset != w.Offset || h.Len != w.Len {
				return false
			}
		case *expr.Cmp:
			h, ok := have.Exprs[i].(*expr.Cmp)
			if !ok || !bytes.Equal(h.Data, w.Data) {
				return false
			}
		}
	}
	return true
}

// DeleteNAT removes the podnet-nat table (for tests and an explicit
// uninstall; the agent never calls it on exit).
func (n *Node) DeleteNAT() error {
	c, err := n.natConn()
	if err != nil {
		return err
	}
	c.DelTable(natTable)
	return c.Flush()
}
