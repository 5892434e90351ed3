package policykernel

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/podnet/podnet/agent/policy"
)

// elemsPerMsg bounds the elements of one netlink message: the element list
// is one attribute, whose length field has 16 bits.
const elemsPerMsg = 256

// batch accumulates one netlink batch and what it changes.
type batch struct {
	c     *nftables.Conn
	log   *slog.Logger
	st    Stats
	bytes int    // estimate of the batch's size
	id    uint32 // last batch-local set ID
	err   error
	// logGroup: as Writer.logGroup.
	logGroup int
	// rs is the Ruleset applied, addrSets its address sets by name.
	rs       *policy.Ruleset
	addrSets map[string]*policy.AddrSet
	// ids are the batch IDs of the sets created in this batch.
	ids map[string]uint32
	// made are the sets and chains prepare made.
	made []string
}

func (b *batch) msg(n int) {
	b.st.Messages++
	b.bytes += 128 + n
}

func (b *batch) setErr(err error) {
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("nftables: %w", err)
	}
}

// addSet creates s (empty) and returns its batch-local ID. Our own IDs:
// with ID 0, AddSet bumps a package global without a lock.
func (b *batch) addSet(s *nftables.Set) uint32 {
	b.id++
	s.ID = b.id
	b.setErr(b.c.AddSet(s, nil))
	b.msg(0)
	b.st.SetsAdded++
	if b.ids == nil {
		b.ids = map[string]uint32{}
	}
	b.ids[s.Name] = s.ID
	return s.ID
}

func (b *batch) delSet(name string) {
	b.c.DelSet(&nftables.Set{Table: table, Name: name})
	b.msg(0)
	b.st.SetsRemoved++
}

func (b *batch) elems(s *nftables.Set, els []nftables.SetElement, add bool) {
	for chunk := range slices.Chunk(els, elemsPerMsg) {
		if add {
			b.setErr(b.c.SetAddElements(s, chunk))
		} else {
			b.setErr(b.c.SetDeleteElements(s, chunk))
		}
		b.msg(len(chunk) * (64 + 2*len(chunk[0].Key)))
	}
}

// setElems adds (or deletes) the elements of m to set name of kind k,
// sorted; an address range (its start element) counts as one.
func (b *batch) setElems(name string, k setKind, m map[elemKey]struct{}, add bool) {
	if len(m) == 0 {
		return
	}
	keys := slices.SortedFunc(maps.Keys(m), func(x, y elemKey) int {
		if c := strings.Compare(x.key, y.key); c != 0 {
			return c
		}
		if x.end == y.end {
			return 0
		}
		if x.end {
			return 1
		}
		return -1
	})
	els := make([]nftables.SetElement, len(keys))
	n := 0
	for i, e := range keys {
		els[i] = e.element()
		if !e.end {
			n++
		}
	}
	s := setDef(name, k)
	s.ID = b.ids[name]
	b.elems(s, els, add)
	if add {
		b.st.ElementsAdded += n
	} else {
		b.st.ElementsRemoved += n
	}
}

func (b *batch) rules(chain *nftables.Chain, rules [][]expr.Any) {
	for _, r := range rules {
		b.c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r})
		b.msg(64 * len(r))
		b.st.RulesAdded++
	}
}

// addChains creates profile chains names, then adds their rules: a rule
// that goes to another chain needs it made first (earlier in the batch
// will do).
func (b *batch) addChains(names []string) {
	for _, n := range names {
		b.c.AddChain(chainDef(n))
		b.msg(0)
		b.st.ChainsAdded++
	}
	for _, n := range names {
		b.profileRules(chainDef(n))
	}
}

func (b *batch) profileRules(ch *nftables.Chain) {
	p := b.rs.FindProfile(ch.Name)
	if p == nil {
		// Profiles are sorted by name; desired found them all.
		for i := range b.rs.Profiles {
			if b.rs.Profiles[i].Name == ch.Name {
				p = &b.rs.Profiles[i]
			}
		}
	}
	if p == nil {
		b.setErr(fmt.Errorf("profile %s not in the ruleset", ch.Name))
		return
	}
	b.rules(ch, profileRules(p, b.addrSets, b.ids, b.logGroup))
}

