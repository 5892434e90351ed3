package policykernel

import (
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

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

// shape renders the rules of pod chain name without what differs between
// pods' chains that are right: counter values, and the log prefix (which
// must be the chain's name: ok false otherwise). Chains of one direction
// and the same shape have the same rules up to those.
func shape(name string, rules []rawRule) (string, bool) {
	var sb strings.Builder
	sb.WriteString(strconv.FormatBool(chainIn(name)))
	for _, r := range rules {
		sb.WriteString("|")
		for _, e := range r.exprs {
			sb.WriteString(";" + e.name + ":")
			switch e.name {
			case "counter":
				continue
			case "log":
				ad, err := nft.Decoder(e.data)
				if err != nil {
					return "", false
				}
				for ad.Next() {
					if ad.Type() == unix.NFTA_LOG_PREFIX {
						if strings.TrimRight(ad.String(), "\x00") != name {
							return "", false
						}
						continue
					}
					fmt.Fprintf(&sb, "%d=%x,", ad.Type(), ad.Bytes())
				}
				if ad.Err() != nil {
					return "", false
				}
			default:
				sb.WriteString(hex.EncodeToString(e.data))
			}
		}
	}
	return sb.String(), true
}

// droppedBy returns the packets of the counter in the last of rules.
func droppedBy(rules []rawRule) (uint64, bool) {
	if len(rules) == 0 {
		return 0, false
	}
	for _, e := range rules[len(rules)-1].exprs {
		if e.name != "counter" {
			continue
		}
		ad, err := nft.Decoder(e.data)
		if err != nil {
			return 0, false
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_COUNTER_PACKETS {
				return ad.Uint64(), ad.Err() == nil
			}
		}
	}
	return 0, false
}
