package policykernel

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
	// setIDs are the batch IDs of the shared sets created in this batch.
	setIDs [numSets]uint32
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

func (b *batch) rules(chain *nftables.Chain, rules [][]expr.Any) {
	for _, r := range rules {
		b.c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r})
		b.msg(64 * len(r))
		b.st.RulesAdded++
	}
}

// plan queues the messages that turn have into want, in an order the
// kernel accepts inside one transaction: containers before what they
// hold, a pod's elements and chain (with rules) before the map elements
// jumping to it, map elements removed before the chains they jump to,
// rules rewritten before the sets they let go of are removed.
func (b *batch) plan(have, want *state) {
	if !have.table {
		b.c.AddTable(table)
		b.msg(0)
	}
	haveMaps := b.planBase(have)

	// Map elements that go or change.
	for i := range numMaps {
		var del []nftables.SetElement
		for _, a := range changedAddrs(haveMaps[i], want.maps[i]) {
			del = append(del, nftables.SetElement{Key: a.AsSlice()})
		}
		b.elems(verdictMap(i), del, false)
		b.st.ElementsRemoved += len(del)
	}

	// A shared set that is not what we make is made again: every pod
	// chain lets go of it first (their rules are rewritten).
	remake := false
	for idx := range numSets {
		remake = remake || have.setBad[idx]
	}

	// Chains that go, and chains that come or change (a chain state
	// desired shares with the applied one is unchanged).
	var gone, todo []string
	for n := range have.chains {
		if want.chains[n] == nil {
			gone = append(gone, n)
		}
	}
	for n, cs := range want.chains {
		if remake || have.chains[n] != cs {
			todo = append(todo, n)
		}
	}
	slices.Sort(gone)
	slices.Sort(todo)
	empty := &chainState{}
	haveChain := func(n string) *chainState {
		if cs := have.chains[n]; cs != nil {
			return cs
		}
		return empty
	}
	rewrite := func(n string) bool {
		h := haveChain(n)
		return remake || !h.exists || !h.rulesOK
	}
	// Rules that go: of chains that go or are rewritten.
	for _, n := range gone {
		if have.chains[n].exists {
			b.c.FlushChain(podChainDef(n))
			b.msg(0)
		}
	}
	for _, n := range todo {
		if haveChain(n).exists && rewrite(n) {
			b.c.FlushChain(podChainDef(n))
			b.msg(0)
		}
	}

	// Elements: of chains that go, of chains that change, orphans.
	var del, add [numSets]map[elem]struct{}
	put := func(m *map[elem]struct{}, e elem) {
		if *m == nil {
			*m = map[elem]struct{}{}
		}
		(*m)[e] = struct{}{}
	}
	for _, n := range gone {
		for k, els := range have.chains[n].sets {
			for e := range els {
				put(&del[setIndex(chainIn(n), k)], e)
			}
		}
	}
	for _, n := range todo {
		h, w := haveChain(n), want.chains[n]
		for k := range numKinds {
			idx := setIndex(chainIn(n), k)
			for e := range h.sets[k] {
				if _, ok := w.sets[k][e]; !ok {
					put(&del[idx], e)
				}
			}
			for e := range w.sets[k] {
				if _, ok := h.sets[k][e]; !ok {
					put(&add[idx], e)
				}
			}
		}
	}
	for idx := range numSets {
		for e := range have.orphans[idx] {
			put(&del[idx], e)
		}
	}
	// A set whose pods all go is deleted and made again rather than
	// emptied element by element (an interval set's cost per removed
	// element grows with the set): no rule uses it once the chains that
	// go are flushed.
	var survivors [2]bool // by direction: in, eg
	for n, cs := range have.chains {
		if cs.exists && isPodChain(n) && want.chains[n] != nil {
			survivors[setIndex(chainIn(n), 0)/numKinds] = true
		}
	}
	for idx := range numSets {
		fresh := have.sets[idx] && !have.setBad[idx] && len(del[idx]) > 0 && !survivors[idx/numKinds]
		if have.setBad[idx] {
			b.log.Warn("policy set has another type or foreign elements; replacing it", "set", setNames[idx])
		}
		if have.setBad[idx] || fresh {
			b.delSet(setNames[idx])
		}
		if !have.sets[idx] || have.setBad[idx] || fresh {
			b.setIDs[idx] = b.addSet(sharedSet(idx))
		}
		if fresh {
			b.st.ElementsRemoved += len(del[idx])
			del[idx] = nil
		}
		// In a set kept, an element both removed and added (an orphan
		// a pod claims again) stays.
		for e := range del[idx] {
			if _, ok := add[idx][e]; ok {
				delete(del[idx], e)
				delete(add[idx], e)
			}
		}
	}

	// Deletions first: a changed range may overlap its old self.
	for idx := range numSets {
		b.elems(sharedSet(idx), encodeAll(idx, del[idx]), false)
		b.st.ElementsRemoved += len(del[idx])
	}
	for idx := range numSets {
		b.elems(sharedSet(idx), encodeAll(idx, add[idx]), true)
		b.st.ElementsAdded += len(add[idx])
	}

	for _, n := range todo {
		ch := podChainDef(n)
		if !haveChain(n).exists {
			b.c.AddChain(ch)
			b.msg(0)
			b.st.ChainsAdded++
		}
		if rewrite(n) {
			var ids [numKinds]uint32
			copy(ids[:], b.setIDs[setIndex(chainIn(n), 0):])
			b.rules(ch, podRules(n, ids, b.logGroup))
		}
	}
	for _, n := range gone {
		if have.chains[n].exists {
			b.c.DelChain(podChainDef(n))
			b.msg(0)
			b.st.ChainsRemoved++
		}
	}
	// Other sets (the old layout's per-pod sets) once no rule uses them.
	for _, n := range have.stray {
		b.delSet(n)
	}

	// Map elements that come or change.
	for i := range numMaps {
		var add []nftables.SetElement
		for _, a := range changedAddrs(want.maps[i], haveMaps[i]) {
			add = append(add, nftables.SetElement{Key: a.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: want.maps[i][a]}})
		}
		b.elems(verdictMap(i), add, true)
		b.st.ElementsAdded += len(add)
	}
}