// prepare queues the objects want has and have lacks that nothing uses
// yet: the table, new sets with their elements, new profile chains with
// their rules (except those using a set that is made again, which plan
// makes). It returns the state once they are in, or nil when there are
// none.
func (b *batch) prepare(have, want *state) *state {
	var sets, chains []string
	for n := range want.sets {
		if have.sets[n] == nil {
			sets = append(sets, n)
		}
	}
	for n, cs := range want.chains {
		if have.chains[n] != nil {
			continue
		}
		ok := true
		for _, u := range cs.uses {
			ok = ok && (have.sets[u] == nil || !have.sets[u].bad)
		}
		if ok {
			chains = append(chains, n)
		}
	}
	// A chain going to one neither there nor made here waits for plan.
	made := make(map[string]bool, len(chains))
	for _, n := range chains {
		made[n] = true
	}
	for again := true; again; {
		again = false
		for n := range made {
			for _, j := range want.chains[n].jumps {
				if have.chains[j] == nil && !made[j] {
					delete(made, n)
					again = true
				}
			}
		}
	}
	chains = slices.DeleteFunc(chains, func(n string) bool { return !made[n] })
	if len(sets)+len(chains) == 0 {
		return nil
	}
	slices.Sort(sets)
	slices.Sort(chains)
	mid := *have
	mid.table = true
	mid.sets, mid.chains = maps.Clone(have.sets), maps.Clone(have.chains)
	if !have.table {
		b.c.AddTable(table)
		b.msg(0)
	}
	for _, n := range sets {
		ws := want.sets[n]
		b.addSet(setDef(n, ws.kind))
		b.setElems(n, ws.kind, ws.els, true)
		mid.sets[n] = ws
		b.made = append(b.made, n)
	}
	b.addChains(chains)
	for _, n := range chains {
		mid.chains[n] = want.chains[n]
		b.made = append(b.made, n)
	}
	return &mid
}

// plan queues the messages that turn have into want, in an order the
// kernel accepts inside one transaction: sets and chains made (those
// prepare did not), sets of another type made again, members added and
// removed, chains whose rules differ rewritten, map elements switched,
// then the chains no map element jumps to and the sets no chain uses
// deleted.
func (b *batch) plan(have, want *state) {
	if !have.table {
		b.c.AddTable(table)
		b.msg(0)
	}
	haveMaps := b.planBase(have)

	var badSets, gone []string
	bad := map[string]bool{}
	for n, hs := range have.sets {
		if want.sets[n] == nil {
			gone = append(gone, n)
		} else if hs.bad {
			badSets = append(badSets, n)
			bad[n] = true
		}
	}
	var newChains, rewrite, goneChains []string
	for n, wc := range want.chains {
		hc := have.chains[n]
		switch {
		case hc == nil:
			newChains = append(newChains, n)
		case hc.sig != wc.sig || slices.ContainsFunc(hc.uses, func(u string) bool { return bad[u] }):
			rewrite = append(rewrite, n)
		}
	}
	for n := range have.chains {
		if want.chains[n] == nil {
			goneChains = append(goneChains, n)
		}
	}
	for _, l := range [][]string{badSets, gone, newChains, rewrite, goneChains} {
		slices.Sort(l)
	}

	// Rules that go: of chains that go or are rewritten (so that the
	// sets made again are free).
	for _, n := range slices.Concat(rewrite, goneChains) {
		b.c.FlushChain(chainDef(n))
		b.msg(0)
	}
	for _, n := range badSets {
		b.log.Warn("policy set has another type or foreign elements; replacing it", "set", n)
		b.delSet(n)
	}
	for n, ws := range want.sets {
		if have.sets[n] == nil || bad[n] {
			b.addSet(setDef(n, ws.kind))
		}
	}
	// Members: removals first (an interval may overlap its old self).
	var names []string
	for n, ws := range want.sets {
		if have.sets[n] != ws {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		ws, hs := want.sets[n], have.sets[n]
		if hs == nil || hs.bad || hs == ws {
			continue
		}
		b.setElems(n, ws.kind, minus(hs.els, ws.els), false)
	}
	for _, n := range names {
		ws, hs := want.sets[n], have.sets[n]
		if hs == ws {
			continue
		}
		if hs == nil || hs.bad {
			b.setElems(n, ws.kind, ws.els, true)
		} else {
			b.setElems(n, ws.kind, minus(ws.els, hs.els), true)
		}
	}
	b.addChains(newChains)
	for _, n := range rewrite {
		b.profileRules(chainDef(n))
	}

	// Map elements that go or change, then those that come or change.
	var adds [numMaps][]netip.Addr
	for i := range numMaps {
		if want.was[i] != nil && want.baseID == have.mapsID && !have.mapBad[i] {
			// Built from have by the pods that changed: only their
			// keys may differ, and have's maps are want's now (see
			// mapsOf): their previous values are in was.
			var del []netip.Addr
			for a, v := range want.was[i] {
				now, ok := want.maps[i][a]
				if v.ok && (!ok || now != v.val) {
					del = append(del, a)
				}
				if ok && (!v.ok || now != v.val) {
					adds[i] = append(adds[i], a)
				}
			}
			slices.SortFunc(del, netip.Addr.Compare)
			slices.SortFunc(adds[i], netip.Addr.Compare)
			b.delMapElems(i, del)
			continue
		}
		b.delMapElems(i, changedAddrs(haveMaps[i], want.maps[i]))
		adds[i] = changedAddrs(want.maps[i], haveMaps[i])
	}
	for i, l := range adds {
		var add []nftables.SetElement
		for _, a := range l {
			add = append(add, nftables.SetElement{Key: a.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: want.maps[i][a]}})
		}
		b.elems(verdictMap(i), add, true)
		b.st.ElementsAdded += len(add)
	}

	for _, n := range goneChains {
		b.c.DelChain(chainDef(n))
		b.msg(0)
		b.st.ChainsRemoved++
	}
	for _, n := range gone {
		b.delSet(n)
	}
}

