package policykernel

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
)

// OldPod is one isolated pod of the previous layout: per pod and
// direction a chain (in-<ID>, eg-<ID>) looking up eight sets shared by
// every pod, keyed by the pod's own address then the peer's.
type OldPod struct {
	ID              string
	IPs             []netip.Addr
	Ingress, Egress *OldChain
}

// OldChain is what the previous layout held for one pod and direction:
// peer ranges allowed on every port, and (peer range, protocol, port
// range) boxes.
type OldChain struct {
	Any4, Any6     []policy.AddrRange
	Ports4, Ports6 []OldBox
}

// OldBox is one element of an old ports set.
type OldBox struct {
	Peers    policy.AddrRange
	Proto    policy.Proto
	From, To uint16
}

// WriteOldLayout programs pods in the namespace nsFd the way the previous
// writer did: the forward chain and maps as now, the maps jumping to
// per-pod chains, whose rules look the pod's own address and the peer
// (and protocol and port) up in the eight shared interval sets in-a4,
// in-p4, in-a6, in-p6, eg-a4 ... It is the table an agent of the
// previous version leaves behind.
func WriteOldLayout(nsFd int, pods []OldPod) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		return setBuffers(nc, 64<<20, 64<<20)
	}))
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
	// Kinds: a4, p4, a6, p6.
	types := []nftables.SetDatatype{
		nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr),
		nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr),
		nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService),
	}
	kinds := []string{"a4", "p4", "a6", "p6"}
	sets := map[string]*nftables.Set{}
	els := map[string][]nftables.SetElement{}
	for _, d := range []string{"in-", "eg-"} {
		for k, kn := range kinds {
			sets[d+kn] = &nftables.Set{Table: table, Name: d + kn, Interval: true, Concatenation: true, KeyType: types[k]}
		}
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	for _, p := range pods {
		for _, d := range []struct {
			prefix string
			c      *OldChain
		}{{"in-", p.Ingress}, {"eg-", p.Egress}} {
			if d.c == nil {
				continue
			}
			for _, a := range p.IPs {
				a = a.Unmap()
				anys, boxes, kA, kP := d.c.Any4, d.c.Ports4, "a4", "p4"
				if a.Is6() {
					anys, boxes, kA, kP = d.c.Any6, d.c.Ports6, "a6", "p6"
				}
				for _, r := range anys {
					els[d.prefix+kA] = append(els[d.prefix+kA], nftables.SetElement{
						Key: append(a.AsSlice(), r.From.AsSlice()...), KeyEnd: append(a.AsSlice(), r.To.AsSlice()...)})
				}
				for _, b := range boxes {
					key := func(peer netip.Addr, port uint16) []byte {
						return append(append(a.AsSlice(), peer.AsSlice()...), byte(b.Proto), 0, 0, 0, byte(port>>8), byte(port), 0, 0)
					}
					els[d.prefix+kP] = append(els[d.prefix+kP], nftables.SetElement{Key: key(b.Peers.From, b.From), KeyEnd: key(b.Peers.To, b.To)})
				}
			}
		}
	}
	for n, s := range sets {
		if err := addSet(s, els[n]); err != nil {
			return err
		}
	}
	for _, p := range pods {
		for _, d := range []struct {
			in bool
			c  *OldChain
		}{{true, p.Ingress}, {false, p.Egress}} {
			if d.c == nil {
				continue
			}
			prefix := "in-"
			own4, peer4, own6, peer6 := uint32(daddr4), uint32(saddr4), uint32(daddr6), uint32(saddr6)
			if !d.in {
				prefix = "eg-"
				own4, peer4, own6, peer6 = peer4, own4, peer6, own6
			}
			name := prefix + p.ID
			ch := c.AddChain(chainDef(name))
			lookup := func(p byte, own, peer, ln uint32, k int) []expr.Any {
				r := 8 + ln/4 // NFT_REG32_00 + words of the first address
				l := append(nfproto(p), addrLoad(own, ln),
					&expr.Payload{DestRegister: oldReg(r), Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: ln})
				if k%2 == 1 {
					r += ln / 4
					l = append(l, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: oldReg(r)},
						&expr.Payload{DestRegister: oldReg(r + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
				}
				s := sets[prefix+kinds[k]]
				return append(l, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}, ret)
			}
			for _, r := range [][]expr.Any{
				lookup(unix.NFPROTO_IPV4, own4, peer4, 4, 0),
				lookup(unix.NFPROTO_IPV4, own4, peer4, 4, 1),
				lookup(unix.NFPROTO_IPV6, own6, peer6, 16, 2),
				lookup(unix.NFPROTO_IPV6, own6, peer6, 16, 3),
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

// oldReg names 32-bit register r (NFT_REG32_xx) the way the kernel lists
// it back: by its 16-byte register (NFT_REG_n) when it starts one.
func oldReg(r uint32) uint32 {
	if (r-8)%4 == 0 {
		return (r-8)/4 + 1
	}
	return r
}
