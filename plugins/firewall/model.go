package firewall

import (
	"bytes"
	"fmt"
	"net"
	"sort"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/cnierr"
)

// This file is the pure half of the plugin: what the table looks like
// (sets, chains, rules) and which set elements one attachment owns. It
// builds google/nftables values and their nft(8) text side by side, so the
// text can be golden-tested without root and shown to operators.
//
// The datapath, in nft syntax (see testdata/ruleset.golden):
//
//	table inet podnet-firewall {
//	    set pods4  { type ipv4_addr; }            every firewalled pod address
//	    set iso4   { type ipv4_addr; }            pods with ingressPolicy same-bridge or isolated
//	    set home4  { type ipv4_addr . ifname; }   such a pod . its bridge
//	    set solo4  { type ipv4_addr . ifname; }   ingressPolicy isolated: pod . its bridge
//	    (and the same four for IPv6)
//	    chain admin { }                           operators' rules, never touched
//	    chain forward {
//	        type filter hook forward priority filter - 10; policy accept;
//	        ip saddr @iso4 ip daddr @iso4 ip daddr . iifname != @home4 drop
//	        ip daddr . iifname @solo4 drop
//	        jump admin
//	        ip daddr @pods4 ct state established,related meta mark set meta mark | MARK accept
//	        ip saddr @pods4 meta mark set meta mark | MARK accept
//	    }
//	}
//
// Every rule's cost is a few set lookups however many pods there are. The
// rules are the same for every attachment and are created once; an
// attachment owns only set elements, each carrying its tag (nft.Tag) as the
// element comment, which is how DEL and GC find them without a state file,
// prevResult or the pod's netns.

// AcceptMark is the packet mark bit the accept rules OR into every packet
// they accept. nftables' accept only ends evaluation of the chain that
// issues it: a forward chain of another table (iptables-nft's FORWARD with
// policy DROP, firewalld, an operator's "policy drop" chain) still sees the
// packet. Such a chain honours the firewall plugin with
// `meta mark & 0x00100000 != 0 accept`.
const AcceptMark uint32 = 0x00100000

// forwardPriority places the forward chain before the usual filter chains
// (iptables-nft and typical inet filter tables at 0, firewalld at +10), so
// the mark is set by the time they run and isolation drops come first.
const forwardPriority = -10

// Set names.
const (
	setPods4 = "pods4"
	setPods6 = "pods6"
	setIso4  = "iso4"
	setIso6  = "iso6"
	setHome4 = "home4"
	setHome6 = "home6"
	setSolo4 = "solo4"
	setSolo6 = "solo6"
)

// Chain names.
const (
	chainForward = "forward"
	chainAdmin   = "admin"
)

type setDef struct {
	name    string
	v6      bool
	concat  bool // address . ifname
	comment string
}

var setDefs = []setDef{
	{setPods4, false, false, "firewalled pod addresses"},
	{setPods6, true, false, "firewalled pod addresses"},
	{setIso4, false, false, "pods with ingressPolicy same-bridge or isolated"},
	{setIso6, true, false, "pods with ingressPolicy same-bridge or isolated"},
	{setHome4, false, true, "isolating pod . its bridge"},
	{setHome6, true, true, "isolating pod . its bridge"},
	{setSolo4, false, true, "ingressPolicy isolated: pod . its bridge"},
	{setSolo6, true, true, "ingressPolicy isolated: pod . its bridge"},
}

func (d setDef) keyType() nftables.SetDatatype {
	addr := nftables.TypeIPAddr
	if d.v6 {
		addr = nftables.TypeIP6Addr
	}
	if !d.concat {
		return addr
	}
	t, err := nftables.ConcatSetType(addr, nftables.TypeIFName)
	if err != nil {
		panic(err) // static types: cannot fail
	}
	return t
}

func (d setDef) typeText() string {
	t := "ipv4_addr"
	if d.v6 {
		t = "ipv6_addr"
	}
	if d.concat {
		t += " . ifname"
	}
	return t
}

