package policykernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/agent/policy"
)

// TableName is the table this package owns (inet family).
const TableName = "podnet-policy"

// baseChain is the name of the forward base chain.
const baseChain = "forward"

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// The four verdict maps, indexed by mapIdx.
const (
	mapIng4 = iota
	mapIng6
	mapEgr4
	mapEgr6
	numMaps
)

var mapNames = [numMaps]string{"ing4", "ing6", "egr4", "egr6"}

// mapIndex returns the map a pod address of direction ingress (in) or
// egress keys.
func mapIndex(in bool, a netip.Addr) int {
	i := mapIng4
	if !in {
		i = mapEgr4
	}
	if !a.Is4() {
		i++
	}
	return i
}

// The eight shared sets, indexed by setIdx: a direction (in: 0-3, eg:
// 4-7) times a kind. Their keys start with the isolated pod's own
// address, then the peer range (and protocol and port range).
const (
	kindA4 = iota
	kindP4
	kindA6
	kindP6
	numKinds
	numSets = 2 * numKinds
)

var setNames = [numSets]string{"in-a4", "in-p4", "in-a6", "in-p6", "eg-a4", "eg-p4", "eg-a6", "eg-p6"}

// setIndex returns the shared set of direction ingress (in) or egress and
// kind k.
func setIndex(in bool, k int) int {
	if in {
		return k
	}
	return numKinds + k
}

// setIn reports whether shared set idx is of the ingress direction.
func setIn(idx int) bool { return idx < numKinds }

// kindV4 reports whether kind k keys IPv4 addresses; kindPorts whether
// its keys have a protocol and a port range.
func kindV4(k int) bool    { return k == kindA4 || k == kindP4 }
func kindPorts(k int) bool { return k == kindP4 || k == kindP6 }

func chainName(in bool, id string) string {
	if in {
		return "in-" + id
	}
	return "eg-" + id
}

// isPodChain reports whether name has the shape of a pod chain name.
func isPodChain(name string) bool {
	return strings.HasPrefix(name, "in-") || strings.HasPrefix(name, "eg-")
}

// chainIn reports whether pod chain name is an ingress chain.
func chainIn(name string) bool { return strings.HasPrefix(name, "in-") }

func setIdx(name string) int {
	for i, n := range setNames {
		if n == name {
			return i
		}
	}
	return -1
}

var setTypes = [numKinds]nftables.SetDatatype{
	kindA4: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr),
	kindP4: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
	kindA6: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr),
	kindP6: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService),
}

// sharedSet is the definition of shared set idx (without ID: the batch
// assigns one).
func sharedSet(idx int) *nftables.Set {
	return &nftables.Set{Table: table, Name: setNames[idx], Interval: true, Concatenation: true, KeyType: setTypes[idx%numKinds]}
}

func verdictMap(i int) *nftables.Set {
	kt := nftables.TypeIPAddr
	if i == mapIng6 || i == mapEgr6 {
		kt = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: table, Name: mapNames[i], IsMap: true, KeyType: kt, DataType: nftables.TypeVerdict}
}

// setTypeOK reports whether a set read from the kernel has the type and
// flags sharedSet (or verdictMap) gives it.
func setTypeOK(have, want *nftables.Set) bool {
	if have.IsMap != want.IsMap || have.Interval != want.Interval || have.Concatenation != want.Concatenation {
		return false
	}
	if want.IsMap {
		// google/nftables overwrites KeyType with the verdict data
		// type when it reads a vmap; flags are what we can check.
		return true
	}
	return have.KeyType.Bytes == want.KeyType.Bytes && have.KeyType.Name == want.KeyType.Name
}

func baseChainDef() *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: baseChain, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
}

func podChainDef(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: table}
}

// Network header offsets of the addresses.
const (
	saddr4, daddr4, saddr6, daddr6 = 12, 16, 8, 24
)

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func addrLoad(off, ln uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: ln}
}

