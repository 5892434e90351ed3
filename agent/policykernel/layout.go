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

func mapIdx(name string) int {
	for i, n := range mapNames {
		if n == name {
			return i
		}
	}
	return -1
}

// Profile chain name prefixes.
const (
	ingressPrefix = "ingress-"
	egressPrefix  = "egress-"
)

// isProfileChain reports whether name has the shape of a profile chain
// name.
func isProfileChain(name string) bool {
	return strings.HasPrefix(name, ingressPrefix) || strings.HasPrefix(name, egressPrefix)
}

// The kinds of sets, told by their name's prefix.
type setKind int

const (
	kindOther setKind = iota // not ours: goes when nothing uses it
	kindPods4
	kindPods6
	kindCIDR4
	kindCIDR6
	kindPorts
)

var kindPrefixes = []struct {
	prefix string
	kind   setKind
}{{"pods4-", kindPods4}, {"pods6-", kindPods6}, {"cidr4-", kindCIDR4}, {"cidr6-", kindCIDR6}, {"ports-", kindPorts}}

func kindOf(name string) setKind {
	for _, p := range kindPrefixes {
		if strings.HasPrefix(name, p.prefix) && len(name) > len(p.prefix) {
			return p.kind
		}
	}
	return kindOther
}

func (k setKind) v6() bool       { return k == kindPods6 || k == kindCIDR6 }
func (k setKind) interval() bool { return k == kindCIDR4 || k == kindCIDR6 }

// keyLen is the length of the keys of a set of kind k.
func (k setKind) keyLen() int {
	switch k {
	case kindPods4, kindCIDR4:
		return 4
	case kindPods6, kindCIDR6:
		return 16
	case kindPorts:
		return 8
	}
	return 0
}

var portsType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)

// setDef is the definition of set name of kind k (not kindOther; the
// batch assigns the ID).
func setDef(name string, k setKind) *nftables.Set {
	s := &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeIPAddr}
	if k.v6() {
		s.KeyType = nftables.TypeIP6Addr
	}
	s.Interval = k.interval()
	if k == kindPorts {
		s.KeyType, s.Concatenation = portsType, true
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
// flags setDef (or verdictMap) gives it.
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

func chainDef(name string) *nftables.Chain {
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

// NFLOG rate limit of one profile chain: nft's `limit rate 10/second`
// (burst 5).
const logRate, logBurst = 10, 5

// profileRules are the rules of profile p: one per policy.Rule, its
// match then its verdict: Allow `return`, Deny `counter drop` (with
// logGroup >= 0 preceded by a rule of the same match that logs, limited
// as below), Pass `goto <Next>` (without Next: what the chain's end does
// with no match: as Allow if Open, else as Deny). Then the
// chain's end: `goto <Next>`; nothing if Open (the packet returns);
// otherwise with logGroup >= 0 `limit rate 10/second log prefix "<name>"
// group <logGroup>`, then `counter drop`. ids gives the batch IDs of the
// sets created in the same batch (absent: 0). sets are the Ruleset's
// address sets by name (their family).
func profileRules(p *policy.Profile, sets map[string]*policy.AddrSet, ids map[string]uint32, logGroup int) [][]expr.Any {
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	var logged []expr.Any
	if logGroup >= 0 {
		logged = []expr.Any{
			&expr.Limit{Type: expr.LimitTypePkts, Rate: logRate, Unit: expr.LimitTimeSecond, Burst: logBurst},
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: uint16(logGroup), Data: []byte(p.Name)},
		}
	}
	pass := []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: p.Next}}
	rules := make([][]expr.Any, 0, len(p.Rules)+2)
	for _, r := range p.Rules {
		l := ruleMatch(p, r, sets, ids)
		act := r.Action
		if act == policy.Pass && p.Next == "" {
			// Skips to the end, which has no goto.
			act = policy.Deny
			if p.Open {
				act = policy.Allow
			}
		}
		switch act {
		case policy.Deny:
			if logged != nil {
				rules = append(rules, append(slices.Clip(l), logged...))
			}
			rules = append(rules, append(l, drop...))
		case policy.Pass:
			rules = append(rules, append(l, pass...))
		default:
			rules = append(rules, append(l, &expr.Verdict{Kind: expr.VerdictReturn}))
		}
	}
	switch {
	case p.Next != "":
		return append(rules, pass)
	case p.Open:
		return rules
	}
	if logged != nil {
		rules = append(rules, logged)
	}
	return append(rules, drop)
}

// ruleMatch are the expressions of r that match a packet, without a
// verdict.
func ruleMatch(p *policy.Profile, r policy.Rule, sets map[string]*policy.AddrSet, ids map[string]uint32) []expr.Any {
	var l []expr.Any
	if r.Peers != "" {
		v6 := sets[r.Peers] != nil && sets[r.Peers].V6
		off, ln, fam := uint32(saddr4), uint32(4), byte(unix.NFPROTO_IPV4)
		if v6 {
			off, ln, fam = saddr6, 16, unix.NFPROTO_IPV6
		}
		if p.Egress {
			off += ln // daddr follows saddr in both headers
		}
		l = append(l, nfproto(fam)...)
		l = append(l, addrLoad(off, ln), &expr.Lookup{SourceRegister: 1, SetName: r.Peers, SetID: ids[r.Peers]})
	}
	dport := func(reg uint32) *expr.Payload {
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	}
	switch {
	case r.Ports != "":
		// meta l4proto . th dport: 32-bit registers NFT_REG32_00
		// (listed back as NFT_REG_1) and NFT_REG32_01.
		l = append(l, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, dport(9),
			&expr.Lookup{SourceRegister: 1, SetName: r.Ports, SetID: ids[r.Ports]})
	case r.Proto != 0:
		l = append(l, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(r.Proto)}})
		be := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
		switch {
		case r.Range.From == 0 && r.Range.To == 65535:
		case r.Range.From == r.Range.To:
			l = append(l, dport(1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be(r.Range.From)})
		default:
			l = append(l, dport(1), &expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: be(r.Range.From)},
				&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: be(r.Range.To)})
		}
	}
	return l
}

