package policykernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nft"
)

// errDumpInterrupted: the kernel flagged a listing as inconsistent (a
// batch committed while it ran); read starts over.
var errDumpInterrupted = errors.New("nftables: listing interrupted")

// rawRule is one rule as a table-wide dump lists it: its chain and its
// expressions, each a name and its undecoded data.
type rawRule struct {
	chain string
	exprs []rawExpr
}

type rawExpr struct {
	name string
	data []byte
}

// dumpRules lists the rules of the named chains of the table, by chain,
// in order: one netlink dump per chain on a few sockets in parallel. (A
// dump of the whole table costs the square of its rules: the kernel walks
// it from the start again for each message it fills; and the library
// parses every expression into objects.)
func (w *Writer) dumpRules(chains []string) (map[string][]rawRule, error) {
	workers := min(max(runtime.GOMAXPROCS(0), 1), 4, max(len(chains)/64, 1))
	out := make(map[string][]rawRule, len(chains))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.ns})
			if err == nil {
				defer c.Close()
			}
			for j := i; j < len(chains) && err == nil; j += workers {
				var rules []rawRule
				if rules, err = dumpChain(c, chains[j]); err == nil {
					mu.Lock()
					out[chains[j]] = rules
					mu.Unlock()
				}
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("nftables: list rules: %w", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out, first
}

// dumpChain lists the rules of chain; a dump the kernel flags as
// inconsistent is repeated, a missing chain has none.
func dumpChain(c *netlink.Conn, chain string) ([]rawRule, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
	})
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	for try := 0; ; try++ {
		msgs, err := c.Execute(req)
		if notFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("chain %s: %w", chain, err)
		}
		var out []rawRule
		intr := false
		for _, m := range msgs {
			intr = intr || m.Header.Flags&netlink.DumpInterrupted != 0
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
				continue
			}
			r, err := parseRule(m.Data[4:])
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", chain, err)
			}
			out = append(out, r)
		}
		if !intr {
			return out, nil
		}
		if try >= readRetries {
			return nil, fmt.Errorf("chain %s: %w", chain, errDumpInterrupted)
		}
	}
}

func parseRule(b []byte) (rawRule, error) {
	var r rawRule
	ad, err := nft.Decoder(b)
	if err != nil {
		return r, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_CHAIN:
			r.chain = ad.String()
		case unix.NFTA_RULE_EXPRESSIONS:
			list, err := nft.Decoder(ad.Bytes())
			if err != nil {
				return r, err
			}
			for list.Next() {
				ed, err := nft.Decoder(list.Bytes())
				if err != nil {
					return r, err
				}
				var e rawExpr
				for ed.Next() {
					switch ed.Type() {
					case unix.NFTA_EXPR_NAME:
						e.name = ed.String()
					case unix.NFTA_EXPR_DATA:
						e.data = ed.Bytes()
					}
				}
				if err := ed.Err(); err != nil {
					return r, err
				}
				r.exprs = append(r.exprs, e)
			}
			if err := list.Err(); err != nil {
				return r, err
			}
		}
	}
	return r, ad.Err()
}

// rawSig renders the rules of a chain as listed by the kernel the way
// rulesSig renders rules built here, and returns the chain's state: that
// signature, the sets its rules look up and the chains they jump or go
// to. An expression it cannot decode makes the signature differ from any
// built one.
func rawSig(rules []rawRule) *chainState {
	var sb strings.Builder
	cs := &chainState{}
	for _, r := range rules {
		sb.WriteString("|")
		for _, e := range r.exprs {
			s, ref := rawExprSig(e)
			switch {
			case ref == "":
			case e.name == "lookup":
				cs.uses = append(cs.uses, ref)
			case !slices.Contains(cs.jumps, ref):
				cs.jumps = append(cs.jumps, ref)
			}
			sb.WriteString(s)
			sb.WriteString(";")
		}
	}
	cs.sig = sb.String()
	return cs
}

