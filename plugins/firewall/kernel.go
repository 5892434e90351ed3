package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/nft"
)

// This file is the kernel half: it reads the table back and applies one
// attachment's elements in one netlink batch. It runs in the calling
// thread's network namespace.

// Table is the plugin's nftables table (inet family).
const Table = "podnet-firewall"

func tableRef() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}
}

func forwardChainRef(t *nftables.Table) *nftables.Chain {
	pol := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name: chainForward, Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityRef(forwardPriority), Policy: &pol,
	}
}

func notFound(err error) bool {
	// google/nftables flattens netlink errors with %v.
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

// batchRetries bounds the retries of a batch the kernel rejected because
// something it deletes went away meanwhile (a concurrent DEL or GC).
const batchRetries = 5

func open() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	return c, nil
}

// snapshot is what the table holds now.
type snapshot struct {
	elements []Element // Tag is the element comment
	rules    []nft.RuleRef
}

// forwardChain names the forward chain for listing (nft.RuleRefs).
var forwardChain = nft.Chain{Family: nftables.TableFamilyINet, Table: Table, Name: chainForward}

// read lists every element of the plugin's sets and the forward chain's
// rules. A missing table, set or chain reads as empty. The listings are
// retried while the kernel reports them interrupted (see nft.SetElements):
// DEL and GC delete what they list, so a listing that skipped an element
// would leave it behind.
func read() (*snapshot, error) {
	s := &snapshot{}
	for _, d := range setDefs {
		els, err := nft.SetElements(nftables.TableFamilyINet, Table, d.name)
		if err != nil {
			return nil, err
		}
		for _, e := range els {
			s.elements = append(s.elements, Element{Set: d.name, Key: e.Key, Tag: e.Comment})
		}
	}
	rules, err := nft.RuleRefs(forwardChain)
	if err != nil {
		return nil, err
	}
	s.rules = rules
	return s, nil
}

// rulesOK reports whether the forward chain holds exactly podnet's rules,
// in order.
func (s *snapshot) rulesOK() bool {
	want := forwardRules()
	var got []string
	for _, r := range s.rules {
		if strings.HasPrefix(r.Tag, "podnet-firewall ") {
			got = append(got, r.Tag)
		}
	}
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i] != ruleTag(i, len(want)) {
			return false
		}
	}
	return true
}

// addSkeleton queues the table, sets and chains (created when absent, left
// alone when present) and, when the forward chain does not hold exactly
// podnet's rules, replaces podnet's rules there. Rules of others in the
// forward chain and everything in the admin chain are never touched.
func addSkeleton(cc *nftables.Conn, s *snapshot) (rebuilt bool, err error) {
	t := cc.AddTable(tableRef())
	for i, d := range setDefs {
		// An explicit batch-local ID: with ID 0 google/nftables draws one
		// from an unsynchronised package counter (a data race when two
		// goroutines build batches).
		set := &nftables.Set{Table: t, ID: uint32(i + 1), Name: d.name, KeyType: d.keyType(), Concatenation: d.concat, Comment: d.comment}
		if err := cc.AddSet(set, nil); err != nil {
			return false, fmt.Errorf("nftables: set %s: %w", d.name, err)
		}
	}
	cc.AddChain(&nftables.Chain{Name: chainAdmin, Table: t})
	fwd := cc.AddChain(forwardChainRef(t))
	if s.rulesOK() {
		return false, nil
	}
	for _, r := range s.rules {
		if strings.HasPrefix(r.Tag, "podnet-firewall ") {
			if err := cc.DelRule(&nftables.Rule{Table: t, Chain: fwd, Handle: r.Handle}); err != nil {
				return false, err
			}
		}
	}
	rs := forwardRules()
	for i, r := range rs {
		cc.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, ruleTag(i, len(rs)))})
	}
	return true, nil
}

func setRef(name string) *nftables.Set {
	for i, d := range setDefs {
		if d.name == name {
			return &nftables.Set{Table: tableRef(), ID: uint32(i + 1), Name: d.name, KeyType: d.keyType(), Concatenation: d.concat}
		}
	}
	panic("unknown set " + name)
}

func delElements(cc *nftables.Conn, els []Element) error {
	for _, e := range els {
		if err := cc.SetDeleteElements(setRef(e.Set), []nftables.SetElement{{Key: e.Key}}); err != nil {
			return err
		}
	}
	return nil
}

// Apply makes want the elements tagged tag, in one batch that also ensures
// the table's skeleton: elements of tag not in want are deleted, elements of
// want that another tag holds (an address reused without a DEL) change
// owner, and want's missing elements are added.
//
// Two first ADDs racing on a node without the table would both append the
// rules (netlink batches cannot say "only if absent" for rules), so a batch
// that wrote the rules reads the chain back and, finding it doubled, goes
// round again: the retry deletes the duplicates by handle, and of two
// racing repairs the later one fails on the vanished handles and re-reads.
func Apply(tag string, want []Element) error {
	wantIDs := map[string]bool{}
	for _, w := range want {
		wantIDs[w.id()] = true
	}
	for try := 0; ; try++ {
		cc, err := open()
		if err != nil {
			return err
		}
		var rebuilt bool
		err = func() error {
			s, err := read()
			if err != nil {
				return err
			}
			if rebuilt, err = addSkeleton(cc, s); err != nil {
				return err
			}
			var del []Element
			mine := map[string]bool{}
			for _, h := range s.elements {
				switch {
				case h.Tag == tag && wantIDs[h.id()]:
					mine[h.id()] = true
				case h.Tag == tag || wantIDs[h.id()]:
					del = append(del, h)
				}
			}
			if err := delElements(cc, del); err != nil {
				return err
			}
			for _, w := range want {
				if mine[w.id()] {
					continue
				}
				if err := cc.SetAddElements(setRef(w.Set), []nftables.SetElement{{Key: w.Key, Comment: tag}}); err != nil {
					return err
				}
			}
			return cc.Flush()
		}()
		if err == nil && rebuilt && try < batchRetries {
			if s, rerr := read(); rerr == nil && !s.rulesOK() {
				cc.CloseLasting()
				continue
			}
		}
		cc.CloseLasting()
		if err == nil {
			return nil
		}
		if !notFound(err) || try >= batchRetries {
			return fmt.Errorf("nftables: add elements of %q to inet %s: %w", tag, Table, err)
		}
	}
}

// Remove deletes, in one batch, the elements whose tag match accepts and
// returns how many there were. A missing table is not an error.
func Remove(match func(tag string) bool) (int, error) {
	for try := 0; ; try++ {
		cc, err := open()
		if err != nil {
			return 0, err
		}
		n, err := func() (int, error) {
			s, err := read()
			if err != nil {
				return 0, err
			}
			var del []Element
			for _, h := range s.elements {
				if match(h.Tag) {
					del = append(del, h)
				}
			}
			if len(del) == 0 {
				return 0, nil
			}
			if err := delElements(cc, del); err != nil {
				return 0, err
			}
			return len(del), cc.Flush()
		}()
		cc.CloseLasting()
		if err == nil {
			return n, nil
		}
		if !notFound(err) || try >= batchRetries {
			return 0, fmt.Errorf("nftables: delete elements from inet %s: %w", Table, err)
		}
	}
}

// Read returns the table's elements and whether its forward chain holds
// podnet's rules (CHECK, tests and operators).
func Read() (elements []Element, rulesOK bool, err error) {
	s, err := read()
	if err != nil {
		return nil, false, err
	}
	return s.elements, s.rulesOK(), nil
}

// Usable reports whether nftables answers in this namespace (STATUS).
func Usable() error {
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
