// Package nft is podnet's small builder over github.com/google/nftables:
// per-attachment rules in a table and chain that belong to one podnet
// component, added and removed in atomic netlink batches.
//
// Every rule carries a tag in its userdata comment (the same TLV nft(8)
// shows as `comment "..."`) naming the network, interface and container it
// belongs to, so that DEL removes exactly one attachment's rules in one
// batch and GC can drop the rules of attachments that are gone. Tables and
// chains are created when absent and never flushed: another attachment's
// rules are never touched.
//
// The package decides no policy beyond the two rule shapes the bridge and
// ptp plugins need (masquerade and MAC spoof check); callers pick tables.
package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/trace"
)

// Chain names a chain and the table that holds it, with the base-chain
// attributes used when it has to be created.
type Chain struct {
	Family   nftables.TableFamily
	Table    string
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
}

func (c Chain) String() string {
	return fmt.Sprintf("%s %s/%s", familyName(c.Family), c.Table, c.Name)
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprintf("family%d", f)
}

func (c Chain) table() *nftables.Table {
	return &nftables.Table{Family: c.Family, Name: c.Table}
}

func (c Chain) chain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Name: c.Name, Table: t, Type: c.Type, Hooknum: c.Hook, Priority: c.Priority}
}

// maxTag keeps a tag inside one userdata TLV (length is one byte, and nft
// adds a terminating NUL).
const maxTag = 250

// Tag identifies one attachment (network, container, interface). Tags of
// one network share NetworkPrefix(network).
func Tag(network, containerID, ifName string) string {
	t := NetworkPrefix(network) + ifName + ":" + containerID
	if len(t) > maxTag {
		sum := sha256.Sum256([]byte(ifName + ":" + containerID))
		t = NetworkPrefix(network) + "#" + hex.EncodeToString(sum[:])
	}
	return t
}

// NetworkPrefix is the part of a tag shared by a network's attachments.
func NetworkPrefix(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "podnet:" + hex.EncodeToString(sum[:8]) + ":"
}

func notFound(err error) bool {
	// google/nftables flattens netlink errors with %v.
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

// conn opens a connection that keeps one socket for the whole operation,
// in the calling thread's network namespace.
func conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	return c, nil
}

func tagOfUserData(ud []byte) string {
	s, _ := userdata.GetString(ud, userdata.TypeComment)
	return strings.TrimRight(s, "\x00")
}

func del(cc *nftables.Conn, c Chain, handle uint64) error {
	t := c.table()
	return cc.DelRule(&nftables.Rule{Table: t, Chain: c.chain(t), Handle: handle})
}

// batchRetries bounds the retries of a batch that failed because a rule it
// deletes was deleted concurrently (the whole batch is then rejected).
const batchRetries = 5

// Apply makes rules the tagged rules of chain c in one batch: the table and
// chain are created if absent, rules already carrying tag (a repeated ADD)
// are replaced.
func Apply(c Chain, tag string, rules [][]expr.Any) error {
	ud := userdata.AppendString(nil, userdata.TypeComment, tag)
	for try := 0; ; try++ {
		tl := trace.Begin()
		stale, err := RuleRefs(c)
		trace.End("nft list chain rules", tl)
		if err != nil {
			return err
		}
		tl = trace.Begin()
		cc, err := conn()
		trace.End("nft open socket", tl)
		if err != nil {
			return err
		}
		t := cc.AddTable(c.table())
		ch := cc.AddChain(c.chain(t))
		for _, r := range stale {
			if r.Tag == tag {
				if err := del(cc, c, r.Handle); err != nil {
					cc.CloseLasting()
					return err
				}
			}
		}
		for _, exprs := range rules {
			cc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: ud})
		}
		tf := trace.Begin()
		err = cc.Flush()
		cc.CloseLasting()
		trace.End("nft batch (table, chain, rules) + close", tf)
		if err == nil {
			return nil
		}
		if !notFound(err) || try >= batchRetries {
			return fmt.Errorf("nftables: add rules %q to %s: %w", tag, c, err)
		}
	}
}

// Remove deletes the rules tagged tag from chain c in one batch and returns
// how many there were. A missing table or chain is not an error.
func Remove(c Chain, tag string) (int, error) {
	return removeIf(c, func(t string) bool { return t == tag })
}

// GC deletes the rules of chain c whose tag starts with prefix and for which
// keep returns false, in one batch, and returns how many it deleted.
func GC(c Chain, prefix string, keep func(tag string) bool) (int, error) {
	return removeIf(c, func(t string) bool { return strings.HasPrefix(t, prefix) && !keep(t) })
}

func removeIf(c Chain, match func(tag string) bool) (int, error) {
	for try := 0; ; try++ {
		t := trace.Begin()
		rules, err := RuleRefs(c)
		trace.End("nft list chain rules", t)
		if err != nil || len(rules) == 0 {
			return 0, err
		}
		cc, err := conn()
		if err != nil {
			return 0, err
		}
		n := 0
		for _, r := range rules {
			if match(r.Tag) {
				if err := del(cc, c, r.Handle); err != nil {
					cc.CloseLasting()
					return 0, err
				}
				n++
			}
		}
		if n == 0 {
			cc.CloseLasting()
			return 0, nil
		}
		t = trace.Begin()
		err = cc.Flush()
		cc.CloseLasting()
		trace.End("nft delete batch + close", t)
		if err == nil {
			return n, nil
		}
		// ENOENT: a rule in the batch went away meanwhile (a concurrent
		// DEL or GC) and the kernel rejected the whole batch: list again.
		if !notFound(err) || try >= batchRetries {
			return 0, fmt.Errorf("nftables: delete rules from %s: %w", c, err)
		}
	}
}

// Rule is a rule as read back: its tag and expressions.
type Rule struct {
	Tag   string
	Exprs []expr.Any
}

// Packets returns the packet count of the rule's first counter.
func (r Rule) Packets() uint64 {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets
		}
	}
	return 0
}

// List returns the rules of chain c with their expressions (none when the
// table or chain is absent), for tests and operators.
func List(c Chain) ([]Rule, error) {
	cc, err := conn()
	if err != nil {
		return nil, err
	}
	defer cc.CloseLasting()
	t := c.table()
	rules, err := cc.GetRules(t, c.chain(t))
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: list %s: %w", c, err)
	}
	out := make([]Rule, 0, len(rules))
	for _, r := range rules {
		out = append(out, Rule{Tag: tagOfUserData(r.UserData), Exprs: r.Exprs})
	}
	return out, nil
}

// CountTag returns how many rules of c carry tag (CHECK).
func CountTag(c Chain, tag string) (int, error) {
	rules, err := RuleRefs(c)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rules {
		if r.Tag == tag {
			n++
		}
	}
	return n, nil
}
