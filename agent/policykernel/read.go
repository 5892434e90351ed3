package policykernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// readRetries bounds how often read starts over because another batch
// committed in the namespace while it listed (netlink dumps of several
// messages can then skip objects, and google/nftables does not report it).
const readRetries = 10

func notFound(err error) bool {
	// google/nftables flattens netlink errors with %v.
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error()))
}

// read lists the table as the kernel holds it. The listing is consistent:
// it is repeated until the ruleset generation is the same before and after.
func (w *Writer) read() (*state, error) {
	for try := 0; ; try++ {
		g0, err := w.generation()
		if err != nil {
			return nil, err
		}
		s, err := w.readOnce()
		if err != nil {
			return nil, err
		}
		g1, err := w.generation()
		if err != nil {
			return nil, err
		}
		if g0 == g1 {
			return s, nil
		}
		if try >= readRetries {
			return nil, fmt.Errorf("nftables: table %s changed during each of %d listings", TableName, try+1)
		}
	}
}

// generation returns the namespace's nftables ruleset generation, which
// every committed batch (of any table) increments.
func (w *Writer) generation() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.ns})
	if err != nil {
		return 0, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nftables: get generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nftables: no generation in reply")
}

func (w *Writer) conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(w.ns), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	return c, nil
}

func (w *Writer) readOnce() (*state, error) {
	c, err := w.conn()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	s := newState()
	if t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); notFound(err) || (err == nil && t == nil) {
		return s, nil
	} else if err != nil {
		return nil, fmt.Errorf("nftables: list table %s: %w", TableName, err)
	}
	s.table = true

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var podChains []string
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == TableName && isPodChain(ch.Name) {
			podChains = append(podChains, ch.Name)
		}
	}
	dump, err := w.dumpRules(podChains)
	if err != nil {
		return nil, err
	}
	// Pod chains whose rules have the same shape are all right or all
	// wrong: one of each shape is read and compared in full.
	verified := map[string]bool{}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		if ch.Name == baseChain {
			rules, err := c.GetRules(table, ch)
			if err != nil && !notFound(err) {
				return nil, fmt.Errorf("nftables: list rules of %s: %w", ch.Name, err)
			}
			s.base = true
			s.baseOK = rulesMatch(rules, baseRules())
			s.baseBad = !baseChainOK(ch)
			continue
		}
		cs := s.chain(ch.Name)
		cs.exists = true
		if !isPodChain(ch.Name) {
			continue
		}
		sh, ok := shape(ch.Name, dump[ch.Name])
		if !ok {
			continue
		}
		good, seen := verified[sh]
		if !seen {
			rules, err := c.GetRules(table, ch)
			if err != nil && !notFound(err) {
				return nil, fmt.Errorf("nftables: list rules of %s: %w", ch.Name, err)
			}
			good = rulesMatch(rules, podRules(ch.Name, [numKinds]uint32{}, w.logGroup))
			verified[sh] = good
		}
		cs.rulesOK = good
	}

	sets, err := c.GetSets(table)
	if err != nil && !notFound(err) {
		return nil, fmt.Errorf("nftables: list sets: %w", err)
	}
	// Maps first: they attribute the shared sets' elements to chains.
	var shared []*nftables.Set
	for _, set := range sets {
		switch {
		case mapIdx(set.Name) >= 0:
			if err := s.readMap(c, mapIdx(set.Name), set); err != nil {
				return nil, err
			}
		case setIdx(set.Name) >= 0:
			shared = append(shared, set)
		default:
			s.stray = append(s.stray, set.Name)
		}
	}
	for _, set := range shared {
		if err := w.readShared(c, s, set); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// readShared reads shared set set and gives each element to the chain
// its pod address jumps to in the map of the set's direction and family;
// the others are orphans.
func (w *Writer) readShared(c *nftables.Conn, s *state, set *nftables.Set) error {
	idx := setIdx(set.Name)
	s.sets[idx] = true
	if !setTypeOK(set, sharedSet(idx)) {
		s.setBad[idx] = true
		return nil
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("nftables: list set %s: %w", set.Name, err)
	}
	in, k := setIn(idx), idx%numKinds
	decoded := make([]elem, 0, len(els))
	for _, el := range els {
		e, err := decodeElem(k, el)
		if err != nil {
			w.log.Warn("policy set has elements this writer does not make; it will be replaced", "set", set.Name, "err", err)
			s.setBad[idx] = true
			return nil
		}
		decoded = append(decoded, e)
	}
	for _, e := range decoded {
		name := s.maps[mapIndex(in, e.Pod)][e.Pod]
		cs := s.chains[name]
		if name == "" || cs == nil || !isPodChain(name) || chainIn(name) != in {
			if s.orphans[idx] == nil {
				s.orphans[idx] = map[elem]struct{}{}
			}
			s.orphans[idx][e] = struct{}{}
			continue
		}
		if cs.sets[k] == nil {
			cs.sets[k] = map[elem]struct{}{}
		}
		cs.sets[k][e] = struct{}{}
	}
	return nil
}

func baseChainOK(ch *nftables.Chain) bool {
	want := baseChainDef()
	return ch.Type == want.Type && ch.Hooknum != nil && *ch.Hooknum == *want.Hooknum &&
		ch.Priority != nil && *ch.Priority == *want.Priority &&
		ch.Policy != nil && *ch.Policy == *want.Policy
}

func mapIdx(name string) int {
	for i, n := range mapNames {
		if n == name {
			return i
		}
	}
	return -1
}

func (s *state) chain(name string) *chainState {
	cs := s.chains[name]
	if cs == nil {
		cs = &chainState{}
		s.chains[name] = cs
	}
	return cs
}

func (s *state) readMap(c *nftables.Conn, i int, set *nftables.Set) error {
	s.maps[i] = map[netip.Addr]string{}
	if !setTypeOK(set, verdictMap(i)) {
		s.mapBad[i] = true
		return nil
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("nftables: list map %s: %w", set.Name, err)
	}
	for _, el := range els {
		a, ok := netip.AddrFromSlice(el.Key)
		chain, err := verdictChain(el.Val)
		if !ok || err != nil {
			s.mapBad[i] = true
			continue
		}
		// An element that jumps nowhere we know is recorded with
		// chain "": it differs from every desired element and goes.
		s.maps[i][a] = chain
	}
	return nil
}