// Attachment is what one ADD puts in the table.
type Attachment struct {
	Tag    string
	Policy string
	Bridge string   // the bridge (prevResult.Interfaces[0]) for isolating policies
	Addrs  []net.IP // the pod's addresses, 4-byte form for IPv4
}

// Element is one set element owned by an attachment.
type Element struct {
	Set string
	Key []byte
	Tag string
}

// id is the element's identity in the kernel: set and key.
func (e Element) id() string { return e.Set + "|" + string(e.Key) }

// Compile derives the attachment from the config and prevResult: every
// address of prevResult (like the reference plugin, whatever interface it is
// on) and, for an isolating policy, the bridge, which the bridge plugin
// reports as its first interface.
func Compile(c *Config, tag string, prev *current.Result) (*Attachment, error) {
	a := &Attachment{Tag: tag, Policy: c.Policy}
	seen := map[string]bool{}
	for _, ipc := range prev.IPs {
		if ipc == nil || ipc.Address.IP == nil {
			continue
		}
		ip := ipc.Address.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if seen[string(ip)] {
			continue
		}
		seen[string(ip)] = true
		a.Addrs = append(a.Addrs, ip)
	}
	if c.Policy == PolicyOpen || len(a.Addrs) == 0 {
		return a, nil
	}
	if len(prev.Interfaces) == 0 || prev.Interfaces[0] == nil || prev.Interfaces[0].Name == "" {
		return nil, cnierr.Field(name, "ingressPolicy", "%q needs the bridge as the first interface of prevResult: chain \"firewall\" after \"bridge\"", c.Policy)
	}
	br := prev.Interfaces[0]
	if br.Sandbox != "" {
		return nil, cnierr.Field(name, "ingressPolicy", "%q needs the bridge as the first interface of prevResult, but %q is inside sandbox %q: chain \"firewall\" after \"bridge\"", c.Policy, br.Name, br.Sandbox)
	}
	if len(br.Name) >= unix.IFNAMSIZ {
		return nil, cnierr.New(cnierr.InvalidConfig, name, "prevResult interface %q is not a valid interface name", br.Name)
	}
	a.Bridge = br.Name
	return a, nil
}

// Elements returns the set elements the attachment owns.
func (a *Attachment) Elements() []Element {
	var out []Element
	for _, ip := range a.Addrs {
		v6 := len(ip) == net.IPv6len
		pick := func(v4, v6name string) string {
			if v6 {
				return v6name
			}
			return v4
		}
		out = append(out, Element{Set: pick(setPods4, setPods6), Key: []byte(ip), Tag: a.Tag})
		if a.Policy == PolicyOpen {
			continue
		}
		ipBr := append(append([]byte{}, ip...), ifnameKey(a.Bridge)...)
		out = append(out,
			Element{Set: pick(setIso4, setIso6), Key: []byte(ip), Tag: a.Tag},
			Element{Set: pick(setHome4, setHome6), Key: ipBr, Tag: a.Tag})
		if a.Policy == PolicyIsolated {
			out = append(out, Element{Set: pick(setSolo4, setSolo6), Key: ipBr, Tag: a.Tag})
		}
	}
	return out
}

// ifnameKey is an interface name as meta iifname loads it: IFNAMSIZ bytes,
// zero padded.
func ifnameKey(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// rule is one rule of the forward chain: its text and its expressions.
type rule struct {
	text  string
	exprs []expr.Any
}

// Registers: reg 1 is the 16-byte NFT_REG_1 (= 32-bit regs 8..11), reg 2
// follows it; 9 is NFT_REG32_01, right after a 4-byte IPv4 address.
const (
	reg1     = 1
	reg2     = 2
	reg32_01 = 9
)

type family struct {
	v6                 bool
	proto              byte
	saddr, daddr, alen uint32
	sfx                string // set name suffix
	kw                 string // "ip" or "ip6"
	nameReg            uint32 // where iifname goes after the address
}

var (
	fam4 = family{false, unix.NFPROTO_IPV4, 12, 16, 4, "4", "ip", reg32_01}
	fam6 = family{true, unix.NFPROTO_IPV6, 8, 24, 16, "6", "ip6", reg2}
)

func (f family) proto_() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.proto}},
	}
}