// baseRules are the rules of the forward chain, in order.
func baseRules() [][]expr.Any {
	est := binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	vmap := func(p byte, off, ln uint32, m int) []expr.Any {
		return append(nfproto(p), addrLoad(off, ln),
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: mapNames[m]})
	}
	return [][]expr.Any{
		{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: est, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		vmap(unix.NFPROTO_IPV4, daddr4, 4, mapIng4),
		vmap(unix.NFPROTO_IPV6, daddr6, 16, mapIng6),
		vmap(unix.NFPROTO_IPV4, saddr4, 4, mapEgr4),
		vmap(unix.NFPROTO_IPV6, saddr6, 16, mapEgr6),
	}
}

// NFLOG rate limit of one pod chain: nft's `limit rate 10/second` (burst 5).
const logRate, logBurst = 10, 5

// podRules are the rules of pod chain name, the same for every pod: the
// key is the pod's own address (the destination for ingress, in-, the
// source for egress, eg-) then the peer's, looked up in the shared sets
// of the chain's direction. ids are the batch IDs of those four sets when
// they are created in the same batch (0 otherwise). With logGroup >= 0 a
// rule `limit rate 10/second log prefix "<name>" group <logGroup>` comes
// before the counter drop.
func podRules(name string, ids [numKinds]uint32, logGroup int) [][]expr.Any {
	in := chainIn(name)
	own4, peer4, own6, peer6 := uint32(daddr4), uint32(saddr4), uint32(daddr6), uint32(saddr6)
	if !in {
		own4, peer4, own6, peer6 = peer4, own4, peer6, own6
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	// Concatenations use 32-bit registers: the pod's address from
	// register 1 (NFT_REG32_00) on, then the peer's, then protocol and
	// port in the next free ones.
	lookup := func(p byte, own, peer, ln uint32, k int) []expr.Any {
		r := 8 + ln/4 // NFT_REG32_00 + words of the first address
		l := append(nfproto(p), addrLoad(own, ln),
			&expr.Payload{DestRegister: reg(r), Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: ln})
		if kindPorts(k) {
			r += ln / 4
			l = append(l, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(r)},
				&expr.Payload{DestRegister: reg(r + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		}
		return append(l, &expr.Lookup{SourceRegister: 1, SetName: setNames[setIndex(in, k)], SetID: ids[k]}, ret)
	}
	rules := [][]expr.Any{
		lookup(unix.NFPROTO_IPV4, own4, peer4, 4, kindA4),
		lookup(unix.NFPROTO_IPV4, own4, peer4, 4, kindP4),
		lookup(unix.NFPROTO_IPV6, own6, peer6, 16, kindA6),
		lookup(unix.NFPROTO_IPV6, own6, peer6, 16, kindP6),
	}
	if logGroup >= 0 {
		rules = append(rules, []expr.Any{
			&expr.Limit{Type: expr.LimitTypePkts, Rate: logRate, Unit: expr.LimitTimeSecond, Burst: logBurst},
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: uint16(logGroup), Data: []byte(name)},
		})
	}
	return append(rules, []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}})
}

// reg names 32-bit register r (NFT_REG32_xx) the way the kernel lists it
// back: by its 16-byte register (NFT_REG_n) when it starts one.
func reg(r uint32) uint32 {
	if (r-8)%4 == 0 {
		return (r-8)/4 + 1
	}
	return r
}

// exprSig renders the verdict-relevant parts of an expression, so rules
// read back from the kernel compare with the ones podRules builds
// (counter values, set IDs and handles differ).
func exprSig(e expr.Any) string {
	switch x := e.(type) {
	case *expr.Meta:
		return fmt.Sprintf("meta %d r%d", x.Key, x.Register)
	case *expr.Cmp:
		return fmt.Sprintf("cmp %d r%d %x", x.Op, x.Register, x.Data)
	case *expr.Payload:
		return fmt.Sprintf("payload %d %d %d r%d", x.Base, x.Offset, x.Len, x.DestRegister)
	case *expr.Lookup:
		return fmt.Sprintf("lookup r%d %s %t r%d %t", x.SourceRegister, x.SetName, x.IsDestRegSet, x.DestRegister, x.Invert)
	case *expr.Verdict:
		return fmt.Sprintf("verdict %d %s", x.Kind, x.Chain)
	case *expr.Counter:
		return "counter"
	case *expr.Ct:
		return fmt.Sprintf("ct %d r%d", x.Key, x.Register)
	case *expr.Limit:
		return fmt.Sprintf("limit %d %d %t %d %d", x.Type, x.Rate, x.Over, x.Unit, x.Burst)
	case *expr.Log:
		return fmt.Sprintf("log %d %s", x.Group, bytes.TrimRight(x.Data, "\x00"))
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise r%d r%d %d %x %x", x.SourceRegister, x.DestRegister, x.Len, x.Mask, x.Xor)
	}
	return fmt.Sprintf("%T", e)
}