// exprSig renders the verdict-relevant parts of an expression built here,
// as rawSig renders one listed by the kernel: the two agree for the
// expressions profileRules and baseRules use. Registers, counter values
// and set IDs are left out.
func exprSig(e expr.Any) string {
	switch x := e.(type) {
	case *expr.Meta:
		return fmt.Sprintf("meta %d", x.Key)
	case *expr.Cmp:
		return fmt.Sprintf("cmp %d %x", x.Op, x.Data)
	case *expr.Payload:
		return fmt.Sprintf("payload %d %d %d", x.Base, x.Offset, x.Len)
	case *expr.Lookup:
		return fmt.Sprintf("lookup %s %t", x.SetName, x.Invert)
	case *expr.Verdict:
		return fmt.Sprintf("verdict %d %s", int32(x.Kind), x.Chain)
	case *expr.Counter:
		return "counter"
	case *expr.Ct:
		return fmt.Sprintf("ct %d", x.Key)
	case *expr.Limit:
		return fmt.Sprintf("limit %d %d %d", x.Rate, x.Unit, x.Burst)
	case *expr.Log:
		return fmt.Sprintf("log %d %s", x.Group, bytes.TrimRight(x.Data, "\x00"))
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise %d %x %x", x.Len, x.Mask, x.Xor)
	}
	return fmt.Sprintf("%T", e)
}

// rulesSig is the signature of a chain's rules (see exprSig).
func rulesSig(rules [][]expr.Any) string {
	var sb strings.Builder
	for _, r := range rules {
		sb.WriteString("|")
		for _, e := range r {
			sb.WriteString(exprSig(e))
			sb.WriteString(";")
		}
	}
	return sb.String()
}

// rulesMatch compares rules listed by google/nftables with rules built.
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

// elemKey is one kernel element of a set: its key, and for interval sets
// whether it ends an interval.
type elemKey struct {
	key string
	end bool
}

func (e elemKey) element() nftables.SetElement {
	return nftables.SetElement{Key: []byte(e.key), IntervalEnd: e.end}
}

// addrElems are the elements of an address set: one per address, or for
// an interval set a start per range and an end one past it (none past the
// family's last address). Adjacent ranges are merged.
func addrElems(s *policy.AddrSet) (map[elemKey]struct{}, error) {
	out := map[elemKey]struct{}{}
	ok := func(a netip.Addr) bool { return a.IsValid() && a.Zone() == "" && a.Is4() == !s.V6 }
	if !s.Interval {
		if len(s.Ranges) != 0 {
			return nil, fmt.Errorf("set %s: ranges in a set of addresses", s.Name)
		}
		for _, a := range s.Addrs {
			a = a.Unmap()
			if !ok(a) {
				return nil, fmt.Errorf("set %s: address %v not of the set's family", s.Name, a)
			}
			out[elemKey{key: string(a.AsSlice())}] = struct{}{}
		}
		return out, nil
	}
	if len(s.Addrs) != 0 {
		return nil, fmt.Errorf("set %s: addresses in an interval set", s.Name)
	}
	var last netip.Addr // end of the previous range merged so far
	for i, r := range s.Ranges {
		from, to := r.From.Unmap(), r.To.Unmap()
		if !ok(from) || !ok(to) || to.Less(from) {
			return nil, fmt.Errorf("set %s: range %v-%v not a range of the set's family", s.Name, r.From, r.To)
		}
		if i > 0 && !last.Less(from) {
			return nil, fmt.Errorf("set %s: ranges not sorted and disjoint at %v", s.Name, r.From)
		}
		if i > 0 && last.Next() == from {
			// Adjacent: the previous range's end element moves.
			delete(out, elemKey{key: string(from.AsSlice()), end: true})
		} else {
			out[elemKey{key: string(from.AsSlice())}] = struct{}{}
		}
		if end := to.Next(); end.IsValid() {
			out[elemKey{key: string(end.AsSlice()), end: true}] = struct{}{}
		}
		last = to
	}
	return out, nil
}

// portElems are the elements of a ports set: protocol padded to 4 bytes,
// then the port, big endian, padded to 4.
func portElems(s *policy.PortSet) (map[elemKey]struct{}, error) {
	out := make(map[elemKey]struct{}, len(s.Ports))
	for _, p := range s.Ports {
		if p.Proto == 0 {
			return nil, fmt.Errorf("set %s: protocol %d", s.Name, p.Proto)
		}
		out[elemKey{key: string([]byte{byte(p.Proto), 0, 0, 0, byte(p.Port >> 8), byte(p.Port), 0, 0})}] = struct{}{}
	}
	return out, nil
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
