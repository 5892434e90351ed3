package policykernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
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

// The four sets of a pod chain, indexed by setIdx.
const (
	setA4 = iota
	setP4
	setA6
	setP6
	numSets
)

var setSuffix = [numSets]string{"-a4", "-p4", "-a6", "-p6"}

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

// podSetOwner returns the chain a set name belongs to and the set index,
// or ok false for a name no pod chain owns.
func podSetOwner(name string) (chain string, idx int, ok bool) {
	for i, s := range setSuffix {
		if c, found := strings.CutSuffix(name, s); found && isPodChain(c) {
			return c, i, true
		}
	}
	return "", 0, false
}

var (
	portsType4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	portsType6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
)

// podSet is the definition of set idx of chain (without ID: the batch
// assigns one).
func podSet(chain string, idx int) *nftables.Set {
	s := &nftables.Set{Table: table, Name: chain + setSuffix[idx], Interval: true}
	switch idx {
	case setA4:
		s.KeyType = nftables.TypeIPAddr
	case setA6:
		s.KeyType = nftables.TypeIP6Addr
	case setP4:
		s.KeyType, s.Concatenation = portsType4, true
	case setP6:
		s.KeyType, s.Concatenation = portsType6, true
	}
	return s
}

func verdictMap(i int) *nftables.Set {
	kt := nftables.TypeIPAddr
	if i == mapIng6 || i == mapEgr6 {
		kt = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: table, Name: mapNames[i], IsMap: true, KeyType: kt, DataType: nftables.TypeVerdict}
}

// setTypeOK reports whether a set read from the kernel has the type and
// flags podSet (or verdictMap) gives it.
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

// podRules are the rules of pod chain name: the peer address is the
// source for ingress (in-) and the destination for egress (eg-). ids are
// the batch IDs of the chain's sets when they are created in the same
// batch (0 otherwise). With logGroup >= 0 a rule
// `limit rate 10/second log prefix "<name>" group <logGroup>` comes
// before the counter drop.
func podRules(name string, ids [numSets]uint32, logGroup int) [][]expr.Any {
	off4, off6 := uint32(saddr4), uint32(saddr6)
	if strings.HasPrefix(name, "eg-") {
		off4, off6 = daddr4, daddr6
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	lookup := func(i int) *expr.Lookup {
		return &expr.Lookup{SourceRegister: 1, SetName: name + setSuffix[i], SetID: ids[i]}
	}
	// Concatenations use 32-bit registers: the address from register 1
	// (NFT_REG32_00) on, then protocol and port in the next free ones.
	ports := func(p byte, off, ln uint32, i int) []expr.Any {
		r := 8 + ln/4 // NFT_REG32_00 + words of the address
		return append(nfproto(p), addrLoad(off, ln),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(r)},
			&expr.Payload{DestRegister: reg(r + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			lookup(i), ret)
	}
	rules := [][]expr.Any{
		append(nfproto(unix.NFPROTO_IPV4), addrLoad(off4, 4), lookup(setA4), ret),
		ports(unix.NFPROTO_IPV4, off4, 4, setP4),
		append(nfproto(unix.NFPROTO_IPV6), addrLoad(off6, 16), lookup(setA6), ret),
		ports(unix.NFPROTO_IPV6, off6, 16, setP6),
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

// elem is one element of a pod set: an address range, and for the ports
// sets a protocol and port range (zero in the address sets).
type elem struct {
	Addrs policy.AddrRange
	Proto policy.Proto
	Ports policy.PortRange
}

// encode returns the kernel elements of e in set idx: an address range
// is a start and an interval end one past its last address (none when it
// ends at the family's last address), a box one element with a key end.
func (e elem) encode(idx int) []nftables.SetElement {
	if idx == setA4 || idx == setA6 {
		out := []nftables.SetElement{{Key: e.Addrs.From.AsSlice()}}
		if end := e.Addrs.To.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
		return out
	}
	key := func(a netip.Addr, port uint16) []byte {
		b := a.AsSlice()
		b = append(b, byte(e.Proto), 0, 0, 0)
		return append(b, byte(port>>8), byte(port), 0, 0)
	}
	return []nftables.SetElement{{Key: key(e.Addrs.From, e.Ports.From), KeyEnd: key(e.Addrs.To, e.Ports.To)}}
}

// decodeElems turns the elements of set idx as the kernel lists them back
// into elems; a range whose end is missing runs to the last address.
func decodeElems(idx int, els []nftables.SetElement) (map[elem]struct{}, error) {
	out := make(map[elem]struct{}, len(els))
	alen := 4
	if idx == setA6 || idx == setP6 {
		alen = 16
	}
	if idx == setP4 || idx == setP6 {
		for _, el := range els {
			end := el.KeyEnd
			if len(end) == 0 {
				end = el.Key
			}
			if len(el.Key) != alen+8 || len(end) != alen+8 {
				return nil, fmt.Errorf("element of %d bytes in a %d-byte ports set", len(el.Key), alen+8)
			}
			from, _ := netip.AddrFromSlice(el.Key[:alen])
			to, _ := netip.AddrFromSlice(end[:alen])
			out[elem{
				Addrs: policy.AddrRange{From: from, To: to},
				Proto: policy.Proto(el.Key[alen]),
				Ports: policy.PortRange{From: uint16(el.Key[alen+4])<<8 | uint16(el.Key[alen+5]), To: uint16(end[alen+4])<<8 | uint16(end[alen+5])},
			}] = struct{}{}
		}
		return out, nil
	}
	sorted := make([]nftables.SetElement, len(els))
	copy(sorted, els)
	// Ascending keys; at equal keys an interval end closes the previous
	// range before a start opens the next.
	sortElems(sorted)
	var open *netip.Addr
	for _, el := range sorted {
		a, ok := netip.AddrFromSlice(el.Key)
		if !ok || len(el.Key) != alen {
			return nil, fmt.Errorf("element of %d bytes in a %d-byte address set", len(el.Key), alen)
		}
		if el.IntervalEnd {
			if open != nil {
				out[elem{Addrs: policy.AddrRange{From: *open, To: a.Prev()}}] = struct{}{}
				open = nil
			}
			continue
		}
		if open != nil {
			return nil, fmt.Errorf("address set: range from %s has no end before %s", *open, a)
		}
		open = &a
	}
	if open != nil {
		last := netip.AddrFrom16(lastBytes(16))
		if alen == 4 {
			last = netip.AddrFrom4([4]byte{255, 255, 255, 255})
		}
		out[elem{Addrs: policy.AddrRange{From: *open, To: last}}] = struct{}{}
	}
	return out, nil
}

func lastBytes(n int) [16]byte {
	var b [16]byte
	for i := range n {
		b[i] = 0xff
	}
	return b
}

func sortElems(els []nftables.SetElement) {
	less := func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		switch {
		case a.IntervalEnd == b.IntervalEnd:
			return 0
		case a.IntervalEnd:
			return -1
		}
		return 1
	}
	slices.SortFunc(els, less)
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