func (b *batch) delMapElems(i int, l []netip.Addr) {
	var del []nftables.SetElement
	for _, a := range l {
		del = append(del, nftables.SetElement{Key: a.AsSlice()})
	}
	b.elems(verdictMap(i), del, false)
	b.st.ElementsRemoved += len(del)
}

// minus returns the elements of a not in b.
func minus(a, b map[elemKey]struct{}) map[elemKey]struct{} {
	var out map[elemKey]struct{}
	for e := range a {
		if _, ok := b[e]; !ok {
			if out == nil {
				out = map[elemKey]struct{}{}
			}
			out[e] = struct{}{}
		}
	}
	return out
}

// planBase queues the forward chain and the maps its rules look up. A map
// or chain that is not what we make is made again, in this same batch:
// the forward chain's rules are rewritten to let go of the old map. It
// returns the maps' elements as they are once those messages ran.
func (b *batch) planBase(have *state) [numMaps]map[netip.Addr]string {
	base := baseChainDef()
	rebase := !have.base || !have.baseOK || have.baseBad
	for i := range numMaps {
		rebase = rebase || have.mapBad[i]
	}
	if have.base && rebase {
		b.c.FlushChain(base)
		b.msg(0)
	}
	if have.baseBad {
		b.log.Warn("policy forward chain has another type, hook, priority or policy; replacing it", "table", TableName)
		b.c.DelChain(base)
		b.msg(0)
	}
	var haveMaps [numMaps]map[netip.Addr]string
	for i := range numMaps {
		if have.mapBad[i] {
			b.log.Warn("policy map has another type or foreign elements; replacing it", "map", mapNames[i])
			b.delSet(mapNames[i])
		} else {
			haveMaps[i] = have.maps[i]
		}
		if haveMaps[i] == nil {
			b.addSet(verdictMap(i))
		}
	}
	if !have.base || have.baseBad {
		b.c.AddChain(base)
		b.msg(0)
		if !have.base {
			b.st.ChainsAdded++
		}
	}
	if rebase {
		b.rules(base, baseRules())
	}
	return haveMaps
}

// changedAddrs returns, sorted, the addresses of from that other maps to
// another chain or not at all.
func changedAddrs(from, other map[netip.Addr]string) []netip.Addr {
	var out []netip.Addr
	for a, ch := range from {
		if other[a] != ch {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
