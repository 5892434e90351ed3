package portmap

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nft"
)

// TableName is portmap's nftables table (family inet), shared by every
// attachment on the node.
const TableName = "podnet-portmap"

// layoutVersion is bumped whenever the base chains change shape; a table
// whose base rules carry another version (or another mark) is rebuilt in
// the next ADD's batch.
const layoutVersion = "v1"

// ipsDstNAT is conntrack's IPS_DST_NAT status bit (`ct status dnat`).
const ipsDstNAT = 1 << 5

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// Register numbers (google/nftables uses the kernel's): 1 is the first
// 16-byte register, 8.. the 4-byte ones (8 = start of 1, 12 = start of 2).
const (
	reg1  = 1
	reg9  = 9
	reg10 = 10
	reg12 = 12
	reg13 = 13
)

var (
	typeProtoPort   = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	typeIP4ProtoPrt = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	typeIP6ProtoPrt = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	typeIP4Port     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	typeIP6Port     = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
)

// setDef returns the definition of one of allSets.
func setDef(n string) *nftables.Set {
	s := &nftables.Set{Table: table, Name: n, KeyByteOrder: binaryutil.BigEndian}
	switch n {
	case mapPorts4:
		s.IsMap, s.Concatenation, s.KeyType, s.DataType = true, true, typeProtoPort, typeIP4Port
	case mapPorts6:
		s.IsMap, s.Concatenation, s.KeyType, s.DataType = true, true, typeProtoPort, typeIP6Port
	case mapIPPorts4:
		s.IsMap, s.Concatenation, s.KeyType, s.DataType = true, true, typeIP4ProtoPrt, typeIP4Port
	case mapIPPorts6:
		s.IsMap, s.Concatenation, s.KeyType, s.DataType = true, true, typeIP6ProtoPrt, typeIP6Port
	case setSNAT4, setMasq4:
		s.KeyType = nftables.TypeIPAddr
	case setSNAT6, setMasq6:
		s.KeyType = nftables.TypeIP6Addr
	}
	return s
}

// baseChain is one chain of the table with its rules.
type baseChain struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

func chainDef(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	c := &nftables.Chain{Table: table, Name: name}
	if hook != nil {
		c.Type, c.Hooknum, c.Priority = typ, hook, prio
	}
	return c
}

func ne32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(ipsDstNAT), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
	}
}

func lookupSet(set string, off, alen uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
		&expr.Lookup{SourceRegister: reg1, SetName: set},
	}
}

// dnatRule: [meta nfproto P] [daddr →1] l4proto . th dport → map → dnat.
func dnatRule(set string, proto byte, withAddr bool) []expr.Any {
	v6 := proto == unix.NFPROTO_IPV6
	r := nfproto(proto)
	protoReg, portReg := uint32(reg1), uint32(reg9)
	if withAddr {
		if v6 {
			r = append(r, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16})
			protoReg, portReg = reg12, reg13
		} else {
			r = append(r, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
			protoReg, portReg = reg9, reg10
		}
	}
	natPort := uint32(reg9)
	if v6 {
		natPort = reg12
	}
	return append(r,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: set},
		&expr.Counter{},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(proto), RegAddrMin: reg1, RegProtoMin: natPort},
	)
}

func fibLocalJump() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(unix.RTN_LOCAL)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: "hostports"},
	}
}

// hairpinRule marks a new DNATed connection to a snat pod that leaves by
// the interface it came in on: the pod's reply would otherwise go straight
// back to the client (same bridge, or the pod itself) without un-DNAT.
func hairpinRule(proto byte, set string, mark uint32) []expr.Any {
	off, alen := uint32(16), uint32(4)
	if proto == unix.NFPROTO_IPV6 {
		off, alen = 24, 16
	}
	r := nfproto(proto)
	r = append(r,
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(expr.CtStateBitNEW), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
	)
	r = append(r, ctStatusDNAT()...)
	r = append(r, lookupSet(set, off, alen)...)
	return append(r,
		&expr.Fib{Register: reg1, FlagDADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(^mark), Xor: ne32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		&expr.Counter{},
	)
}

func masqRules(mark uint32) [][]expr.Any {
	var rules [][]expr.Any
	// Every host-port connection to a masqAll pod.
	for _, f := range []struct {
		proto     byte
		set       string
		off, alen uint32
	}{{unix.NFPROTO_IPV4, setMasq4, 16, 4}, {unix.NFPROTO_IPV6, setMasq6, 24, 16}} {
		r := nfproto(f.proto)
		r = append(r, ctStatusDNAT()...)
		r = append(r, lookupSet(f.set, f.off, f.alen)...)
		rules = append(rules, append(r, &expr.Counter{}, &expr.Masq{}))
	}
	// Hairpin, as marked in the hairpin chain.
	hp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(mark), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(mark)},
	}
	hp = append(hp, ctStatusDNAT()...)
	rules = append(rules, append(hp, &expr.Counter{}, &expr.Masq{}))
	// From the node's loopback (route_localnet): 127.0.0.0/8 cannot leave.
	lo := nfproto(unix.NFPROTO_IPV4)
	lo = append(lo, ctStatusDNAT()...)
	lo = append(lo,
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127}},
	)
	lo = append(lo, lookupSet(setSNAT4, 16, 4)...)
	rules = append(rules, append(lo, &expr.Counter{}, &expr.Masq{}))
	return rules
}