func (f family) load(off uint32) expr.Any {
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.alen}
}

func lookup(set string, invert bool) expr.Any {
	return &expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert}
}

func markAccept() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^AcceptMark), Xor: binaryutil.NativeEndian.PutUint32(AcceptMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// forwardRules returns the forward chain's rules in order.
func forwardRules() []rule {
	var rs []rule
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, f := range []family{fam4, fam6} {
		iso, home := "iso"+f.sfx, "home"+f.sfx
		rs = append(rs, rule{
			text: fmt.Sprintf("%s saddr @%s %s daddr @%s %s daddr . iifname != @%s counter drop", f.kw, iso, f.kw, iso, f.kw, home),
			exprs: cat(f.proto_(), []expr.Any{
				f.load(f.saddr), lookup(iso, false),
				f.load(f.daddr), lookup(iso, false),
				f.load(f.daddr), &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: f.nameReg}, lookup(home, true),
				&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
			}),
		})
	}
	for _, f := range []family{fam4, fam6} {
		solo := "solo" + f.sfx
		rs = append(rs, rule{
			text: fmt.Sprintf("%s daddr . iifname @%s counter drop", f.kw, solo),
			exprs: cat(f.proto_(), []expr.Any{
				f.load(f.daddr), &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: f.nameReg}, lookup(solo, false),
				&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
			}),
		})
	}
	rs = append(rs, rule{
		text:  "jump " + chainAdmin,
		exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainAdmin}},
	})
	mark := fmt.Sprintf("meta mark set meta mark | 0x%08x counter accept", AcceptMark)
	for _, f := range []family{fam4, fam6} {
		pods := "pods" + f.sfx
		rs = append(rs, rule{
			text: fmt.Sprintf("%s daddr @%s ct state established,related %s", f.kw, pods, mark),
			exprs: cat(f.proto_(), []expr.Any{
				f.load(f.daddr), lookup(pods, false),
				&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
			}, markAccept()),
		}, rule{
			text:  fmt.Sprintf("%s saddr @%s %s", f.kw, pods, mark),
			exprs: cat(f.proto_(), []expr.Any{f.load(f.saddr), lookup(pods, false)}, markAccept()),
		})
	}
	return rs
}

// ruleTagPrefix marks the forward chain's rules as podnet's; the version
// changes when the rules do, so an upgraded plugin replaces them.
const ruleTagPrefix = "podnet-firewall v1 "

func ruleTag(i, n int) string { return fmt.Sprintf("%s%d/%d", ruleTagPrefix, i+1, n) }

// RenderRuleset returns the table's skeleton in nft syntax.
func RenderRuleset() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", Table)
	for _, d := range setDefs {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tcomment %q\n\t}\n", d.name, d.typeText(), d.comment)
	}
	fmt.Fprintf(&b, "\tchain %s {\n\t}\n", chainAdmin)
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook forward priority filter - %d; policy accept;\n", chainForward, -forwardPriority)
	rs := forwardRules()
	for i, r := range rs {
		fmt.Fprintf(&b, "\t\t%s comment %q\n", r.text, ruleTag(i, len(rs)))
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// RenderElements returns els as nft commands, sorted.
func RenderElements(els []Element) string {
	lines := make([]string, 0, len(els))
	for _, e := range els {
		lines = append(lines, fmt.Sprintf("add element inet %s %s { %s comment %q }", Table, e.Set, keyText(e.Set, e.Key), e.Tag))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func keyText(set string, key []byte) string {
	alen := net.IPv4len
	if strings.HasSuffix(set, "6") {
		alen = net.IPv6len
	}
	if len(key) < alen {
		return fmt.Sprintf("0x%x", key)
	}
	s := net.IP(key[:alen]).String()
	if rest := key[alen:]; len(rest) > 0 {
		s += fmt.Sprintf(" . %q", string(bytes.TrimRight(rest, "\x00")))
	}
	return s
}