func rulesMatch(have []*nftables.Rule, want [][]expr.Any) bool {
	if len(have) != len(want) {
		return false
	}
	for i, w := range want {
		if len(have[i].Exprs) != len(w) {
			return false
		}
		for j := range w {
			if exprSig(have[i].Exprs[j]) != exprSig(w[j]) {
				return false
			}
		}
	}
	return true
}

// elem is one element of a shared set: the isolated pod's own address,
// a peer address range, and for the ports sets a protocol and port range
// (zero in the address sets).
type elem struct {
	Pod   netip.Addr
	Addrs policy.AddrRange
	Proto policy.Proto
	Ports policy.PortRange
}

// encode returns the kernel element of e in a set of kind k: a key and a
// key end (every shared set is a concatenation with intervals, the pod
// field a range of one address), fields padded to 32 bits.
func (e elem) encode(k int) nftables.SetElement {
	key := func(peer netip.Addr, port uint16) []byte {
		b := append(e.Pod.AsSlice(), peer.AsSlice()...)
		if kindPorts(k) {
			b = append(b, byte(e.Proto), 0, 0, 0, byte(port>>8), byte(port), 0, 0)
		}
		return b
	}
	return nftables.SetElement{Key: key(e.Addrs.From, e.Ports.From), KeyEnd: key(e.Addrs.To, e.Ports.To)}
}

// decodeElem turns an element of a set of kind k as the kernel lists it
// back into an elem; a missing key end is the key.
func decodeElem(k int, el nftables.SetElement) (elem, error) {
	alen := 16
	if kindV4(k) {
		alen = 4
	}
	n := 2 * alen
	if kindPorts(k) {
		n += 8
	}
	end := el.KeyEnd
	if len(end) == 0 {
		end = el.Key
	}
	if len(el.Key) != n || len(end) != n {
		return elem{}, fmt.Errorf("element of %d bytes in a set of %d-byte keys", len(el.Key), n)
	}
	if !bytes.Equal(el.Key[:alen], end[:alen]) {
		return elem{}, fmt.Errorf("element %x-%x: a range of pod addresses", el.Key, end)
	}
	pod, _ := netip.AddrFromSlice(el.Key[:alen])
	from, _ := netip.AddrFromSlice(el.Key[alen : 2*alen])
	to, _ := netip.AddrFromSlice(end[alen : 2*alen])
	e := elem{Pod: pod, Addrs: policy.AddrRange{From: from, To: to}}
	if kindPorts(k) {
		p, q := el.Key[2*alen:], end[2*alen:]
		if p[0] != q[0] {
			return elem{}, fmt.Errorf("element %x-%x: a range of protocols", el.Key, end)
		}
		e.Proto = policy.Proto(p[0])
		e.Ports = policy.PortRange{From: uint16(p[4])<<8 | uint16(p[5]), To: uint16(q[4])<<8 | uint16(q[5])}
	}
	return e, nil
}

// verdictChain returns the chain a vmap element jumps to ("" for any
// other verdict). The element data is the nested NFTA_DATA_VERDICT.
func verdictChain(val []byte) (string, error) {
	ad, err := netlink.NewAttributeDecoder(val)
	if err != nil {
		return "", err
	}
	ad.ByteOrder = binary.BigEndian
	var code uint32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = ad.Uint32()
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return "", err
	}
	if int32(code) != int32(expr.VerdictJump) {
		return "", nil
	}
	return chain, nil
}