// rawExprSig is exprSig of a listed expression, and the set it looks up
// or the chain its verdict jumps or goes to.
func rawExprSig(e rawExpr) (string, string) {
	ad, err := nft.Decoder(e.data)
	if err != nil {
		return "?" + e.name, ""
	}
	a := map[uint16][]byte{}
	for ad.Next() {
		a[ad.Type()] = ad.Bytes()
	}
	if ad.Err() != nil {
		return "?" + e.name, ""
	}
	u32 := func(t uint16) uint32 {
		if len(a[t]) != 4 {
			return ^uint32(0)
		}
		return binary.BigEndian.Uint32(a[t])
	}
	u64 := func(t uint16) uint64 {
		if len(a[t]) != 8 {
			return ^uint64(0)
		}
		return binary.BigEndian.Uint64(a[t])
	}
	str := func(t uint16) string { return strings.TrimRight(string(a[t]), "\x00") }
	switch e.name {
	case "meta":
		return fmt.Sprintf("meta %d", u32(unix.NFTA_META_KEY)), ""
	case "cmp":
		return fmt.Sprintf("cmp %d %x", u32(unix.NFTA_CMP_OP), nested(a[unix.NFTA_CMP_DATA], unix.NFTA_DATA_VALUE)), ""
	case "payload":
		return fmt.Sprintf("payload %d %d %d", u32(unix.NFTA_PAYLOAD_BASE), u32(unix.NFTA_PAYLOAD_OFFSET), u32(unix.NFTA_PAYLOAD_LEN)), ""
	case "lookup":
		inv := a[unix.NFTA_LOOKUP_FLAGS] != nil && u32(unix.NFTA_LOOKUP_FLAGS)&unix.NFT_LOOKUP_F_INV != 0
		return fmt.Sprintf("lookup %s %t", str(unix.NFTA_LOOKUP_SET), inv), str(unix.NFTA_LOOKUP_SET)
	case "immediate":
		v := nested(a[unix.NFTA_IMMEDIATE_DATA], unix.NFTA_DATA_VERDICT)
		vd, err := nft.Decoder(v)
		if err != nil {
			return "?immediate", ""
		}
		var code int32
		var chain string
		for vd.Next() {
			switch vd.Type() {
			case unix.NFTA_VERDICT_CODE:
				code = int32(vd.Uint32())
			case unix.NFTA_VERDICT_CHAIN:
				chain = strings.TrimRight(vd.String(), "\x00")
			}
		}
		return fmt.Sprintf("verdict %d %s", code, chain), chain
	case "counter":
		return "counter", ""
	case "limit":
		return fmt.Sprintf("limit %d %d %d", u64(unix.NFTA_LIMIT_RATE), u64(unix.NFTA_LIMIT_UNIT), u32(unix.NFTA_LIMIT_BURST)), ""
	case "log":
		g := a[unix.NFTA_LOG_GROUP]
		if len(g) != 2 {
			return "?log", ""
		}
		return fmt.Sprintf("log %d %s", binary.BigEndian.Uint16(g), str(unix.NFTA_LOG_PREFIX)), ""
	}
	return "?" + e.name, ""
}

// nested returns attribute t of the nested attributes b.
func nested(b []byte, t uint16) []byte {
	ad, err := nft.Decoder(b)
	if err != nil {
		return nil
	}
	for ad.Next() {
		if ad.Type() == t {
			return ad.Bytes()
		}
	}
	return nil
}

// dropSig is the signature of a drop verdict (NF_DROP).
var dropSig = exprSig(&expr.Verdict{Kind: expr.VerdictDrop})

// droppedBy returns the packets counted by the rules that drop: each
// one's counter (a Deny rule's, the chain end's), summed; false when no
// rule drops (an Open profile without Deny rules, one that goes to
// another: that one counts its own drops).
func droppedBy(rules []rawRule) (uint64, bool) {
	var sum uint64
	found := false
	for _, r := range rules {
		if len(r.exprs) == 0 || r.exprs[len(r.exprs)-1].name != "immediate" {
			continue
		}
		if v, _ := rawExprSig(r.exprs[len(r.exprs)-1]); v != dropSig {
			continue
		}
		for _, e := range r.exprs {
			if e.name != "counter" {
				continue
			}
			ad, err := nft.Decoder(e.data)
			if err != nil {
				return 0, false
			}
			for ad.Next() {
				if ad.Type() == unix.NFTA_COUNTER_PACKETS {
					sum += ad.Uint64()
					found = true
				}
			}
			if ad.Err() != nil {
				return 0, false
			}
		}
	}
	return sum, found
}