// prefill returns the state after a batch that creates the shared sets
// have lacks and fills them with the elements of want's pod chains that
// exist in have (a table of the previous layout), or nil when have has
// all the shared sets or no such chain.
func prefill(have, want *state) *state {
	missing := false
	for idx := range numSets {
		missing = missing || !have.sets[idx]
	}
	if !have.table || !missing {
		return nil
	}
	mid := *have
	mid.chains = maps.Clone(have.chains)
	found := false
	for n, w := range want.chains {
		h := have.chains[n]
		if h == nil || !h.exists {
			continue
		}
		found = true
		c := *h
		for k := range numKinds {
			if !have.sets[setIndex(chainIn(n), k)] {
				c.sets[k] = w.sets[k] // shared, read only
			}
		}
		mid.chains[n] = &c
	}
	if !found {
		return nil
	}
	for idx := range numSets {
		mid.sets[idx] = true
	}
	return &mid
}

// prefill queues the batch that turns have into mid (see prefill).
func (b *batch) prefill(have, mid *state) {
	for idx := range numSets {
		if have.sets[idx] {
			continue
		}
		b.addSet(sharedSet(idx))
		k := idx % numKinds
		els := map[elem]struct{}{}
		for n, cs := range mid.chains {
			if isPodChain(n) && chainIn(n) == setIn(idx) {
				for e := range cs.sets[k] {
					els[e] = struct{}{}
				}
			}
		}
		b.elems(sharedSet(idx), encodeAll(idx, els), true)
		b.st.ElementsAdded += len(els)
	}
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

// encodeAll encodes the elements of shared set idx in a stable order.
func encodeAll(idx int, m map[elem]struct{}) []nftables.SetElement {
	if len(m) == 0 {
		return nil
	}
	l := slices.SortedFunc(maps.Keys(m), func(a, b elem) int {
		if c := a.Pod.Compare(b.Pod); c != 0 {
			return c
		}
		if c := a.Addrs.From.Compare(b.Addrs.From); c != 0 {
			return c
		}
		if c := a.Addrs.To.Compare(b.Addrs.To); c != 0 {
			return c
		}
		if a.Proto != b.Proto {
			return int(a.Proto) - int(b.Proto)
		}
		if a.Ports.From != b.Ports.From {
			return int(a.Ports.From) - int(b.Ports.From)
		}
		return int(a.Ports.To) - int(b.Ports.To)
	})
	out := make([]nftables.SetElement, len(l))
	for i, e := range l {
		out[i] = e.encode(idx % numKinds)
	}
	return out
}
