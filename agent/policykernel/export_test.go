package policykernel

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
)

// WriteOldLayout programs rs in the namespace nsFd the way the writer did
// before the shared sets: four sets per pod chain (D-<ID>-a4, -p4, -a6,
// -p6) keyed by the peer only, each chain looking up its own. It is the
// table an agent of the previous version leaves behind.
func WriteOldLayout(nsFd int, rs policy.Ruleset) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	c.AddTable(table)
	id := uint32(1)
	addSet := func(s *nftables.Set, els []nftables.SetElement) error {
		s.ID = id
		id++
		return c.AddSet(s, els)
	}
	for i := range numMaps {
		if err := addSet(verdictMap(i), nil); err != nil {
			return err
		}
	}
	base := c.AddChain(baseChainDef())
	for _, r := range baseRules() {
		c.AddRule(&nftables.Rule{Table: table, Chain: base, Exprs: r})
	}
	oldPorts4 := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	oldPorts6 := nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	anyEls := func(rs []policy.AddrRange) []nftables.SetElement {
		var out []nftables.SetElement
		for _, r := range rs {
			out = append(out, nftables.SetElement{Key: r.From.AsSlice()})
			if end := r.To.Next(); end.IsValid() {
				out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
			}
		}
		return out
	}
	portEls := func(bs []policy.PortBox) []nftables.SetElement {
		var out []nftables.SetElement
		for _, b := range bs {
			key := func(a []byte, port uint16) []byte {
				return append(a, byte(b.Proto), 0, 0, 0, byte(port>>8), byte(port), 0, 0)
			}
			out = append(out, nftables.SetElement{Key: key(b.Addrs.From.AsSlice(), b.Ports.From), KeyEnd: key(b.Addrs.To.AsSlice(), b.Ports.To)})
		}
		return out
	}
	for _, p := range rs.Pods {
		for _, d := range []struct {
			in bool
			c  *policy.Chain
		}{{true, p.Ingress}, {false, p.Egress}} {
			if d.c == nil {
				continue
			}
			name := chainName(d.in, p.ID)
			sets := []*nftables.Set{
				{Table: table, Name: name + "-a4", Interval: true, KeyType: nftables.TypeIPAddr},
				{Table: table, Name: name + "-p4", Interval: true, Concatenation: true, KeyType: oldPorts4},
				{Table: table, Name: name + "-a6", Interval: true, KeyType: nftables.TypeIP6Addr},
				{Table: table, Name: name + "-p6", Interval: true, Concatenation: true, KeyType: oldPorts6},
			}
			els := [][]nftables.SetElement{anyEls(d.c.Any4), portEls(d.c.Ports4), anyEls(d.c.Any6), portEls(d.c.Ports6)}
			for i, s := range sets {
				if err := addSet(s, els[i]); err != nil {
					return err
				}
			}
			ch := c.AddChain(podChainDef(name))
			off4, off6 := uint32(saddr4), uint32(saddr6)
			if !d.in {
				off4, off6 = daddr4, daddr6
			}
			ret := &expr.Verdict{Kind: expr.VerdictReturn}
			lookup := func(i int) *expr.Lookup {
				return &expr.Lookup{SourceRegister: 1, SetName: sets[i].Name, SetID: sets[i].ID}
			}
			ports := func(p byte, off, ln uint32, i int) []expr.Any {
				r := 8 + ln/4
				return append(nfproto(p), addrLoad(off, ln),
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(r)},
					&expr.Payload{DestRegister: reg(r + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					lookup(i), ret)
			}
			for _, r := range [][]expr.Any{
				append(nfproto(unix.NFPROTO_IPV4), addrLoad(off4, 4), lookup(0), ret),
				ports(unix.NFPROTO_IPV4, off4, 4, 1),
				append(nfproto(unix.NFPROTO_IPV6), addrLoad(off6, 16), lookup(2), ret),
				ports(unix.NFPROTO_IPV6, off6, 16, 3),
				{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
			} {
				c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: r})
			}
			for _, a := range p.IPs {
				a = a.Unmap()
				m := verdictMap(mapIndex(d.in, a))
				if err := c.SetAddElements(m, []nftables.SetElement{{Key: a.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: name}}}); err != nil {
					return err
				}
			}
		}
	}
	return c.Flush()
}