// baseChains is the table's fixed part for mark bit value mark.
func baseChains(mark uint32) []baseChain {
	return []baseChain{
		{chainDef("hostports", "", nil, nil), [][]expr.Any{
			dnatRule(mapIPPorts4, unix.NFPROTO_IPV4, true),
			dnatRule(mapIPPorts6, unix.NFPROTO_IPV6, true),
			dnatRule(mapPorts4, unix.NFPROTO_IPV4, false),
			dnatRule(mapPorts6, unix.NFPROTO_IPV6, false),
		}},
		{chainDef("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest), [][]expr.Any{fibLocalJump()}},
		{chainDef("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest), [][]expr.Any{fibLocalJump()}},
		{chainDef("hairpin", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest+10)), [][]expr.Any{
			hairpinRule(unix.NFPROTO_IPV4, setSNAT4, mark),
			hairpinRule(unix.NFPROTO_IPV6, setSNAT6, mark),
		}},
		{chainDef("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource), masqRules(mark)},
	}
}

func layoutTag(mark uint32) string {
	return fmt.Sprintf("podnet-portmap %s mark=%#x", layoutVersion, mark)
}

func ruleTag(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return strings.TrimRight(s, "\x00")
}

func notFound(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

func open() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	return c, nil
}

// baseOK reports whether the table holds every set and base chain, with
// exactly the rules of this layout and mark.
func baseOK(cc *nftables.Conn, mark uint32) (bool, error) {
	sets, err := cc.GetSets(table)
	if notFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("nftables: list sets of %s: %w", TableName, err)
	}
	have := map[string]bool{}
	for _, s := range sets {
		have[s.Name] = true
	}
	for _, n := range allSets {
		if !have[n] {
			return false, nil
		}
	}
	tag := layoutTag(mark)
	for _, bc := range baseChains(mark) {
		rules, err := cc.GetRules(table, bc.chain)
		if notFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("nftables: list %s: %w", bc.chain.Name, err)
		}
		if len(rules) != len(bc.rules) {
			return false, nil
		}
		for _, r := range rules {
			if ruleTag(r) != tag {
				return false, nil
			}
		}
	}
	return true, nil
}

// queueBase adds to the batch the creation of the table, its sets and
// chains, and replaces the base chains' rules.
func queueBase(cc *nftables.Conn, mark uint32) error {
	cc.AddTable(table)
	for _, n := range allSets {
		if err := cc.AddSet(setDef(n), nil); err != nil {
			return fmt.Errorf("nftables: set %s: %w", n, err)
		}
	}
	ud := userdata.AppendString(nil, userdata.TypeComment, layoutTag(mark))
	bcs := baseChains(mark)
	// Regular chains first: the base chains jump to them.
	for _, bc := range bcs {
		cc.AddChain(bc.chain)
		cc.FlushChain(bc.chain)
	}
	for _, bc := range bcs {
		for _, r := range bc.rules {
			cc.AddRule(&nftables.Rule{Table: table, Chain: bc.chain, Exprs: r, UserData: ud})
		}
	}
	return nil
}

// readElems returns every element of the table's sets and maps; a missing
// table or set gives none.
func readElems() ([]Elem, error) {
	var out []Elem
	for _, n := range allSets {
		es, err := nft.SetElements(nftables.TableFamilyINet, TableName, n)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			el, err := decodeElem(n, e.Key, e.Val, e.Comment)
			if err != nil {
				return nil, err
			}
			out = append(out, el)
		}
	}
	return out, nil
}

func toNFT(es []Elem, withData bool) map[string][]nftables.SetElement {
	m := map[string][]nftables.SetElement{}
	for _, e := range es {
		se := nftables.SetElement{Key: e.Key()}
		if withData {
			se.Val, se.Comment = e.Val(), e.Owner
		}
		m[e.Set] = append(m[e.Set], se)
	}
	return m
}

// queuePlan adds the plan's deletions, then its additions, to the batch.
func queuePlan(cc *nftables.Conn, p plan) error {
	for _, step := range []struct {
		es  []Elem
		add bool
	}{{p.del, false}, {p.add, true}} {
		byset := toNFT(step.es, step.add)
		for _, n := range allSets {
			if len(byset[n]) == 0 {
				continue
			}
			var err error
			if step.add {
				err = cc.SetAddElements(setDef(n), byset[n])
			} else {
				err = cc.SetDeleteElements(setDef(n), byset[n])
			}
			if err != nil {
				return fmt.Errorf("nftables: %s: %w", n, err)
			}
		}
	}
	return nil
}

// applyAdd ensures the base table and makes want the attachment owner's
// elements, in one batch.
func applyAdd(want []Elem, owner string, mark uint32) error {
	cc, err := open()
	if err != nil {
		return err
	}
	defer cc.CloseLasting()
	ok, err := baseOK(cc, mark)
	if err != nil {
		return err
	}
	if !ok {
		// Absent or damaged (or another layout or mark): recreate it in
		// this same batch. Existing sets and their elements are kept.
		if err := queueBase(cc, mark); err != nil {
			return err
		}
	}
	cur, err := readElems()
	if err != nil {
		return err
	}
	if err := queuePlan(cc, planAdd(cur, want, owner)); err != nil {
		return err
	}
	if err := cc.Flush(); err != nil {
		return fmt.Errorf("nftables: update %s: %w", TableName, err)
	}
	return nil
}

// maxDelBatch is the most element deletions sent in one batch (a key-only
// deletion is about 40 bytes; the default socket send buffer is ~200 KiB).
const maxDelBatch = 2000

// applyDel removes, in one batch, the elements whose owner matches, and
// returns how many there were. A missing table is not an error.
func applyDel(match func(owner string) bool) (int, error) {
	cc, err := open()
	if err != nil {
		return 0, err
	}
	defer cc.CloseLasting()
	cur, err := readElems()
	if err != nil {
		return 0, err
	}
	p := planDel(cur, match)
	if len(p.del) == 0 {
		return 0, nil
	}
	if len(p.del) == len(cur) {
		// The last elements go: so does the table, leaving nothing of
		// portmap on a node without host ports. The next ADD recreates it.
		cc.DelTable(table)
		if err := cc.Flush(); err != nil {
			return 0, fmt.Errorf("nftables: delete table %s: %w", TableName, err)
		}
		return len(p.del), nil
	}
	// One attachment's elements are a handful; a GC after many lost DELs
	// can be thousands, more than one netlink send carries, so it goes in
	// batches (GC need not be atomic across attachments).
	done := 0
	for len(p.del) > 0 {
		k := min(len(p.del), maxDelBatch)
		if err := queuePlan(cc, plan{del: p.del[:k]}); err != nil {
			return done, err
		}
		if err := cc.Flush(); err != nil {
			return done, fmt.Errorf("nftables: update %s: %w", TableName, err)
		}
		done += k
		p.del = p.del[k:]
	}
	return done, nil
}

// ListElems returns the table's elements (CHECK, tests, operators).
func ListElems() ([]Elem, error) {
	cc, err := open()
	if err != nil {
		return nil, err
	}
	defer cc.CloseLasting()
	return readElems()
}

// checkBase reports a damaged table for mark.
func checkBase(mark uint32) error {
	cc, err := open()
	if err != nil {
		return err
	}
	defer cc.CloseLasting()
	ok, err := baseOK(cc, mark)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("table inet %s is missing or its chains differ from layout %q", TableName, layoutTag(mark))
	}
	return nil
}

// usable checks that nftables answers over netlink (STATUS).
func usable() error {
	cc, err := open()
	if err != nil {
		return err
	}
	defer cc.CloseLasting()
	if _, err := cc.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	return nil
}
